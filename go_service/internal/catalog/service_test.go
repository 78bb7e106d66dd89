package catalog_test

import (
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/type/money"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"

	catalogv1 "github.com/polyglot-shop/shop/go_service/gen/shop/catalog/v1"
	"github.com/polyglot-shop/shop/go_service/internal/catalog"
)

func TestGetProductReturnsTheSeededProduct(t *testing.T) {
	c := newCatalog(t)
	seed := loadSeed(t)
	want := seed.Products[0]

	resp, err := c.client.GetProduct(callCtx(t), &catalogv1.GetProductRequest{ProductId: want.ID})
	if err != nil {
		t.Fatalf("GetProduct: %v", err)
	}
	p := resp.GetProduct()
	if p.GetId() != want.ID || p.GetName() != want.Name || p.GetDescription() != want.Description {
		t.Errorf("product = %v, want %+v", p, want)
	}
	if !slices.Equal(p.GetTags(), want.Tags) {
		t.Errorf("tags = %q, want %q", p.GetTags(), want.Tags)
	}
	wantPrice := &money.Money{CurrencyCode: "EUR", Units: want.Price.Units, Nanos: want.Price.Nanos}
	if !moneyEqual(p.GetPrice(), wantPrice) {
		t.Errorf("price = %v, want %v", p.GetPrice(), wantPrice)
	}
	if ct := p.GetCreateTime(); !ct.IsValid() || ct.AsTime().IsZero() {
		t.Errorf("create_time = %v, want a time", ct)
	}
}

func TestGetProductWithoutIDIsInvalidArgument(t *testing.T) {
	c := newCatalog(t)
	_, err := c.client.GetProduct(callCtx(t), &catalogv1.GetProductRequest{})
	st := wantStatus(t, err, codes.InvalidArgument)
	wantFields(t, st, "product_id")
}

func TestGetProductUnknownIDIsNotFound(t *testing.T) {
	c := newCatalog(t)
	_, err := c.client.GetProduct(callCtx(t), &catalogv1.GetProductRequest{ProductId: "sku-nothing"})
	st := wantStatus(t, err, codes.NotFound)
	info := wantReason(t, st, catalog.ReasonProductNotFound)
	if got := info.GetMetadata()[catalog.MetadataProductIDs]; got != "sku-nothing" {
		t.Errorf("metadata product_ids = %q, want %q", got, "sku-nothing")
	}
	if !strings.Contains(st.Message(), `"sku-nothing"`) {
		t.Errorf("message %q does not name the id", st.Message())
	}
}

func TestBatchGetProductsReturnsProductsInRequestOrder(t *testing.T) {
	c := newCatalog(t)
	seed := loadSeed(t)
	ids := []string{seed.Products[5].ID, seed.Products[0].ID, seed.Products[5].ID, seed.Products[54].ID}

	resp, err := c.client.BatchGetProducts(callCtx(t), &catalogv1.BatchGetProductsRequest{ProductIds: ids})
	if err != nil {
		t.Fatalf("BatchGetProducts: %v", err)
	}
	var got []string
	for _, p := range resp.GetProducts() {
		got = append(got, p.GetId())
	}
	if !slices.Equal(got, ids) {
		t.Errorf("ids = %q, want %q", got, ids)
	}
}

func TestBatchGetProductsNamesEveryMissingID(t *testing.T) {
	c := newCatalog(t)
	seed := loadSeed(t)
	ids := []string{seed.Products[0].ID, "sku-missing-1", seed.Products[1].ID, "sku-missing-2", "sku-missing-1"}

	_, err := c.client.BatchGetProducts(callCtx(t), &catalogv1.BatchGetProductsRequest{ProductIds: ids})
	st := wantStatus(t, err, codes.NotFound)
	info := wantReason(t, st, catalog.ReasonProductNotFound)
	if got, want := info.GetMetadata()[catalog.MetadataProductIDs], "sku-missing-1,sku-missing-2"; got != want {
		t.Errorf("metadata product_ids = %q, want %q", got, want)
	}
	for _, id := range []string{"sku-missing-1", "sku-missing-2"} {
		if !strings.Contains(st.Message(), id) {
			t.Errorf("message %q does not name %s", st.Message(), id)
		}
	}
}

func TestBatchGetProductsBadInputNamesTheField(t *testing.T) {
	c := newCatalog(t)
	tooMany := make([]string, catalog.MaxBatchSize+1)
	for i := range tooMany {
		tooMany[i] = fmt.Sprintf("sku-%d", i)
	}
	for _, tc := range []struct {
		name string
		ids  []string
		want []string
	}{
		{"no ids", nil, []string{"product_ids"}},
		{"empty ids", []string{"sku-a", "", "sku-b", ""}, []string{"product_ids[1]", "product_ids[3]"}},
		{"too many ids", tooMany, []string{"product_ids"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.client.BatchGetProducts(callCtx(t), &catalogv1.BatchGetProductsRequest{ProductIds: tc.ids})
			wantFields(t, wantStatus(t, err, codes.InvalidArgument), tc.want...)
		})
	}
}

