package inventory_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	inventoryv1 "github.com/polyglot-shop/shop/go_service/gen/shop/inventory/v1"
	"github.com/polyglot-shop/shop/go_service/internal/inventory"
)

func TestGetStockReturnsTheSeededLevelsInTheOrderAsked(t *testing.T) {
	s := startFresh(t, inventory.Options{})
	resp, err := s.client.GetStock(callCtx(t), &inventoryv1.GetStockRequest{Skus: []string{decaf, espresso, decaf}})
	if err != nil {
		t.Fatalf("GetStock: %v", err)
	}
	var got []string
	for _, l := range resp.GetLevels() {
		got = append(got, fmt.Sprintf("%s %d/%d/%d", l.GetSku(), l.GetOnHand(), l.GetReserved(), l.GetAvailable()))
		if l.GetUpdateTime().GetSeconds() <= 0 {
			t.Errorf("%s has no update_time", l.GetSku())
		}
	}
	want := fmt.Sprintf("%s 40/0/40,%s 120/0/120,%s 40/0/40", decaf, espresso, decaf)
	if strings.Join(got, ",") != want {
		t.Fatalf("levels = %q, want %q", got, want)
	}
}

func TestGetStockBadInputNamesTheField(t *testing.T) {
	s := startFresh(t, inventory.Options{})
	many := make([]string, 101)
	for i := range many {
		many[i] = fmt.Sprintf("sku-%d", i)
	}
	for name, tc := range map[string]struct {
		skus   []string
		fields []string
	}{
		"no SKUs":       {nil, []string{"skus"}},
		"101 SKUs":      {many, []string{"skus"}},
		"two empty SKU": {[]string{"a", "", "b", ""}, []string{"skus[1]", "skus[3]"}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := s.client.GetStock(callCtx(t), &inventoryv1.GetStockRequest{Skus: tc.skus})
			wantFields(t, err, tc.fields...)
		})
	}
}

func TestGetStockUnknownSKUsAreNotFoundNamingEachOnce(t *testing.T) {
	s := startFresh(t, inventory.Options{})
	_, err := s.client.GetStock(callCtx(t), &inventoryv1.GetStockRequest{Skus: []string{"sku-x", decaf, "sku-y", "sku-x"}})
	wantReason(t, err, codes.NotFound, "SKU_NOT_FOUND", map[string]string{"skus": "sku-x,sku-y"})
}

func TestReserveHoldsStockMergingLinesOfOneSKUOrderedBySKU(t *testing.T) {
	s := startFresh(t, inventory.Options{})
	r, err := reserve(t, s.client, "req-merge", espresso, 1, decaf, 2, espresso, 3)
	if err != nil {
		t.Fatalf("Reserve: %v", err)
	}
	if r.GetReservationId() == "" || r.GetRequestId() != "req-merge" || r.GetState() != inventoryv1.ReservationState_RESERVATION_STATE_RESERVED {
		t.Fatalf("reservation = %v", r)
	}
	// decaf < espresso in byte order.
	want := lines(decaf, 2, espresso, 4)
	if len(r.GetLines()) != 2 || !proto.Equal(r.GetLines()[0], want[0]) || !proto.Equal(r.GetLines()[1], want[1]) {
		t.Fatalf("lines = %v, want %v", r.GetLines(), want)
	}
	if got := r.GetExpireTime().AsTime().Sub(r.GetCreateTime().AsTime()); got != inventory.DefaultReservationTTL {
		t.Errorf("expire_time - create_time = %v, want the default TTL %v", got, inventory.DefaultReservationTTL)
	}
	wantLevel(t, s.client, decaf, level{40, 2, 38})
	wantLevel(t, s.client, espresso, level{120, 4, 116})
}

