// Package inventory implements shop.inventory.v1.InventoryService on SQLite,
// the same contract and the same database layout as the Node and Python
// implementations, so any of them can take over a running service.
//
// All state lives in the database, laid out by the shared
// data/inventory_schema.sql, which Open applies. Two implementations may run
// on one database file at once (a live swap or a canary), so nothing is cached
// in memory: every write is one BEGIN IMMEDIATE transaction that first expires
// overdue reservations, and WatchStock learns of other processes' commits by
// polling PRAGMA data_version.
//
// The Store is written in three files: store.go opens, migrates and seeds the
// database and runs every write transaction and its change notices;
// reservations.go holds Reserve, Commit and Release; stock.go holds GetStock,
// ImportStock and the expiry of overdue reservations.
package inventory

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/polyglot-shop/shop/go_service/internal/repofile"
)

const (
	// SchemaVersion is the meta schema_version this code reads and writes.
	SchemaVersion = 1
	// DefaultSchemaFile is the shared schema, relative to the repository root.
	DefaultSchemaFile = "data/inventory_schema.sql"
	// DefaultSeedFile is the product list, relative to the repository root.
	DefaultSeedFile = "data/products.json"
	// busyTimeoutMillis is how long a connection waits for another writer
	// (another process) before SQLITE_BUSY; the schema fixes it.
	busyTimeoutMillis = 5000
	// readChunk bounds the SKUs of one SELECT ... IN (...).
	readChunk = 500
)

// Store is the inventory database. It is safe for concurrent use, and other
// processes may use the same file at the same time.
type Store struct {
	db  *sql.DB
	now func() time.Time
	// readOne is levelsSQL(1), prepared once: GetStock's common read. The
	// pool prepares it on each connection once and keeps it.
	readOne *sql.Stmt
	// writeSlot holds one token. A write takes it before BEGIN IMMEDIATE, so
	// this process's writers queue here, each honouring its own context,
	// rather than polling in SQLite's busy handler; busy_timeout still waits
	// for writers in other processes.
	writeSlot chan struct{}
	// mu guards listeners.
	mu        sync.Mutex
	listeners map[int]func(skus []string)
	nextID    int
	// SeededFrom is the seed file read when Open created the database, or
	// empty when the database already existed.
	SeededFrom string
	// SchemaFile is the schema file Open applied.
	SchemaFile string
}