// listAll pages through ListProducts and returns every id in order, failing
// on a duplicate.
func listAll(t *testing.T, client catalogv1.CatalogServiceClient, tag string, pageSize int32) []string {
	t.Helper()
	var ids []string
	seen := map[string]bool{}
	token := ""
	for page := 0; ; page++ {
		if page > 1000 {
			t.Fatal("ListProducts did not end after 1000 pages")
		}
		resp, err := client.ListProducts(callCtx(t), &catalogv1.ListProductsRequest{PageSize: pageSize, PageToken: token, Tag: tag})
		if err != nil {
			t.Fatalf("ListProducts page %d: %v", page, err)
		}
		limit := int(pageSize)
		if limit == 0 {
			limit = catalog.DefaultPageSize
		}
		if n := len(resp.GetProducts()); n > limit || (n == 0 && resp.GetNextPageToken() != "") {
			t.Fatalf("page %d has %d products for page_size %d (token %q)", page, n, pageSize, resp.GetNextPageToken())
		}
		for _, p := range resp.GetProducts() {
			if seen[p.GetId()] {
				t.Fatalf("product %s listed twice", p.GetId())
			}
			seen[p.GetId()] = true
			ids = append(ids, p.GetId())
			if tag != "" && !slices.Contains(p.GetTags(), tag) {
				t.Errorf("product %s listed for tag %q has tags %q", p.GetId(), tag, p.GetTags())
			}
		}
		if token = resp.GetNextPageToken(); token == "" {
			return ids
		}
	}
}

func TestListProductsPagesThroughTheWholeCatalog(t *testing.T) {
	c := newCatalog(t)
	var want []string
	for _, p := range loadSeed(t).Products {
		want = append(want, p.ID)
	}
	sort.Strings(want)
	if len(want) < 50 {
		t.Fatalf("the seed has %d products; the catalog should have at least 50", len(want))
	}
	for _, size := range []int32{0, 1, 7, int32(len(want)), 100} {
		t.Run(fmt.Sprintf("page_size=%d", size), func(t *testing.T) {
			if got := listAll(t, c.client, "", size); !slices.Equal(got, want) {
				t.Errorf("listed %d ids %q, want the %d seeded ids %q", len(got), got, len(want), want)
			}
		})
	}
}

func TestListProductsFiltersByTag(t *testing.T) {
	c := newCatalog(t)
	byTag := map[string][]string{}
	for _, p := range loadSeed(t).Products {
		for _, tag := range p.Tags {
			byTag[tag] = append(byTag[tag], p.ID)
		}
	}
	if len(byTag) < 3 {
		t.Fatalf("the seed has %d tags; want several", len(byTag))
	}
	for tag, want := range byTag {
		sort.Strings(want)
		if got := listAll(t, c.client, tag, 5); !slices.Equal(got, want) {
			t.Errorf("tag %s: listed %q, want %q", tag, got, want)
		}
	}
	if got := listAll(t, c.client, "no-such-tag", 5); len(got) != 0 {
		t.Errorf("an unknown tag listed %q, want nothing", got)
	}
}

func TestListProductsDefaultsToTwentyPerPage(t *testing.T) {
	c := newCatalog(t)
	resp, err := c.client.ListProducts(callCtx(t), &catalogv1.ListProductsRequest{})
	if err != nil {
		t.Fatalf("ListProducts: %v", err)
	}
	if n := len(resp.GetProducts()); n != catalog.DefaultPageSize || resp.GetNextPageToken() == "" {
		t.Errorf("got %d products and token %q, want %d and a token", n, resp.GetNextPageToken(), catalog.DefaultPageSize)
	}
}

func TestListProductsRejectsBadPageSize(t *testing.T) {
	c := newCatalog(t)
	for _, size := range []int32{-1, catalog.MaxPageSize + 1, 1 << 30} {
		_, err := c.client.ListProducts(callCtx(t), &catalogv1.ListProductsRequest{PageSize: size})
		wantFields(t, wantStatus(t, err, codes.InvalidArgument), "page_size")
	}
}

