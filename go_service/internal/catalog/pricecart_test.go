package catalog_test

import (
	"fmt"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"

	catalogv1 "github.com/polyglot-shop/shop/go_service/gen/shop/catalog/v1"
	"github.com/polyglot-shop/shop/go_service/internal/catalog"
)

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
