package inventory_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	inventoryv1 "github.com/polyglot-shop/shop/go_service/gen/shop/inventory/v1"
	"github.com/polyglot-shop/shop/go_service/internal/inventory"
)

const shortTTL = 400 * time.Millisecond

// untilExpired blocks until r's expire_time has passed.
func untilExpired(r *inventoryv1.Reservation) {
	time.Sleep(time.Until(r.GetExpireTime().AsTime()) + 5*time.Millisecond)
}

func TestAnUncommittedReservationExpiresAfterTheTTL(t *testing.T) {
	// The sweep is slowed right down, so only the lazy expiry that every call
	// does can expire the reservation.
	s := startFresh(t, inventory.Options{ReservationTTL: shortTTL, SweepInterval: time.Hour})
	r, err := reserve(t, s.client, "ttl-1", decaf, 10)
	if err != nil {
		t.Fatalf("Reserve: %v", err)
	}
	if got := r.GetExpireTime().AsTime().Sub(r.GetCreateTime().AsTime()); got != shortTTL {
		t.Fatalf("expire_time - create_time = %v, want %v", got, shortTTL)
	}
	wantLevel(t, s.client, decaf, level{40, 10, 30})
	untilExpired(r)

	wantLevel(t, s.client, decaf, level{40, 0, 40})
	_, err = s.client.Commit(callCtx(t), &inventoryv1.CommitRequest{ReservationId: r.GetReservationId()})
	wantReason(t, err, codes.FailedPrecondition, "RESERVATION_EXPIRED", nil)
	_, err = s.client.Release(callCtx(t), &inventoryv1.ReleaseRequest{ReservationId: r.GetReservationId()})
	wantReason(t, err, codes.FailedPrecondition, "RESERVATION_EXPIRED", nil)

	retry, err := reserve(t, s.client, "ttl-1", decaf, 10)
	if err != nil {
		t.Fatalf("Reserve retry: %v", err)
	}
	if retry.GetReservationId() != r.GetReservationId() || retry.GetState() != inventoryv1.ReservationState_RESERVATION_STATE_EXPIRED {
		t.Fatalf("retry = %v, want the same reservation, EXPIRED", retry)
	}
	wantLevel(t, s.client, decaf, level{40, 0, 40})
}

func TestAWriteExpiresOverdueReservationsOfOtherSKUs(t *testing.T) {
	s := startFresh(t, inventory.Options{ReservationTTL: shortTTL, SweepInterval: time.Hour})
	r := mustReserve(t, s.client, decaf, 7)
	untilExpired(r)
	// A write about another SKU expires it first, in its own transaction.
	mustReserve(t, s.client, espresso, 1)
	levels, err := s.store.ReadStock(callCtx(t), []string{decaf}) // reads without expiring
	if err != nil {
		t.Fatal(err)
	}
	if l := levels[decaf]; l.Reserved != 0 {
		t.Fatalf("decaf reserved = %d after another write, want 0", l.Reserved)
	}
}

func TestWatchersSeeAnExpiryWithoutAnyOtherCall(t *testing.T) {
	s := startFresh(t, inventory.Options{ReservationTTL: shortTTL})
	ctx, cancel := context.WithCancel(callCtx(t))
	defer cancel()
	stream, err := s.client.WatchStock(ctx, &inventoryv1.WatchStockRequest{Skus: []string{decaf}})
	if err != nil {
		t.Fatalf("WatchStock: %v", err)
	}
	wantWatch(t, stream, decaf+" 40/0/40 true")
	mustReserve(t, s.client, decaf, 3)
	wantWatch(t, stream, decaf+" 40/3/37 false")
	// Only the periodic sweep can expire it now.
	wantWatch(t, stream, decaf+" 40/0/40 false")
}

func TestConcurrentReservesAtOneSKUGrantExactlyTheAvailableUnits(t *testing.T) {
	s := startFresh(t, inventory.Options{})
	const callers = 64
	granted, short := race(t, s.client, decaf, "one", callers)
	if granted != decafStock || short != callers-decafStock {
		t.Fatalf("granted %d and refused %d of %d, want %d granted", granted, short, callers, decafStock)
	}
	wantLevel(t, s.client, decaf, level{decafStock, decafStock, 0})
}