func TestReserveIsIdempotentOnRequestID(t *testing.T) {
	s := startFresh(t, inventory.Options{})
	first, err := reserve(t, s.client, "req-1", decaf, 3, espresso, 1)
	if err != nil {
		t.Fatalf("Reserve: %v", err)
	}
	// The same lines in another order and split differently are the same
	// request.
	again, err := reserve(t, s.client, "req-1", espresso, 1, decaf, 1, decaf, 2)
	if err != nil {
		t.Fatalf("Reserve again: %v", err)
	}
	if !proto.Equal(first, again) {
		t.Fatalf("retry = %v, want the first reservation %v", again, first)
	}
	wantLevel(t, s.client, decaf, level{40, 3, 37})

	_, err = reserve(t, s.client, "req-1", decaf, 4, espresso, 1)
	wantReason(t, err, codes.AlreadyExists, "REQUEST_ID_REUSED", map[string]string{})
	wantLevel(t, s.client, decaf, level{40, 3, 37})
}

func TestReserveShortStockReservesNothingAndNamesEveryShortSKU(t *testing.T) {
	s := startFresh(t, inventory.Options{})
	plenty, short1, short2 := freshSKU(t, s.client, 10), freshSKU(t, s.client, 2), freshSKU(t, s.client, 0)
	_, err := reserve(t, s.client, unique("req"), plenty, 5, short2, 1, short1, 3)
	// Named in SKU order, which is creation order here.
	wantReason(t, err, codes.FailedPrecondition, "OUT_OF_STOCK", map[string]string{"skus": short1 + "," + short2})
	wantLevel(t, s.client, plenty, level{10, 0, 10})

	// Lines of one SKU are added before the check.
	five := freshSKU(t, s.client, 5)
	_, err = reserve(t, s.client, unique("req"), five, 3, five, 3)
	wantReason(t, err, codes.FailedPrecondition, "OUT_OF_STOCK", map[string]string{"skus": five})

	// Exactly the available units succeed, one more does not.
	mustReserve(t, s.client, five, 2)
	mustReserve(t, s.client, five, 3)
	wantLevel(t, s.client, five, level{5, 5, 0})
	_, err = reserve(t, s.client, unique("req"), five, 1)
	wantReason(t, err, codes.FailedPrecondition, "OUT_OF_STOCK", map[string]string{"skus": five})
}

func TestReserveUnknownSKUIsSKUNotFoundAndComesBeforeOutOfStock(t *testing.T) {
	s := startFresh(t, inventory.Options{})
	empty := freshSKU(t, s.client, 0)
	_, err := reserve(t, s.client, unique("req"), "sku-z-missing", 1, empty, 1, "sku-a-missing", 1)
	wantReason(t, err, codes.NotFound, "SKU_NOT_FOUND", map[string]string{"skus": "sku-a-missing,sku-z-missing"})
}

func TestReserveBadInputNamesEachField(t *testing.T) {
	s := startFresh(t, inventory.Options{})
	var tooMany []any
	for range 101 {
		tooMany = append(tooMany, "sku-a", 1)
	}
	for name, tc := range map[string]struct {
		requestID string
		lines     []any
		fields    []string
	}{
		"empty request_id":           {"", []any{"sku-a", 1}, []string{"request_id"}},
		"request_id of 129 chars":    {strings.Repeat("r", 129), []any{"sku-a", 1}, []string{"request_id"}},
		"no lines":                   {"req", nil, []string{"lines"}},
		"101 lines":                  {"req", tooMany, []string{"lines"}},
		"empty sku":                  {"req", []any{"sku-a", 1, "", 1}, []string{"lines[1].sku"}},
		"zero quantity":              {"req", []any{"sku-a", 1, "sku-b", 0}, []string{"lines[1].quantity"}},
		"negative quantity":          {"req", []any{"sku-a", -2}, []string{"lines[0].quantity"}},
		"quantity 10001":             {"req", []any{"sku-a", 10001}, []string{"lines[0].quantity"}},
		"three problems":             {"", []any{"", 0}, []string{"request_id", "lines[0].sku", "lines[0].quantity"}},
		"129 two-byte characters":    {strings.Repeat("é", 129), []any{"sku-a", 1}, []string{"request_id"}},
		"bad id and no lines at all": {"", nil, []string{"request_id", "lines"}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := reserve(t, s.client, tc.requestID, tc.lines...)
			wantFields(t, err, tc.fields...)
		})
	}
	// 128 characters are allowed, counted in code points, not bytes.
	if _, err := reserve(t, s.client, strings.Repeat("é", 128), decaf, 1); err != nil {
		t.Fatalf("a request_id of 128 two-byte characters: %v", err)
	}
}

