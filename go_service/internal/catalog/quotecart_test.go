// QuoteCart: a bidirectional stream that answers every change to a cart with
// the whole cart priced again (catalog_service.proto), and ends with the
// documented status on bad input, an unknown product or a passed deadline.
package catalog_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/type/money"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/polyglot-shop/shop/go_service/gen/shop/catalog/v1"
	"github.com/polyglot-shop/shop/go_service/internal/catalog"
)

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
