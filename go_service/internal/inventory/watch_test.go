package inventory_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	inventoryv1 "github.com/polyglot-shop/shop/go_service/gen/shop/inventory/v1"
	"github.com/polyglot-shop/shop/go_service/internal/inventory"
)

// watchMessage is one WatchStock message as "sku on_hand/reserved/available
// initial".
func watchMessage(m *inventoryv1.WatchStockResponse) string {
	l := m.GetLevel()
	return fmt.Sprintf("%s %d/%d/%d %t", l.GetSku(), l.GetOnHand(), l.GetReserved(), l.GetAvailable(), m.GetInitial())
}

// recvWatch receives one message or fails with what it got instead.
func recvWatch(t *testing.T, stream grpc.ServerStreamingClient[inventoryv1.WatchStockResponse]) string {
	t.Helper()
	m, err := stream.Recv()
	if err != nil {
		t.Fatalf("WatchStock Recv: %v", err)
	}
	return watchMessage(m)
}

func wantWatch(t *testing.T, stream grpc.ServerStreamingClient[inventoryv1.WatchStockResponse], want string) {
	t.Helper()
	if got := recvWatch(t, stream); got != want {
		t.Fatalf("watch message = %q, want %q", got, want)
	}
}

func TestWatchStockSendsTheInitialLevelsThenEveryChangeInOrder(t *testing.T) {
	s := startFresh(t, inventory.Options{})
	a, b, other := freshSKU(t, s.client, 10), freshSKU(t, s.client, 20), freshSKU(t, s.client, 5)
	ctx, cancel := context.WithCancel(callCtx(t))
	defer cancel()
	stream, err := s.client.WatchStock(ctx, &inventoryv1.WatchStockRequest{Skus: []string{a, b, a}})
	if err != nil {
		t.Fatalf("WatchStock: %v", err)
	}
	// One initial message per SKU, in the order first asked, however often
	// the request names it.
	wantWatch(t, stream, a+" 10/0/10 true")
	wantWatch(t, stream, b+" 20/0/20 true")

	r := mustReserve(t, s.client, a, 3)
	wantWatch(t, stream, a+" 10/3/7 false")
	if _, err := importStock(t, s.client, other, 6); err != nil { // not watched: nothing sent
		t.Fatal(err)
	}
	if _, err := importStock(t, s.client, b, 25); err != nil {
		t.Fatal(err)
	}
	wantWatch(t, stream, b+" 25/0/25 false")
	if _, err := s.client.Commit(callCtx(t), &inventoryv1.CommitRequest{ReservationId: r.GetReservationId()}); err != nil {
		t.Fatal(err)
	}
	wantWatch(t, stream, a+" 7/0/7 false")
	// A failed call changes nothing and sends nothing; the next change is
	// the next message.
	if _, err := reserve(t, s.client, unique("req"), a, 100); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("Reserve of too much = %v", err)
	}
	mustReserve(t, s.client, b, 1)
	wantWatch(t, stream, b+" 25/1/24 false")
}

func TestWatchStockCancelledLeavesNoWatcher(t *testing.T) {
	s := startFresh(t, inventory.Options{})
	sku := freshSKU(t, s.client, 10)
	ctx, cancel := context.WithCancel(callCtx(t))
	stream, err := s.client.WatchStock(ctx, &inventoryv1.WatchStockRequest{Skus: []string{sku}})
	if err != nil {
		t.Fatalf("WatchStock: %v", err)
	}
	wantWatch(t, stream, sku+" 10/0/10 true")
	if n := s.svc.Watchers(); n != 1 {
		t.Fatalf("watchers while watching = %d, want 1", n)
	}
	cancel()
	if _, err := stream.Recv(); status.Code(err) != codes.Canceled {
		t.Fatalf("Recv after cancel = %v, want CANCELLED", err)
	}
	eventually(t, "the watcher to be removed", func() bool { return s.svc.Watchers() == 0 })
	if _, err := importStock(t, s.client, sku, 9); err != nil { // a change with nobody watching
		t.Fatal(err)
	}
	wantLevel(t, s.client, sku, level{9, 0, 9})
}

func TestWatchStockEndsAtItsDeadlineAndLeavesNoWatcher(t *testing.T) {
	s := startFresh(t, inventory.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	stream, err := s.client.WatchStock(ctx, &inventoryv1.WatchStockRequest{Skus: []string{decaf}})
	if err != nil {
		t.Fatalf("WatchStock: %v", err)
	}
	wantWatch(t, stream, decaf+" 40/0/40 true")
	if _, err := stream.Recv(); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("Recv past the deadline = %v, want DEADLINE_EXCEEDED", err)
	}
	eventually(t, "the watcher to be removed", func() bool { return s.svc.Watchers() == 0 })
}

func TestWatchStockUnknownSKUIsNotFoundBeforeAnyMessage(t *testing.T) {
	s := startFresh(t, inventory.Options{})
	stream, err := s.client.WatchStock(callCtx(t), &inventoryv1.WatchStockRequest{Skus: []string{decaf, "sku-missing"}})
	if err != nil {
		t.Fatalf("WatchStock: %v", err)
	}
	m, err := stream.Recv()
	if m != nil {
		t.Fatalf("received %v before the error", m)
	}
	wantReason(t, err, codes.NotFound, "SKU_NOT_FOUND", map[string]string{"skus": "sku-missing"})
	eventually(t, "no watcher left", func() bool { return s.svc.Watchers() == 0 })

	for name, tc := range map[string]struct {
		skus  []string
		field string
	}{"no SKUs": {nil, "skus"}, "an empty SKU": {[]string{"a", ""}, "skus[1]"}} {
		stream, err := s.client.WatchStock(callCtx(t), &inventoryv1.WatchStockRequest{Skus: tc.skus})
		if err != nil {
			t.Fatalf("%s: WatchStock: %v", name, err)
		}
		_, err = stream.Recv()
		wantFields(t, err, tc.field)
	}
}

func TestShutdownEndsOpenWatchesWithUnavailable(t *testing.T) {
	s := startFresh(t, inventory.Options{})
	// A connection of its own: stop closes the harness's.
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	defer conn.Close()
	stream, err := inventoryv1.NewInventoryServiceClient(conn).WatchStock(callCtx(t), &inventoryv1.WatchStockRequest{Skus: []string{decaf}})
	if err != nil {
		t.Fatalf("WatchStock: %v", err)
	}
	wantWatch(t, stream, decaf+" 40/0/40 true")
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		s.stop() // the drain would wait callTimeout for a watch that never ended
	}()
	_, err = stream.Recv()
	st := wantStatus(t, err, codes.Unavailable)
	if st.Message() != "The server is shutting down; watch again." {
		t.Errorf("message = %q", st.Message())
	}
	select {
	case <-stopped:
	case <-time.After(callTimeout):
		t.Fatal("the server did not stop after its watches ended")
	}
}