// OpenOptions says where the database, the schema and the seed are.
type OpenOptions struct {
	// Path is the SQLite file; it is created when missing.
	Path string
	// SchemaFile is the shared schema; empty means DefaultSchemaFile in
	// SearchDir or its nearest parent that has one.
	SchemaFile string
	// SeedFile is read only when the database is new; empty means
	// DefaultSeedFile searched for like SchemaFile.
	SeedFile string
	// SearchDir is where empty file names are searched from; empty means the
	// working directory.
	SearchDir string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Open opens the database at opts.Path (WAL, busy_timeout, foreign keys on
// every connection) and applies the schema file inside BEGIN IMMEDIATE. A new
// database (no schema_version in meta) gets schema_version 1 and stock seeded
// from the seed file in that same transaction. A database with a newer
// schema_version is refused.
func Open(ctx context.Context, opts OpenOptions) (*Store, error) {
	if opts.Path == "" {
		return nil, errors.New("open inventory database: the path is empty; set SHOP_DB_PATH")
	}
	if strings.ContainsRune(opts.Path, '?') {
		return nil, fmt.Errorf("open inventory database: the path %q contains '?', which the SQLite driver reads as options", opts.Path)
	}
	schemaFile, err := repofile.Resolve(opts.SchemaFile, DefaultSchemaFile, opts.SearchDir, "SHOP_INVENTORY_SCHEMA")
	if err != nil {
		return nil, fmt.Errorf("open inventory database: %w", err)
	}
	schema, err := os.ReadFile(schemaFile)
	if err != nil {
		return nil, fmt.Errorf("open inventory database: read the schema: %w", err)
	}
	// Every pooled connection runs these pragmas when it opens, as the
	// schema asks; every transaction is BEGIN IMMEDIATE (_txlock), so a write
	// takes the database's write lock before it reads anything. synchronous
	// is FULL, said rather than left to the driver's build: every commit
	// fsyncs the write-ahead log, as in the Node and Python implementations.
	dsn := opts.Path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(" +
		strconv.Itoa(busyTimeoutMillis) + ")&_pragma=foreign_keys(ON)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open inventory database %s: %w", opts.Path, err)
	}
	// The pool keeps as many idle connections as there are calls reading
	// at once (the server's stream workers, 4 per CPU) and a writer: with
	// database/sql's default of 2, reads under load closed connections and
	// opened new ones, each with its pragmas, its prepared read and a cold
	// page cache, in the middle of a call (docs/performance.md, P6).
	db.SetMaxIdleConns(4*runtime.GOMAXPROCS(0) + 1)
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	s := &Store{
		db:         db,
		now:        now,
		writeSlot:  make(chan struct{}, 1),
		listeners:  make(map[int]func([]string)),
		SchemaFile: schemaFile,
	}
	if err := s.migrate(ctx, string(schema), opts); err != nil {
		_ = db.Close() // the migration error is the one worth reporting
		return nil, fmt.Errorf("open inventory database %s: %w", opts.Path, err)
	}
	if s.readOne, err = db.PrepareContext(ctx, levelsSQL(1)); err != nil {
		_ = db.Close() // the prepare error is the one worth reporting
		return nil, fmt.Errorf("open inventory database %s: prepare the stock read: %w", opts.Path, err)
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error {
	_ = s.readOne.Close() // closing the database below finalizes it anyway
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close inventory database: %w", err)
	}
	return nil
}

func (s *Store) migrate(ctx context.Context, schema string, opts OpenOptions) (err error) {
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
		return fmt.Errorf("apply the schema: %w", err)
	}
	var version string
	err = tx.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'schema_version'`).Scan(&version)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if err := s.seed(ctx, tx, opts); err != nil {
			return err
		}
	case err != nil:
		return fmt.Errorf("read schema_version: %w", err)
	default:
		n, convErr := strconv.Atoi(version)
		if convErr != nil || n > SchemaVersion {
			return fmt.Errorf("the database has schema_version %q; this service understands %d", version, SchemaVersion)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// seedProduct is what the inventory reads of a data/products.json product.
type seedProduct struct {
	ID           string `json:"id"`
	InitialStock *int64 `json:"initial_stock"`
}

func (s *Store) seed(ctx context.Context, tx *sql.Tx, opts OpenOptions) error {
	path, err := repofile.Resolve(opts.SeedFile, DefaultSeedFile, opts.SearchDir, "SHOP_SEED_FILE")
	if err != nil {
		return fmt.Errorf("the database is new and needs a seed: %w", err)
	}
	products, err := readSeed(path)
	if err != nil {
		return fmt.Errorf("the database is new and needs a seed: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('schema_version', ?)`, strconv.Itoa(SchemaVersion)); err != nil {
		return fmt.Errorf("write schema_version: %w", err)
	}
	now := s.now().UnixMilli()
	for _, p := range products {
		if _, err := tx.ExecContext(ctx, `INSERT INTO stock (sku, on_hand, reserved, update_time) VALUES (?, ?, 0, ?)`,
			p.ID, *p.InitialStock, now); err != nil {
			return fmt.Errorf("seed %s: %w", p.ID, err)
		}
	}
	s.SeededFrom = path
	return nil
}

// readSeed reads the products of a seed file; each needs a non-empty id and
// a whole initial_stock of 0 or more.
func readSeed(path string) ([]seedProduct, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read seed file: %w", err)
	}
	var seed struct {
		Products []seedProduct `json:"products"`
	}
	if err := json.Unmarshal(data, &seed); err != nil {
		return nil, fmt.Errorf("parse seed file %s: %w", path, err)
	}
	if seed.Products == nil {
		return nil, fmt.Errorf("seed file %s: \"products\" must be an array", path)
	}
	for i, p := range seed.Products {
		if p.ID == "" || p.InitialStock == nil || *p.InitialStock < 0 {
			return nil, fmt.Errorf("seed file %s: products[%d] needs a string id and a whole initial_stock of 0 or more", path, i)
		}
	}
	return seed.Products, nil
}

