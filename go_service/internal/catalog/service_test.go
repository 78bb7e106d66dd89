package catalog_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/type/money"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/polyglot-shop/shop/go_service/gen/shop/catalog/v1"
	"github.com/polyglot-shop/shop/go_service/internal/catalog"
)

func newCatalog(t *testing.T) *catalogServer {
	t.Helper()
	return startCatalog(t, filepath.Join(t.TempDir(), "catalog.db"))
}

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

func moneyEqual(a, b *money.Money) bool {
	return a.GetCurrencyCode() == b.GetCurrencyCode() && a.GetUnits() == b.GetUnits() && a.GetNanos() == b.GetNanos()
}

func eur(units int64, nanos int32) *money.Money {
	return &money.Money{CurrencyCode: "EUR", Units: units, Nanos: nanos}
}

func TestQuoteCartPricesTheWholeCartAfterEveryChange(t *testing.T) {
	c := newCatalog(t)
	stream, err := c.client.QuoteCart(callCtx(t))
	if err != nil {
		t.Fatalf("QuoteCart: %v", err)
	}
	// Espresso beans cost 24.90 EUR and filter beans 14.50 EUR in the seed.
	const espresso, filter = "sku-espresso-beans-1kg", "sku-filter-beans-500g"
	steps := []struct {
		req       *catalogv1.QuoteCartRequest
		lines     []string
		total     *money.Money
		itemCount int32
	}{
		{&catalogv1.QuoteCartRequest{ProductId: espresso, Quantity: 2}, []string{espresso}, eur(49, 800_000_000), 2},
		{&catalogv1.QuoteCartRequest{ProductId: filter, Quantity: 3}, []string{espresso, filter}, eur(93, 300_000_000), 5},
		{&catalogv1.QuoteCartRequest{ProductId: espresso, Quantity: 1}, []string{espresso, filter}, eur(68, 400_000_000), 4},
		{&catalogv1.QuoteCartRequest{ProductId: filter, Remove: true}, []string{espresso}, eur(24, 900_000_000), 1},
		{&catalogv1.QuoteCartRequest{ProductId: "sku-not-in-cart", Remove: true}, []string{espresso}, eur(24, 900_000_000), 1},
		{&catalogv1.QuoteCartRequest{ProductId: espresso, Remove: true}, nil, eur(0, 0), 0},
	}
	for i, step := range steps {
		if err := stream.Send(step.req); err != nil {
			t.Fatalf("step %d Send: %v", i, err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("step %d Recv: %v", i, err)
		}
		var lines []string
		for _, l := range resp.GetLines() {
			lines = append(lines, l.GetProductId())
			want := l.GetUnitPrice().GetUnits()*int64(l.GetQuantity())*1e9 + int64(l.GetUnitPrice().GetNanos())*int64(l.GetQuantity())
			if got := l.GetLineTotal().GetUnits()*1e9 + int64(l.GetLineTotal().GetNanos()); got != want {
				t.Errorf("step %d line %s total %v, want unit_price x quantity", i, l.GetProductId(), l.GetLineTotal())
			}
		}
		if !slices.Equal(lines, step.lines) || !moneyEqual(resp.GetTotal(), step.total) || resp.GetItemCount() != step.itemCount {
			t.Errorf("step %d: lines %q total %v items %d, want lines %q total %v items %d",
				i, lines, resp.GetTotal(), resp.GetItemCount(), step.lines, step.total, step.itemCount)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatalf("CloseSend: %v", err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("Recv after CloseSend = %v, want io.EOF", err)
	}
}

func TestQuoteCartUnknownProductEndsTheStreamWithNotFound(t *testing.T) {
	c := newCatalog(t)
	stream, err := c.client.QuoteCart(callCtx(t))
	if err != nil {
		t.Fatalf("QuoteCart: %v", err)
	}
	if err := stream.Send(&catalogv1.QuoteCartRequest{ProductId: "sku-espresso-beans-1kg", Quantity: 1}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("Recv: %v", err)
	}
	if err := stream.Send(&catalogv1.QuoteCartRequest{ProductId: "sku-unknown", Quantity: 1}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	_, err = stream.Recv()
	info := wantReason(t, wantStatus(t, err, codes.NotFound), catalog.ReasonProductNotFound)
	if got := info.GetMetadata()[catalog.MetadataProductIDs]; got != "sku-unknown" {
		t.Errorf("metadata product_ids = %q, want sku-unknown", got)
	}
	// The stream is over: a further message gets no reply.
	_ = stream.Send(&catalogv1.QuoteCartRequest{ProductId: "sku-espresso-beans-1kg", Quantity: 1})
	if _, err := stream.Recv(); status.Code(err) != codes.NotFound {
		t.Errorf("Recv after the error = %v, want the same NOT_FOUND", err)
	}
}

func TestQuoteCartInvalidInputEndsTheStreamWithInvalidArgument(t *testing.T) {
	c := newCatalog(t)
	const id = "sku-espresso-beans-1kg"
	for _, tc := range []struct {
		name  string
		req   *catalogv1.QuoteCartRequest
		field string
	}{
		{"no product id", &catalogv1.QuoteCartRequest{Quantity: 1}, "product_id"},
		{"zero quantity", &catalogv1.QuoteCartRequest{ProductId: id}, "quantity"},
		{"negative quantity", &catalogv1.QuoteCartRequest{ProductId: id, Quantity: -3}, "quantity"},
		{"quantity over 999", &catalogv1.QuoteCartRequest{ProductId: id, Quantity: catalog.MaxQuantity + 1}, "quantity"},
		{"remove with a quantity", &catalogv1.QuoteCartRequest{ProductId: id, Quantity: 2, Remove: true}, "quantity"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stream, err := c.client.QuoteCart(callCtx(t))
			if err != nil {
				t.Fatalf("QuoteCart: %v", err)
			}
			if err := stream.Send(tc.req); err != nil {
				t.Fatalf("Send: %v", err)
			}
			_, err = stream.Recv()
			wantFields(t, wantStatus(t, err, codes.InvalidArgument), tc.field)
		})
	}
}

func TestPriceCartPricesTheWholeCartInOneCall(t *testing.T) {
	c := newCatalog(t)
	// Espresso beans cost 24.90 EUR and filter beans 14.50 EUR in the seed.
	const espresso, filter = "sku-espresso-beans-1kg", "sku-filter-beans-500g"
	resp, err := c.client.PriceCart(callCtx(t), &catalogv1.PriceCartRequest{Items: []*catalogv1.PriceCartItem{
		{ProductId: filter, Quantity: 3},
		{ProductId: espresso, Quantity: 2},
	}})
	if err != nil {
		t.Fatalf("PriceCart: %v", err)
	}
	var lines []string
	for _, l := range resp.GetLines() {
		lines = append(lines, fmt.Sprintf("%s x%d %v", l.GetProductId(), l.GetQuantity(), l.GetLineTotal()))
	}
	want := []string{
		fmt.Sprintf("%s x2 %v", espresso, eur(49, 800_000_000)),
		fmt.Sprintf("%s x3 %v", filter, eur(43, 500_000_000)),
	}
	if !slices.Equal(lines, want) || !moneyEqual(resp.GetTotal(), eur(93, 300_000_000)) || resp.GetItemCount() != 5 {
		t.Errorf("PriceCart = lines %q total %v items %d, want lines %q total 93.30 EUR items 5",
			lines, resp.GetTotal(), resp.GetItemCount(), want)
	}

	empty, err := c.client.PriceCart(callCtx(t), &catalogv1.PriceCartRequest{})
	if err != nil {
		t.Fatalf("PriceCart of an empty cart: %v", err)
	}
	if len(empty.GetLines()) != 0 || !moneyEqual(empty.GetTotal(), eur(0, 0)) || empty.GetItemCount() != 0 {
		t.Errorf("empty cart = %v, want no lines and 0 EUR", empty)
	}
}

func TestPriceCartNamesEveryUnknownProduct(t *testing.T) {
	c := newCatalog(t)
	_, err := c.client.PriceCart(callCtx(t), &catalogv1.PriceCartRequest{Items: []*catalogv1.PriceCartItem{
		{ProductId: "sku-unknown-b", Quantity: 1},
		{ProductId: "sku-espresso-beans-1kg", Quantity: 1},
		{ProductId: "sku-unknown-a", Quantity: 2},
	}})
	info := wantReason(t, wantStatus(t, err, codes.NotFound), catalog.ReasonProductNotFound)
	if got := info.GetMetadata()[catalog.MetadataProductIDs]; got != "sku-unknown-b,sku-unknown-a" {
		t.Errorf("metadata product_ids = %q, want sku-unknown-b,sku-unknown-a", got)
	}
}

func TestPriceCartBadInputNamesEachField(t *testing.T) {
	c := newCatalog(t)
	const id = "sku-espresso-beans-1kg"
	tooMany := make([]*catalogv1.PriceCartItem, catalog.MaxBatchSize+1)
	for i := range tooMany {
		tooMany[i] = &catalogv1.PriceCartItem{ProductId: fmt.Sprintf("sku-%d", i), Quantity: 1}
	}
	for _, tc := range []struct {
		name   string
		items  []*catalogv1.PriceCartItem
		fields []string
	}{
		{"no product id", []*catalogv1.PriceCartItem{{Quantity: 1}}, []string{"items[0].product_id"}},
		{"zero and oversized quantities", []*catalogv1.PriceCartItem{
			{ProductId: id, Quantity: 0}, {ProductId: "sku-tote-bag", Quantity: catalog.MaxQuantity + 1},
		}, []string{"items[0].quantity", "items[1].quantity"}},
		{"a product twice", []*catalogv1.PriceCartItem{
			{ProductId: id, Quantity: 1}, {ProductId: id, Quantity: 2},
		}, []string{"items[1].product_id"}},
		{"too many lines", tooMany, []string{"items"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.client.PriceCart(callCtx(t), &catalogv1.PriceCartRequest{Items: tc.items})
			wantFields(t, wantStatus(t, err, codes.InvalidArgument), tc.fields...)
		})
	}
}

func TestQuoteCartStreamsConcurrently(t *testing.T) {
	c := newCatalog(t)
	seed := loadSeed(t)
	prices := map[string]int64{} // in nanos
	for _, p := range seed.Products {
		prices[p.ID] = p.Price.Units*1e9 + int64(p.Price.Nanos)
	}

	const streams, changes = 16, 40
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for s := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- quoteRandomCart(callCtx(t), c.client, seed, prices, uint64(s), changes)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// quoteRandomCart makes changes random edits on one stream and checks every
// reply against a cart kept locally.
func quoteRandomCart(ctx context.Context, client catalogv1.CatalogServiceClient, seed *catalog.Seed, prices map[string]int64, n uint64, changes int) error {
	rng := rand.New(rand.NewPCG(n, 42))
	stream, err := client.QuoteCart(ctx)
	if err != nil {
		return fmt.Errorf("stream %d: QuoteCart: %w", n, err)
	}
	cart := map[string]int32{}
	for i := range changes {
		id := seed.Products[rng.IntN(8)].ID // few ids, so lines are updated and removed
		req := &catalogv1.QuoteCartRequest{ProductId: id}
		if _, ok := cart[id]; ok && rng.IntN(3) == 0 {
			req.Remove = true
			delete(cart, id)
		} else {
			req.Quantity = rng.Int32N(catalog.MaxQuantity) + 1
			cart[id] = req.Quantity
		}
		if err := stream.Send(req); err != nil {
			return fmt.Errorf("stream %d change %d: Send: %w", n, i, err)
		}
		resp, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("stream %d change %d: Recv: %w", n, i, err)
		}
		var wantTotal int64
		var wantCount int32
		for id, q := range cart {
			wantTotal += prices[id] * int64(q)
			wantCount += q
		}
		gotTotal := resp.GetTotal().GetUnits()*1e9 + int64(resp.GetTotal().GetNanos())
		if gotTotal != wantTotal || resp.GetItemCount() != wantCount || len(resp.GetLines()) != len(cart) {
			return fmt.Errorf("stream %d change %d: total %d nanos, %d items, %d lines; want %d, %d, %d",
				n, i, gotTotal, resp.GetItemCount(), len(resp.GetLines()), wantTotal, wantCount, len(cart))
		}
	}
	if err := stream.CloseSend(); err != nil {
		return fmt.Errorf("stream %d: CloseSend: %w", n, err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("stream %d: Recv after CloseSend = %v, want io.EOF", n, err)
	}
	return nil
}

func TestQuoteCartEndsWhenTheDeadlinePasses(t *testing.T) {
	c := newCatalog(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	stream, err := c.client.QuoteCart(ctx)
	if err != nil {
		t.Fatalf("QuoteCart: %v", err)
	}
	// Send nothing: the server waits on the stream until the deadline ends it.
	_, err = stream.Recv()
	wantStatus(t, err, codes.DeadlineExceeded)
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
