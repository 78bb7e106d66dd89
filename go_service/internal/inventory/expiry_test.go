package inventory_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/polyglot-shop/shop/go_service/internal/inventory"
)

// clock is a settable clock for a Store, in Unix milliseconds.
type clock struct{ ms atomic.Int64 }

func (c *clock) now() time.Time { return time.UnixMilli(c.ms.Load()) }

func (c *clock) set(ms int64) { c.ms.Store(ms) }

// openAt opens the database at dbPath with c as the store's clock.
func openAt(t *testing.T, dbPath string, c *clock) *inventory.Store {
	t.Helper()
	store, err := inventory.Open(context.Background(), inventory.OpenOptions{
		Path: dbPath, SchemaFile: schemaFile, SeedFile: seedFile, Now: c.now,
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = store.Close() })
	return store
}

// wantStored fails unless GetStock reads sku as on_hand and reserved.
func wantStored(t *testing.T, store *inventory.Store, sku string, onHand, reserved int64) {
	t.Helper()
	levels, err := store.GetStock(context.Background(), []string{sku})
	if err != nil {
		t.Fatalf("GetStock %s: %v", sku, err)
	}
	if l := levels[0]; l.OnHand != onHand || l.Reserved != reserved {
		t.Fatalf("GetStock %s = on_hand %d reserved %d, want %d and %d", sku, l.OnHand, l.Reserved, onHand, reserved)
	}
}

const t0 = 1_800_000_000_000 // a fixed start, Unix milliseconds

func TestAReadAtTheDeadlineExactlyAndAfterItSeesTheStockReleased(t *testing.T) {
	c := &clock{}
	c.set(t0)
	store := openAt(t, filepath.Join(t.TempDir(), "inventory.db"), c)
	ctx := context.Background()
	if _, err := store.Reserve(ctx, "soon", []inventory.Line{{SKU: decaf, Quantity: 3}}, time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Reserve(ctx, "later", []inventory.Line{{SKU: espresso, Quantity: 5}}, 2*time.Second); err != nil {
		t.Fatal(err)
	}

	c.set(t0 + 999)
	wantStored(t, store, decaf, decafStock, 3)
	c.set(t0 + 1000) // the first reservation's deadline exactly
	wantStored(t, store, decaf, decafStock, 0)
	wantStored(t, store, espresso, espressoStock, 5)
	c.set(t0 + 2001) // a millisecond after the second one's
	wantStored(t, store, espresso, espressoStock, 0)
}

func TestARestartedStoreReadsTheNextExpiryFromTheFile(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "inventory.db")
	c := &clock{}
	c.set(t0)
	first, err := inventory.Open(context.Background(), inventory.OpenOptions{Path: dbPath, SchemaFile: schemaFile, SeedFile: seedFile, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Reserve(context.Background(), "before-restart", []inventory.Line{{SKU: decaf, Quantity: 4}}, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	store := openAt(t, dbPath, c)
	wantStored(t, store, decaf, decafStock, 4)
	c.set(t0 + 1000)
	wantStored(t, store, decaf, decafStock, 0)
}

// During a canary another implementation writes the same file: a
// reservation it made, due before anything this store made, is still never
// counted once its deadline has passed.
func TestAReservationAnotherProcessMadeIsNotCountedPastItsDeadline(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "inventory.db")
	c := &clock{}
	c.set(t0)
	store := openAt(t, dbPath, c)
	ctx := context.Background()
	if _, err := store.Reserve(ctx, "ours", []inventory.Line{{SKU: decaf, Quantity: 1}}, time.Hour); err != nil {
		t.Fatal(err)
	}
	wantStored(t, store, decaf, decafStock, 1)

	other, err := sql.Open("sqlite", dbPath+"?_pragma=busy_timeout(5000)&_pragma=foreign_keys(ON)")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for _, stmt := range []string{
		`INSERT INTO reservations VALUES ('res-other', 'req-other', 'fp', 'RESERVED', 1800000000000, 1800000000500, 1800000000000)`,
		`INSERT INTO reservation_lines VALUES ('res-other', '` + decaf + `', 2)`,
		`UPDATE stock SET reserved = reserved + 2 WHERE sku = '` + decaf + `'`,
	} {
		if _, err := other.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}

	wantStored(t, store, decaf, decafStock, 3)
	c.set(t0 + 500)
	wantStored(t, store, decaf, decafStock, 1)
	var state string
	if err := other.QueryRowContext(ctx, `SELECT state FROM reservations WHERE reservation_id = 'res-other'`).Scan(&state); err != nil {
		t.Fatal(err)
	}
	if state != "EXPIRED" {
		t.Fatalf("the other process's reservation is %s after a read past its deadline, want EXPIRED", state)
	}
}
