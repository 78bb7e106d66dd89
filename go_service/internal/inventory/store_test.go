package inventory_test

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "modernc.org/sqlite" // the "sqlite" driver, to write rows as another implementation would

	inventoryv1 "github.com/polyglot-shop/shop/go_service/gen/shop/inventory/v1"
	"github.com/polyglot-shop/shop/go_service/internal/inventory"
)

func sha256Hex(text string) string {
	sum := sha256.Sum256([]byte(text))
	return hex.EncodeToString(sum[:])
}

func TestTheFingerprintIsTheOneTheSchemaDefines(t *testing.T) {
	// The schema's own example.
	merged := inventory.MergeLines([]inventory.Line{{SKU: "sku-b", Quantity: 1}, {SKU: "sku-a", Quantity: 1}, {SKU: "sku-a", Quantity: 1}})
	if got, want := inventory.Fingerprint(merged), sha256Hex("5:sku-a:2;5:sku-b:1;"); got != want {
		t.Errorf("Fingerprint(sku-a x 2, sku-b x 1) = %s, want %s", got, want)
	}
	// Lengths are UTF-8 bytes, and SKUs sort by their bytes ("Z" < "a" < "é").
	merged = inventory.MergeLines([]inventory.Line{{SKU: "é", Quantity: 3}, {SKU: "a", Quantity: 1}, {SKU: "Z", Quantity: 2}})
	if got, want := inventory.Fingerprint(merged), sha256Hex("1:Z:2;1:a:1;2:é:3;"); got != want {
		t.Errorf("Fingerprint with a two-byte SKU = %s, want %s", got, want)
	}
}

// A reservation written by another implementation, with the fingerprint the
// schema defines, is found again by a Go Reserve with the same request.
func TestAReservationWrittenByAnotherImplementationIsReplayed(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "inventory.db")
	s := startInventory(t, dbPath, inventory.Options{})

	other, err := sql.Open("sqlite", dbPath+"?_pragma=busy_timeout(5000)&_pragma=foreign_keys(ON)")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ctx := context.Background()
	fp := sha256Hex("20:sku-decaf-beans-500g:2;22:sku-espresso-beans-1kg:1;")
	for _, stmt := range []string{
		`INSERT INTO reservations VALUES ('res-from-node', 'req-from-node', '` + fp + `', 'RESERVED', 1000, 99999999999999, 1000)`,
		`INSERT INTO reservation_lines VALUES ('res-from-node', 'sku-espresso-beans-1kg', 1)`,
		`INSERT INTO reservation_lines VALUES ('res-from-node', 'sku-decaf-beans-500g', 2)`,
		`UPDATE stock SET reserved = reserved + 1 WHERE sku = 'sku-espresso-beans-1kg'`,
		`UPDATE stock SET reserved = reserved + 2 WHERE sku = 'sku-decaf-beans-500g'`,
	} {
		if _, err := other.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}

	r, err := reserve(t, s.client, "req-from-node", espresso, 1, decaf, 1, decaf, 1)
	if err != nil {
		t.Fatalf("Reserve replaying another implementation's request: %v", err)
	}
	if r.GetReservationId() != "res-from-node" || r.GetCreateTime().AsTime().UnixMilli() != 1000 {
		t.Fatalf("replay = %v, want res-from-node created at 1000 ms", r)
	}
	wantLevel(t, s.client, decaf, level{40, 2, 38})
	if _, err := s.client.Commit(callCtx(t), &inventoryv1.CommitRequest{ReservationId: "res-from-node"}); err != nil {
		t.Fatalf("Commit of another implementation's reservation: %v", err)
	}
	wantLevel(t, s.client, decaf, level{38, 0, 38})
}

func TestOpenRefusesANewerSchemaVersion(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "inventory.db")
	ctx := context.Background()
	store, err := inventory.Open(ctx, inventory.OpenOptions{Path: dbPath, SchemaFile: schemaFile, SeedFile: seedFile})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", dbPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `UPDATE meta SET value = '2' WHERE key = 'schema_version'`); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	if _, err := inventory.Open(ctx, inventory.OpenOptions{Path: dbPath, SchemaFile: schemaFile, SeedFile: seedFile}); err == nil ||
		!strings.Contains(err.Error(), `schema_version "2"`) {
		t.Fatalf("Open of a schema_version 2 database = %v, want a refusal naming the version", err)
	}
}

func TestOpenNamesWhatIsMissing(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	missingSchema := filepath.Join(dir, "schema.sql")
	if _, err := inventory.Open(ctx, inventory.OpenOptions{Path: filepath.Join(dir, "a.db"), SchemaFile: missingSchema, SeedFile: seedFile}); err == nil ||
		!strings.Contains(err.Error(), missingSchema) {
		t.Errorf("Open without the schema = %v, want an error naming %s", err, missingSchema)
	}
	if _, err := inventory.Open(ctx, inventory.OpenOptions{Path: filepath.Join(dir, "b.db"), SearchDir: dir, SeedFile: seedFile}); err == nil ||
		!strings.Contains(err.Error(), "SHOP_INVENTORY_SCHEMA") {
		t.Errorf("Open with no schema to find = %v, want an error naming SHOP_INVENTORY_SCHEMA", err)
	}
	missingSeed := filepath.Join(dir, "products.json")
	if _, err := inventory.Open(ctx, inventory.OpenOptions{Path: filepath.Join(dir, "c.db"), SchemaFile: schemaFile, SeedFile: missingSeed}); err == nil ||
		!strings.Contains(err.Error(), missingSeed) {
		t.Errorf("Open of a new database without a seed = %v, want an error naming %s", err, missingSeed)
	}
	badSeed := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(badSeed, []byte(`{"products": [{"id": "sku-a", "initial_stock": 1.5}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := inventory.Open(ctx, inventory.OpenOptions{Path: filepath.Join(dir, "d.db"), SchemaFile: schemaFile, SeedFile: badSeed}); err == nil ||
		!strings.Contains(err.Error(), badSeed) {
		t.Errorf("Open with a fractional initial_stock = %v, want an error naming %s", err, badSeed)
	}
	// A failed first start leaves a database that the next start seeds.
	store, err := inventory.Open(ctx, inventory.OpenOptions{Path: filepath.Join(dir, "c.db"), SchemaFile: schemaFile, SeedFile: seedFile})
	if err != nil {
		t.Fatalf("Open after a failed seed: %v", err)
	}
	defer store.Close()
	if store.SeededFrom == "" {
		t.Error("the database was not seeded after the failed first start")
	}
}

func TestTheDefaultFilesAreFoundFromAnyDirectoryOfTheRepository(t *testing.T) {
	store, err := inventory.Open(context.Background(), inventory.OpenOptions{Path: filepath.Join(t.TempDir(), "inventory.db")})
	if err != nil {
		t.Fatalf("Open with the defaults from %s: %v", mustGetwd(t), err)
	}
	defer store.Close()
	if !strings.HasSuffix(store.SchemaFile, filepath.FromSlash(inventory.DefaultSchemaFile)) ||
		!strings.HasSuffix(store.SeededFrom, filepath.FromSlash(inventory.DefaultSeedFile)) {
		t.Errorf("schema %s, seed %s; want the repository's", store.SchemaFile, store.SeededFrom)
	}
}

func mustGetwd(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return wd
}
