package catalog

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var testSeedFile = filepath.Join("..", "..", "..", "data", "products.json")

func TestOpenSeedsANewDatabaseOnceAndKeepsItsData(t *testing.T) {
	ctx := context.Background()
	dbPath := filepath.Join(t.TempDir(), "catalog.db")
	created := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)

	s, err := Open(ctx, OpenOptions{Path: dbPath, SeedFile: testSeedFile, Now: func() time.Time { return created }})
	if err != nil {
		t.Fatalf("Open a new database: %v", err)
	}
	if s.SeededFrom != testSeedFile {
		t.Errorf("SeededFrom = %q, want %q", s.SeededFrom, testSeedFile)
	}
	key := string(s.tokenKey)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	// The second open must not need the seed: point it at nothing.
	s, err = Open(ctx, OpenOptions{Path: dbPath, SeedFile: filepath.Join(t.TempDir(), "missing.json")})
	if err != nil {
		t.Fatalf("Open an existing database without a seed file: %v", err)
	}
	defer s.Close()
	if s.SeededFrom != "" {
		t.Errorf("SeededFrom = %q on reopening, want empty", s.SeededFrom)
	}
	if string(s.tokenKey) != key {
		t.Error("the page-token key changed across a restart")
	}
	var journal string
	if err := s.db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&journal); err != nil || journal != "wal" {
		t.Errorf("journal_mode = %q, %v; want wal", journal, err)
	}
	if s.Currency() != "EUR" {
		t.Errorf("Currency = %q, want EUR", s.Currency())
	}
	products, more, err := s.List(ctx, "", "", 1000)
	if err != nil || more {
		t.Fatalf("List: more=%v err=%v", more, err)
	}
	seed, err := LoadSeed(testSeedFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(products) != len(seed.Products) {
		t.Fatalf("the reopened database has %d products, want %d", len(products), len(seed.Products))
	}
	for _, p := range products {
		if !p.CreateTime.Equal(created) {
			t.Errorf("product %s create_time = %v, want %v", p.ID, p.CreateTime, created)
		}
	}
}