func TestCommitDeductsOnHandIsIdempotentAndThenReleaseFails(t *testing.T) {
	s := startFresh(t, inventory.Options{})
	sku := freshSKU(t, s.client, 10)
	r := mustReserve(t, s.client, sku, 4)
	committed, err := s.client.Commit(callCtx(t), &inventoryv1.CommitRequest{ReservationId: r.GetReservationId()})
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if c := committed.GetReservation(); c.GetState() != inventoryv1.ReservationState_RESERVATION_STATE_COMMITTED ||
		c.GetReservationId() != r.GetReservationId() || !proto.Equal(c.GetExpireTime(), r.GetExpireTime()) {
		t.Fatalf("committed = %v", c)
	}
	wantLevel(t, s.client, sku, level{6, 0, 6})
	again, err := s.client.Commit(callCtx(t), &inventoryv1.CommitRequest{ReservationId: r.GetReservationId()})
	if err != nil || !proto.Equal(again.GetReservation(), committed.GetReservation()) {
		t.Fatalf("Commit again = %v, %v; want the same reservation", again, err)
	}
	wantLevel(t, s.client, sku, level{6, 0, 6})
	_, err = s.client.Release(callCtx(t), &inventoryv1.ReleaseRequest{ReservationId: r.GetReservationId()})
	wantReason(t, err, codes.FailedPrecondition, "RESERVATION_COMMITTED", nil)
	wantLevel(t, s.client, sku, level{6, 0, 6})
}

func TestReleaseReturnsTheStockIsIdempotentAndThenCommitFails(t *testing.T) {
	s := startFresh(t, inventory.Options{})
	sku := freshSKU(t, s.client, 10)
	r := mustReserve(t, s.client, sku, 4)
	released, err := s.client.Release(callCtx(t), &inventoryv1.ReleaseRequest{ReservationId: r.GetReservationId()})
	if err != nil || released.GetReservation().GetState() != inventoryv1.ReservationState_RESERVATION_STATE_RELEASED {
		t.Fatalf("Release = %v, %v", released, err)
	}
	wantLevel(t, s.client, sku, level{10, 0, 10})
	again, err := s.client.Release(callCtx(t), &inventoryv1.ReleaseRequest{ReservationId: r.GetReservationId()})
	if err != nil || !proto.Equal(again.GetReservation(), released.GetReservation()) {
		t.Fatalf("Release again = %v, %v; want the same reservation", again, err)
	}
	_, err = s.client.Commit(callCtx(t), &inventoryv1.CommitRequest{ReservationId: r.GetReservationId()})
	wantReason(t, err, codes.FailedPrecondition, "RESERVATION_RELEASED", nil)
	wantLevel(t, s.client, sku, level{10, 0, 10})
}

func TestCommitAndReleaseOfAnUnknownOrEmptyIDFail(t *testing.T) {
	s := startFresh(t, inventory.Options{})
	_, err := s.client.Commit(callCtx(t), &inventoryv1.CommitRequest{ReservationId: "no-such-reservation"})
	wantReason(t, err, codes.NotFound, "RESERVATION_NOT_FOUND", nil)
	_, err = s.client.Release(callCtx(t), &inventoryv1.ReleaseRequest{ReservationId: "no-such-reservation"})
	wantReason(t, err, codes.NotFound, "RESERVATION_NOT_FOUND", nil)
	_, err = s.client.Commit(callCtx(t), &inventoryv1.CommitRequest{})
	wantFields(t, err, "reservation_id")
	_, err = s.client.Release(callCtx(t), &inventoryv1.ReleaseRequest{})
	wantFields(t, err, "reservation_id")
}