// OnChange registers fn to hear, after each committed write of this Store,
// the SKUs whose stock it changed. It returns the function that removes fn.
// fn must not block.
func (s *Store) OnChange(fn func(skus []string)) (remove func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.nextID
	s.nextID++
	s.listeners[id] = fn
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.listeners, id)
	}
}

func (s *Store) notify(changed skuSet) {
	if len(changed.order) == 0 {
		return
	}
	s.mu.Lock()
	fns := make([]func([]string), 0, len(s.listeners))
	for _, fn := range s.listeners {
		fns = append(fns, fn)
	}
	s.mu.Unlock()
	for _, fn := range fns {
		fn(changed.order)
	}
}

// dataVersionConn returns a dedicated connection for polling PRAGMA
// data_version, whose value moves whenever another connection (another
// process, or another connection of this pool) commits. The caller closes it.
func (s *Store) dataVersionConn(ctx context.Context) (*sql.Conn, error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("open a data_version connection: %w", err)
	}
	return conn, nil
}

// dataVersion reads PRAGMA data_version on conn.
func dataVersion(ctx context.Context, conn *sql.Conn) (int64, error) {
	var v int64
	if err := conn.QueryRowContext(ctx, `PRAGMA data_version`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read data_version: %w", err)
	}
	return v, nil
}

// skuSet is a set of SKUs that remembers the order they were added in.
type skuSet struct {
	seen  map[string]bool
	order []string
}

func (c *skuSet) add(sku string) {
	if c.seen == nil {
		c.seen = make(map[string]bool)
	}
	if !c.seen[sku] {
		c.seen[sku] = true
		c.order = append(c.order, sku)
	}
}

// rejected is a failure for the client that a write function returns: the
// transaction still commits, keeping the expiries made on the way, and err,
// a status error, goes to the client.
type rejected struct{ err error }

func (r rejected) Error() string { return r.err.Error() }

func reject(err error) error { return rejected{err} }

// writeTx is one write transaction in progress.
type writeTx struct {
	*sql.Tx
	// now is the transaction's time, in Unix milliseconds.
	now int64
	// changed collects the SKUs whose stock the transaction changes.
	changed skuSet
	// expired is how many overdue reservations the transaction expired
	// before running the write's own work.
	expired int
}

// write runs fn in one BEGIN IMMEDIATE transaction, after expiring overdue
// reservations. When fn returns a rejection the transaction commits and the
// rejection's error is returned; any other error rolls it back. Listeners
// hear about the changed SKUs after the commit.
func (s *Store) write(ctx context.Context, fn func(w *writeTx) error) error {
	select {
	case s.writeSlot <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.writeSlot }()

	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin immediate: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = tx.Rollback() // the first error is the one worth reporting
		}
	}()
	w := &writeTx{Tx: tx, now: s.now().UnixMilli()}
	if w.expired, err = expireDueIn(ctx, w); err != nil {
		return err
	}
	fnErr := fn(w)
	var r rejected
	if fnErr != nil && !errors.As(fnErr, &r) {
		return fnErr
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	committed = true
	s.notify(w.changed)
	if fnErr != nil {
		return r.err
	}
	return nil
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func queryStrings(ctx context.Context, q querier, query string, args ...any) ([]string, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// isBusy reports whether err is SQLite's "database is busy/locked": another
// writer held the lock past busy_timeout. The call can be retried.
func isBusy(err error) bool {
	var e *sqlite.Error
	if !errors.As(err, &e) {
		return false
	}
	code := e.Code() & 0xff // the primary code of an extended one
	return code == sqlite3.SQLITE_BUSY || code == sqlite3.SQLITE_LOCKED
}
