package catalog

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the pure-Go "sqlite" driver
)

// schemaVersion is stored in the meta table; bump it with a migration when the
// schema changes.
const schemaVersion = "1"

// schema is created idempotently on every start. Prices are exact: whole units
// plus nanos, as google.type.Money has them. The catalog's one currency, the
// page-token key and the seeding time live in meta.
const schema = `
CREATE TABLE IF NOT EXISTS meta (
	key   TEXT PRIMARY KEY,
	value BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS products (
	id                     TEXT PRIMARY KEY,
	name                   TEXT NOT NULL,
	description            TEXT NOT NULL,
	price_units            INTEGER NOT NULL CHECK (price_units >= 0),
	price_nanos            INTEGER NOT NULL CHECK (price_nanos BETWEEN 0 AND 999999999),
	create_time_unix_nanos INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS product_tags (
	tag        TEXT NOT NULL,
	product_id TEXT NOT NULL REFERENCES products (id),
	position   INTEGER NOT NULL,
	PRIMARY KEY (tag, product_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS product_tags_by_product ON product_tags (product_id, position);
`

// productColumns selects a product with its tags, in seed order, as a JSON
// array.
const productColumns = `p.id, p.name, p.description, p.price_units, p.price_nanos, p.create_time_unix_nanos,
	(SELECT json_group_array(tag) FROM
		(SELECT t.tag FROM product_tags t WHERE t.product_id = p.id ORDER BY t.position))`

// Product is one catalog product as the store holds it.
type Product struct {
	ID          string
	Name        string
	Description string
	Price       amount
	Tags        []string
	CreateTime  time.Time
}

// Store is the catalog's SQLite database. It is safe for concurrent use.
type Store struct {
	db       *sql.DB
	currency string // the catalog's one currency, from meta
	tokenKey []byte // signs page tokens: OpenOptions.PageTokenKey, or meta's, so tokens survive restarts
	// SeededFrom is the seed file read when Open created the database, or
	// empty when the database already existed.
	SeededFrom string

	// snap is every product, read once at Open and again whenever another
	// connection commits to the database (watch), so reads never touch
	// SQLite: the catalog has no write RPC, and its data changes only when
	// someone writes the file from outside.
	snap      atomic.Pointer[snapshot]
	stopWatch chan struct{} // closed by Close to end watch
	watchDone chan struct{} // closed when watch returns
}

// RefreshInterval is how often the store checks whether another connection
// changed the database, and reloads its in-memory snapshot if so.
const RefreshInterval = time.Second

// OpenOptions says where the database is and what to seed a new one with.
type OpenOptions struct {
	// Path is the SQLite file; it is created when missing.
	Path string
	// SeedFile is read only when the database is new. Empty means
	// DefaultSeedFile in SeedSearchDir or its nearest parent that has one.
	SeedFile string
	// SeedSearchDir is where an empty SeedFile is searched from; empty means
	// the working directory.
	SeedSearchDir string
	// Now stamps the products' create_time when seeding; nil means time.Now.
	Now func() time.Time
	// RefreshInterval is how often a change made to the database by another
	// connection is looked for; zero means RefreshInterval.
	RefreshInterval time.Duration
	// PageTokenKey, when set, signs and verifies page tokens instead of the
	// key the database was seeded with. Replicas that each seed a database of
	// their own share it, so a token one issued is good on every other; at
	// least MinPageTokenKeyBytes long.
	PageTokenKey []byte
}

// MinPageTokenKeyBytes is the shortest page-token key Open accepts.
const MinPageTokenKeyBytes = 32