func TestReadsSeeWritesMadeToTheDatabaseByAnotherConnection(t *testing.T) {
	ctx := context.Background()
	dbPath := filepath.Join(t.TempDir(), "catalog.db")
	s, err := Open(ctx, OpenOptions{Path: dbPath, SeedFile: testSeedFile, RefreshInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	before, _, err := s.List(ctx, "tea", "", 1000)
	if err != nil {
		t.Fatal(err)
	}

	// Another process (an operator's sqlite3, say) changes a price and adds
	// a product with the tea tag.
	other, err := sql.Open("sqlite", dbPath+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	changed := before[0].ID
	for _, stmt := range []string{
		`UPDATE products SET price_units = 1234, price_nanos = 0 WHERE id = '` + changed + `'`,
		`INSERT INTO products (id, name, description, price_units, price_nanos, create_time_unix_nanos) VALUES ('sku-zz-added', 'Added', '', 1, 0, 0)`,
		`INSERT INTO product_tags (tag, product_id, position) VALUES ('tea', 'sku-zz-added', 0)`,
	} {
		if _, err := other.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}

	deadline := time.Now().Add(10 * time.Second)
	for {
		found, err := s.Get(ctx, []string{changed, "sku-zz-added"})
		if err != nil {
			t.Fatal(err)
		}
		after, _, err := s.List(ctx, "tea", "", 1000)
		if err != nil {
			t.Fatal(err)
		}
		if p := found[changed]; p != nil && p.Price.units == 1234 && found["sku-zz-added"] != nil && len(after) == len(before)+1 {
			if last := after[len(after)-1]; last.ID != "sku-zz-added" {
				t.Errorf("the tea listing ends with %s, want the added sku-zz-added (ordered by id)", last.ID)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s the store still reads %+v and %d tea products (want price 1234 and %d)", found[changed], len(after), len(before)+1)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestOpenANewDatabaseWithoutASeedFails(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.json")
	_, err := Open(context.Background(), OpenOptions{Path: filepath.Join(t.TempDir(), "catalog.db"), SeedFile: missing})
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("Open = %v, want an error naming %s", err, missing)
	}
}

func TestOpenRejectsASeedWithMixedCurrencies(t *testing.T) {
	dir := t.TempDir()
	seedPath := filepath.Join(dir, "products.json")
	seed := `{"currency_code": "EUR", "products": [
		{"id": "a", "name": "A", "price": {"currency_code": "EUR", "units": 1}},
		{"id": "b", "name": "B", "price": {"currency_code": "USD", "units": 2}}]}`
	if err := os.WriteFile(seedPath, []byte(seed), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(context.Background(), OpenOptions{Path: filepath.Join(dir, "catalog.db"), SeedFile: seedPath})
	if err == nil || !strings.Contains(err.Error(), "USD") {
		t.Fatalf("Open = %v, want an error about the USD price", err)
	}
}

func TestResolveSeedFileSearchesParentDirectories(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(root, DefaultSeedFile)
	if err := os.WriteFile(want, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	nested := filepath.Join(root, "go_service", "cmd")
	if err := os.MkdirAll(nested, 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := ResolveSeedFile("", nested); err != nil || got != want {
		t.Errorf("ResolveSeedFile = %q, %v; want %q", got, err, want)
	}
	if got, err := ResolveSeedFile("explicit.json", nested); err != nil || got != "explicit.json" {
		t.Errorf("ResolveSeedFile with a path = %q, %v; want it unchanged", got, err)
	}
}

func TestAmountArithmeticCarriesNanos(t *testing.T) {
	price := amount{units: 24, nanos: 900_000_000}
	if got, want := price.times(3), (amount{units: 74, nanos: 700_000_000}); got != want {
		t.Errorf("24.90 x 3 = %+v, want %+v", got, want)
	}
	if got, want := price.times(999), (amount{units: 24875, nanos: 100_000_000}); got != want {
		t.Errorf("24.90 x 999 = %+v, want %+v", got, want)
	}
	if got, want := price.plus(amount{units: 1, nanos: 100_000_000}), (amount{units: 26}); got != want {
		t.Errorf("24.90 + 1.10 = %+v, want %+v", got, want)
	}
}

func TestPageTokensRejectEveryAlteration(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	tok := signToken(key, pageToken{AfterID: "sku-x", Tag: "tea"})
	got, err := verifyToken(key, tok)
	if err != nil || got != (pageToken{AfterID: "sku-x", Tag: "tea"}) {
		t.Fatalf("verifyToken(signToken) = %+v, %v", got, err)
	}
	for i := range tok {
		altered := []byte(tok)
		altered[i] ^= 0x20 // flips the case of letters; other characters become invalid
		if _, err := verifyToken(key, string(altered)); err == nil {
			t.Errorf("a token altered at byte %d verified", i)
		}
	}
	if _, err := verifyToken([]byte("another key, another catalog...."), tok); err == nil {
		t.Error("a token verified under another key")
	}
}

func TestReplicasWithTheirOwnDatabasesShareAPageTokenKey(t *testing.T) {
	ctx := context.Background()
	shared := []byte("a key every catalog replica reads, 32+ bytes")
	open := func(key []byte) *Store {
		t.Helper()
		s, err := Open(ctx, OpenOptions{Path: filepath.Join(t.TempDir(), "catalog.db"), SeedFile: testSeedFile, PageTokenKey: key})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	first, second, alone := open(shared), open(shared), open(nil)
	tok := signToken(first.tokenKey, pageToken{AfterID: "sku-x"})
	if _, err := verifyToken(second.tokenKey, tok); err != nil {
		t.Errorf("a replica rejected the other replica's token: %v", err)
	}
	// Without the shared key each database has its own: the tokens of one
	// are refused by the other, which is what breaks paging across replicas.
	if _, err := verifyToken(alone.tokenKey, tok); err == nil {
		t.Error("a catalog with its own key accepted another's token")
	}
	if _, err := Open(ctx, OpenOptions{Path: filepath.Join(t.TempDir(), "c.db"), SeedFile: testSeedFile, PageTokenKey: []byte("short")}); err == nil ||
		!strings.Contains(err.Error(), "at least 32") {
		t.Errorf("a 5-byte key: err = %v, want one naming the 32-byte minimum", err)
	}
}