func TestListProductsRejectsTamperedAndForeignTokens(t *testing.T) {
	c := newCatalog(t)
	other := newCatalog(t) // another database, another key
	first := func(client catalogv1.CatalogServiceClient, tag string) string {
		resp, err := client.ListProducts(callCtx(t), &catalogv1.ListProductsRequest{PageSize: 2, Tag: tag})
		if err != nil || resp.GetNextPageToken() == "" {
			t.Fatalf("ListProducts tag %q: token %q, %v", tag, resp.GetNextPageToken(), err)
		}
		return resp.GetNextPageToken()
	}
	teaToken := first(c.client, "tea")
	altered := []byte(teaToken) // still valid base64, one character changed
	if mid := len(altered) / 2; altered[mid] == 'A' {
		altered[mid] = 'B'
	} else {
		altered[mid] = 'A'
	}

	for _, tc := range []struct {
		name, token, tag string
	}{
		{"altered", string(altered), "tea"},
		{"truncated", teaToken[:len(teaToken)-3], "tea"},
		{"not base64", "not a token!", "tea"},
		{"another tag", teaToken, "coffee"},
		{"no tag", teaToken, ""},
		{"another catalog", first(other.client, "tea"), "tea"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.client.ListProducts(callCtx(t), &catalogv1.ListProductsRequest{PageSize: 2, PageToken: tc.token, Tag: tc.tag})
			st := wantStatus(t, err, codes.InvalidArgument)
			wantReason(t, st, catalog.ReasonInvalidPageToken)
			wantFields(t, st, "page_token")
		})
	}
}

func TestListProductsTokensAndDataSurviveARestart(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "catalog.db")
	c := startCatalog(t, dbPath)
	resp, err := c.client.ListProducts(callCtx(t), &catalogv1.ListProductsRequest{PageSize: 10})
	if err != nil {
		t.Fatalf("ListProducts: %v", err)
	}
	token := resp.GetNextPageToken()
	wantNext, err := c.client.ListProducts(callCtx(t), &catalogv1.ListProductsRequest{PageSize: 10, PageToken: token})
	if err != nil {
		t.Fatalf("ListProducts page 2: %v", err)
	}
	c.stop()

	restarted := startCatalog(t, dbPath)
	gotNext, err := restarted.client.ListProducts(callCtx(t), &catalogv1.ListProductsRequest{PageSize: 10, PageToken: token})
	if err != nil {
		t.Fatalf("ListProducts page 2 after a restart: %v", err)
	}
	if len(gotNext.GetProducts()) != len(wantNext.GetProducts()) {
		t.Fatalf("after a restart page 2 has %d products, want %d", len(gotNext.GetProducts()), len(wantNext.GetProducts()))
	}
	for i := range gotNext.GetProducts() {
		got, want := gotNext.GetProducts()[i], wantNext.GetProducts()[i]
		if got.GetId() != want.GetId() || !got.GetCreateTime().AsTime().Equal(want.GetCreateTime().AsTime()) {
			t.Errorf("after a restart product %d = %s created %v, want %s created %v", i,
				got.GetId(), got.GetCreateTime().AsTime(), want.GetId(), want.GetCreateTime().AsTime())
		}
	}
}

func TestHealthAndReflectionAreServed(t *testing.T) {
	c := newCatalog(t)
	health := healthpb.NewHealthClient(c.conn)
	for _, service := range []string{"", catalogv1.CatalogService_ServiceDesc.ServiceName} {
		resp, err := health.Check(callCtx(t), &healthpb.HealthCheckRequest{Service: service})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health of %q = %v, %v; want SERVING", service, resp.GetStatus(), err)
		}
	}

	want := []string{"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection", "shop.catalog.v1.CatalogService"}

	v1, err := reflectionv1.NewServerReflectionClient(c.conn).ServerReflectionInfo(callCtx(t))
	if err != nil {
		t.Fatalf("reflection v1: %v", err)
	}
	if err := v1.Send(&reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatalf("reflection v1 Send: %v", err)
	}
	resp, err := v1.Recv()
	if err != nil {
		t.Fatalf("reflection v1 Recv: %v", err)
	}
	var got []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		got = append(got, s.GetName())
	}
	sort.Strings(got)
	if !slices.Equal(got, want) {
		t.Errorf("reflection v1 lists %q, want %q", got, want)
	}

	v1alpha, err := reflectionv1alpha.NewServerReflectionClient(c.conn).ServerReflectionInfo(callCtx(t))
	if err != nil {
		t.Fatalf("reflection v1alpha: %v", err)
	}
	if err := v1alpha.Send(&reflectionv1alpha.ServerReflectionRequest{
		MessageRequest: &reflectionv1alpha.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "shop.catalog.v1.CatalogService"},
	}); err != nil {
		t.Fatalf("reflection v1alpha Send: %v", err)
	}
	alphaResp, err := v1alpha.Recv()
	if err != nil {
		t.Fatalf("reflection v1alpha Recv: %v", err)
	}
	if len(alphaResp.GetFileDescriptorResponse().GetFileDescriptorProto()) == 0 {
		t.Errorf("reflection v1alpha returned no file for CatalogService: %v", alphaResp)
	}
}