// Open opens the database at opts.Path in WAL mode, creates the schema if it
// is missing and, when the database is new, seeds it from the seed file in
// one transaction. It fails, naming the file, when a new database has no
// readable seed.
func Open(ctx context.Context, opts OpenOptions) (*Store, error) {
	if opts.Path == "" {
		return nil, errors.New("open catalog database: the path is empty; set SHOP_DB_PATH")
	}
	if strings.ContainsRune(opts.Path, '?') {
		return nil, fmt.Errorf("open catalog database: the path %q contains '?', which the SQLite driver reads as options", opts.Path)
	}
	// Each pooled connection runs these pragmas when it opens. Transactions
	// take the write lock up front (_txlock=immediate): the only transaction
	// is the seeding one, and two processes opening one new file must not
	// both seed it.
	dsn := opts.Path + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(ON)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open catalog database %s: %w", opts.Path, err)
	}
	s := &Store{db: db, stopWatch: make(chan struct{}), watchDone: make(chan struct{})}
	if err := s.init(ctx, opts); err != nil {
		_ = db.Close() // the init error is the one worth reporting
		return nil, fmt.Errorf("open catalog database %s: %w", opts.Path, err)
	}
	// The version is read before the products, so a commit in between is
	// seen as a change at the first check and reloaded.
	conn, err := db.Conn(ctx)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open catalog database %s: %w", opts.Path, err)
	}
	version, err := dataVersion(ctx, conn)
	if err == nil {
		var snap *snapshot
		if snap, err = s.load(ctx); err == nil {
			s.snap.Store(snap)
		}
	}
	if err != nil {
		_ = conn.Close()
		_ = db.Close()
		return nil, fmt.Errorf("open catalog database %s: %w", opts.Path, err)
	}
	interval := opts.RefreshInterval
	if interval <= 0 {
		interval = RefreshInterval
	}
	go s.watch(conn, version, interval)
	return s, nil
}

// init creates the schema, seeds a new database and loads the meta values,
// all in one transaction.
func (s *Store) init(ctx context.Context, opts OpenOptions) (err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback() // the first error is the one worth reporting
		}
	}()
	if _, err := tx.ExecContext(ctx, schema); err != nil {
		return fmt.Errorf("create schema: %w", err)
	}
	meta, err := readMeta(ctx, tx)
	if err != nil {
		return err
	}
	if meta["schema_version"] == "" {
		if meta, err = s.seed(ctx, tx, opts); err != nil {
			return err
		}
	} else if meta["schema_version"] != schemaVersion {
		return fmt.Errorf("the database has schema version %s; this catalog understands %s", meta["schema_version"], schemaVersion)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	s.currency = meta["currency_code"]
	s.tokenKey = []byte(meta["page_token_key"])
	if s.currency == "" || len(s.tokenKey) < MinPageTokenKeyBytes {
		return errors.New("the meta table lacks the currency or the page-token key")
	}
	if opts.PageTokenKey != nil {
		if len(opts.PageTokenKey) < MinPageTokenKeyBytes {
			return fmt.Errorf("the page-token key has %d bytes; it needs at least %d", len(opts.PageTokenKey), MinPageTokenKeyBytes)
		}
		s.tokenKey = opts.PageTokenKey
	}
	return nil
}

func readMeta(ctx context.Context, tx *sql.Tx) (map[string]string, error) {
	rows, err := tx.QueryContext(ctx, `SELECT key, value FROM meta`)
	if err != nil {
		return nil, fmt.Errorf("read meta: %w", err)
	}
	defer rows.Close()
	meta := make(map[string]string)
	for rows.Next() {
		var key string
		var value []byte
		if err := rows.Scan(&key, &value); err != nil {
			return nil, fmt.Errorf("read meta: %w", err)
		}
		meta[key] = string(value)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read meta: %w", err)
	}
	return meta, nil
}

// seed fills a new database from the seed file and returns the meta values
// it wrote.
func (s *Store) seed(ctx context.Context, tx *sql.Tx, opts OpenOptions) (map[string]string, error) {
	dir := opts.SeedSearchDir
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return nil, fmt.Errorf("find the seed file: %w", err)
		}
		dir = wd
	}
	path, err := ResolveSeedFile(opts.SeedFile, dir)
	if err != nil {
		return nil, fmt.Errorf("the database is new and needs a seed: %w", err)
	}
	seed, err := LoadSeed(path)
	if err != nil {
		return nil, fmt.Errorf("the database is new and needs a seed: %w", err)
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	created := now().UTC()

	insertProduct, err := tx.PrepareContext(ctx, `INSERT INTO products
		(id, name, description, price_units, price_nanos, create_time_unix_nanos) VALUES (?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	defer insertProduct.Close()
	insertTag, err := tx.PrepareContext(ctx, `INSERT INTO product_tags (tag, product_id, position) VALUES (?, ?, ?)`)
	if err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	defer insertTag.Close()
	for _, p := range seed.Products {
		if _, err := insertProduct.ExecContext(ctx, p.ID, p.Name, p.Description, p.Price.Units, p.Price.Nanos, created.UnixNano()); err != nil {
			return nil, fmt.Errorf("seed product %s: %w", p.ID, err)
		}
		for i, tag := range p.Tags {
			if _, err := insertTag.ExecContext(ctx, tag, p.ID, i); err != nil {
				return nil, fmt.Errorf("seed product %s tag %s: %w", p.ID, tag, err)
			}
		}
	}

	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("make the page-token key: %w", err)
	}
	meta := map[string]string{
		"schema_version": schemaVersion,
		"currency_code":  seed.CurrencyCode,
		"page_token_key": string(key),
		"seeded_at":      created.Format(time.RFC3339Nano),
		"seed_file":      path,
	}
	for k, v := range meta {
		if _, err := tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, ?)`, k, []byte(v)); err != nil {
			return nil, fmt.Errorf("seed meta %s: %w", k, err)
		}
	}
	s.SeededFrom = path
	return meta, nil
}