// race sends n concurrent one-unit reservations for sku and counts the
// granted and the OUT_OF_STOCK ones; any other outcome fails the test.
func race(t *testing.T, c inventoryv1.InventoryServiceClient, sku, label string, n int) (granted, short int) {
	t.Helper()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex // guards granted, short and errs
		errs []error
	)
	for i := range n {
		wg.Go(func() {
			_, err := c.Reserve(callCtx(t), &inventoryv1.ReserveRequest{
				RequestId: fmt.Sprintf("race-%s-%d", label, i),
				Lines:     lines(sku, 1),
			})
			mu.Lock()
			defer mu.Unlock()
			switch status.Code(err) {
			case codes.OK:
				granted++
			case codes.FailedPrecondition:
				short++
			default:
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("unexpected Reserve outcomes: %v", err)
	}
	return granted, short
}

func TestARestartedServerKeepsStockAndReservationsAndDoesNotSeedAgain(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "inventory.db")
	first := startInventory(t, dbPath, inventory.Options{})
	if first.store.SeededFrom == "" {
		t.Fatal("a new database was not seeded")
	}
	sku := freshSKU(t, first.client, 10)
	committed := mustReserve(t, first.client, decaf, 5)
	if _, err := first.client.Commit(callCtx(t), &inventoryv1.CommitRequest{ReservationId: committed.GetReservationId()}); err != nil {
		t.Fatal(err)
	}
	held, err := reserve(t, first.client, "req-held", sku, 4)
	if err != nil {
		t.Fatal(err)
	}
	first.stop()

	second := startInventory(t, dbPath, inventory.Options{})
	if second.store.SeededFrom != "" {
		t.Fatalf("an existing database was seeded again from %s", second.store.SeededFrom)
	}
	wantLevel(t, second.client, decaf, level{35, 0, 35})
	wantLevel(t, second.client, sku, level{10, 4, 6})
	again, err := reserve(t, second.client, "req-held", sku, 4)
	if err != nil || again.GetReservationId() != held.GetReservationId() {
		t.Fatalf("the retried reservation after a restart = %v, %v; want %s", again, err, held.GetReservationId())
	}
	if _, err := second.client.Release(callCtx(t), &inventoryv1.ReleaseRequest{ReservationId: held.GetReservationId()}); err != nil {
		t.Fatalf("Release after a restart: %v", err)
	}
	wantLevel(t, second.client, sku, level{10, 0, 10})
}

// Two servers on one database file stand in for two implementations (two
// processes) during a live swap: each has its own connection pool, and one
// hears of the other's commits only through PRAGMA data_version.
func TestTwoServersOnOneFileShareStockAndSeeEachOthersChanges(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "shared.db")
	a := startInventory(t, dbPath, inventory.Options{})
	b := startInventory(t, dbPath, inventory.Options{})

	ctx, cancel := context.WithCancel(callCtx(t))
	defer cancel()
	watchB, err := b.client.WatchStock(ctx, &inventoryv1.WatchStockRequest{Skus: []string{espresso}})
	if err != nil {
		t.Fatalf("WatchStock on B: %v", err)
	}
	wantWatch(t, watchB, espresso+" 120/0/120 true")

	r := mustReserve(t, a.client, espresso, 20)
	wantLevel(t, b.client, espresso, level{120, 20, 100})
	wantWatch(t, watchB, espresso+" 120/20/100 false")

	// B commits what A reserved; A sees it.
	if _, err := b.client.Commit(callCtx(t), &inventoryv1.CommitRequest{ReservationId: r.GetReservationId()}); err != nil {
		t.Fatalf("Commit on B of A's reservation: %v", err)
	}
	wantWatch(t, watchB, espresso+" 100/0/100 false")
	wantLevel(t, a.client, espresso, level{100, 0, 100})

	// Both race for the same units: never oversold.
	var wg sync.WaitGroup
	var grantedA, grantedB int
	wg.Go(func() { grantedA, _ = race(t, a.client, decaf, "a", 40) })
	wg.Go(func() { grantedB, _ = race(t, b.client, decaf, "b", 40) })
	wg.Wait()
	if grantedA+grantedB != decafStock {
		t.Fatalf("granted %d on A and %d on B, want %d in all", grantedA, grantedB, decafStock)
	}
	wantLevel(t, a.client, decaf, level{decafStock, decafStock, 0})
	wantLevel(t, b.client, decaf, level{decafStock, decafStock, 0})
}