func TestImportStockCreatesAndUpdatesAndTheLaterItemWins(t *testing.T) {
	s := startFresh(t, inventory.Options{})
	existing := freshSKU(t, s.client, 3)
	created := unique("sku-test")
	resp, err := importStock(t, s.client, created, 5, existing, 9, created, 7, decaf, decafStock)
	if err != nil {
		t.Fatalf("ImportStock: %v", err)
	}
	// decaf is set to what it has: still counted as updated.
	if resp.GetItemsReceived() != 4 || resp.GetSkusCreated() != 1 || resp.GetSkusUpdated() != 2 {
		t.Fatalf("summary = %v, want 4 received, 1 created, 2 updated", resp)
	}
	wantLevel(t, s.client, created, level{7, 0, 7})
	wantLevel(t, s.client, existing, level{9, 0, 9})

	resp, err = importStock(t, s.client)
	if err != nil || resp.GetItemsReceived() != 0 || resp.GetSkusCreated() != 0 || resp.GetSkusUpdated() != 0 {
		t.Fatalf("an empty import = %v, %v; want all zeros", resp, err)
	}
	low, high := unique("sku-test"), unique("sku-test")
	if _, err := importStock(t, s.client, low, 0, high, 1_000_000); err != nil {
		t.Fatalf("import at the bounds: %v", err)
	}
	wantLevel(t, s.client, high, level{1_000_000, 0, 1_000_000})
}

func TestImportStockOneBadItemFailsTheWholeImportNamingItsIndex(t *testing.T) {
	s := startFresh(t, inventory.Options{})
	existing := freshSKU(t, s.client, 4)
	created := unique("sku-test")
	for name, tc := range map[string]struct {
		bad    []any
		fields []string
	}{
		"empty sku":                  {[]any{"", 5}, []string{"items[2].sku"}},
		"negative on_hand":           {[]any{unique("sku"), -1}, []string{"items[2].on_hand"}},
		"on_hand over a million":     {[]any{unique("sku"), 1_000_001}, []string{"items[2].on_hand"}},
		"empty sku and bad on_hand":  {[]any{"", -1}, []string{"items[2].sku", "items[2].on_hand"}},
		"every bad item is reported": {[]any{"", 1, "", 2}, []string{"items[2].sku", "items[3].sku"}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := importStock(t, s.client, append([]any{existing, 8, created, 1}, tc.bad...)...)
			wantFields(t, err, tc.fields...)
			wantLevel(t, s.client, existing, level{4, 0, 4})
			_, err = s.client.GetStock(callCtx(t), &inventoryv1.GetStockRequest{Skus: []string{created}})
			wantReason(t, err, codes.NotFound, "SKU_NOT_FOUND", map[string]string{"skus": created})
		})
	}
}

func TestImportStockBelowTheReservedUnitsIsInvalidAndAppliesNothing(t *testing.T) {
	s := startFresh(t, inventory.Options{})
	sku, other := freshSKU(t, s.client, 10), freshSKU(t, s.client, 1)
	mustReserve(t, s.client, sku, 6)
	_, err := importStock(t, s.client, other, 50, sku, 5)
	wantFields(t, err, "items[1].on_hand")
	wantLevel(t, s.client, sku, level{10, 6, 4})
	wantLevel(t, s.client, other, level{1, 0, 1})
	// Exactly the reserved units is allowed.
	if _, err := importStock(t, s.client, sku, 6); err != nil {
		t.Fatalf("import of on_hand = reserved: %v", err)
	}
	wantLevel(t, s.client, sku, level{6, 6, 0})
}

func TestImportStockCancelledBeforeHalfCloseAppliesNothing(t *testing.T) {
	s := startFresh(t, inventory.Options{})
	sku := unique("sku-test")
	ctx, cancel := context.WithCancel(callCtx(t))
	stream, err := s.client.ImportStock(ctx)
	if err != nil {
		t.Fatalf("ImportStock: %v", err)
	}
	if err := stream.Send(&inventoryv1.ImportStockRequest{Sku: sku, OnHand: 5}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	cancel()
	if _, err := stream.CloseAndRecv(); status.Code(err) != codes.Canceled {
		t.Fatalf("CloseAndRecv after cancel = %v, want CANCELLED", err)
	}
	_, err = s.client.GetStock(callCtx(t), &inventoryv1.GetStockRequest{Skus: []string{sku}})
	wantReason(t, err, codes.NotFound, "SKU_NOT_FOUND", map[string]string{"skus": sku})
}