// Close stops watching for changes and closes the database.
func (s *Store) Close() error {
	close(s.stopWatch)
	<-s.watchDone
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close catalog database: %w", err)
	}
	return nil
}

// Currency is the ISO 4217 code of every price in the catalog.
func (s *Store) Currency() string { return s.currency }

// Get returns the products with the given ids, keyed by id; unknown ids are
// absent from the map. It reads the in-memory snapshot: no database call.
func (s *Store) Get(_ context.Context, ids []string) (map[string]*Product, error) {
	snap := s.snap.Load()
	byID := make(map[string]*Product, len(ids))
	for _, id := range ids {
		if p, ok := snap.byID[id]; ok {
			byID[id] = p
		}
	}
	return byID, nil
}

// List returns up to limit products ordered by id whose id sorts after
// afterID (all when it is empty), carrying tag when it is set, and whether
// more products follow. It reads the in-memory snapshot.
func (s *Store) List(_ context.Context, tag, afterID string, limit int) ([]*Product, bool, error) {
	snap := s.snap.Load()
	// Ids compare as SQLite's BINARY collation does: byte by byte.
	start := sort.Search(len(snap.ordered), func(i int) bool { return snap.ordered[i].ID > afterID })
	var page []*Product
	for _, p := range snap.ordered[start:] {
		if tag != "" && !slices.Contains(p.Tags, tag) {
			continue
		}
		if len(page) == limit {
			return page, true, nil
		}
		page = append(page, p)
	}
	return page, false, nil
}

// snapshot is every product, read from the database in one query. It is
// never modified once published; a change replaces it whole.
type snapshot struct {
	byID    map[string]*Product
	ordered []*Product // by id, byte-wise, as SQLite's ORDER BY id
}

// load reads every product into a new snapshot.
func (s *Store) load(ctx context.Context) (*snapshot, error) {
	products, err := s.query(ctx, `SELECT `+productColumns+` FROM products p ORDER BY p.id`)
	if err != nil {
		return nil, fmt.Errorf("load products: %w", err)
	}
	snap := &snapshot{byID: make(map[string]*Product, len(products)), ordered: products}
	for _, p := range products {
		snap.byID[p.ID] = p
	}
	return snap, nil
}

// dataVersion is SQLite's PRAGMA data_version on conn: it changes when
// another connection commits to the database.
func dataVersion(ctx context.Context, conn *sql.Conn) (int64, error) {
	var v int64
	if err := conn.QueryRowContext(ctx, `PRAGMA data_version`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read data_version: %w", err)
	}
	return v, nil
}

// watch reloads the snapshot whenever the database changes, checking every
// interval on its own connection, until stop closes. A failed check or
// reload keeps the snapshot being served and is retried at the next tick.
func (s *Store) watch(conn *sql.Conn, version int64, interval time.Duration) {
	defer close(s.watchDone)
	defer conn.Close()
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	ctx := context.Background()
	for {
		select {
		case <-s.stopWatch:
			return
		case <-ticker.C:
		}
		v, err := dataVersion(ctx, conn)
		if err != nil || v == version {
			continue
		}
		snap, err := s.load(ctx)
		if err != nil {
			continue
		}
		s.snap.Store(snap)
		version = v
	}
}

func (s *Store) query(ctx context.Context, query string, args ...any) ([]*Product, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var products []*Product
	for rows.Next() {
		var (
			p         Product
			createdNs int64
			tagsJSON  string
		)
		if err := rows.Scan(&p.ID, &p.Name, &p.Description, &p.Price.units, &p.Price.nanos, &createdNs, &tagsJSON); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(tagsJSON), &p.Tags); err != nil {
			return nil, fmt.Errorf("product %s tags: %w", p.ID, err)
		}
		p.CreateTime = time.Unix(0, createdNs).UTC()
		products = append(products, &p)
	}
	return products, rows.Err()
}
