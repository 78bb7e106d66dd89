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
package inventory

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
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

// State is a reservation's state as the database spells it.
type State string

// The reservation states of the schema's CHECK constraint.
const (
	StateReserved  State = "RESERVED"
	StateCommitted State = "COMMITTED"
	StateReleased  State = "RELEASED"
	StateExpired   State = "EXPIRED"
)

// Level is one SKU's stock. UpdateTime is in Unix milliseconds.
type Level struct {
	SKU        string
	OnHand     int64
	Reserved   int64
	UpdateTime int64
}

// Line is one SKU and quantity of a reservation.
type Line struct {
	SKU      string
	Quantity int64
}

// Reservation is one reservation as stored. Times are Unix milliseconds;
// Lines has one line per SKU, ordered by SKU.
type Reservation struct {
	ID         string
	RequestID  string
	State      State
	CreateTime int64
	ExpireTime int64
	Lines      []Line
}

// ImportItem is one item of a stock import.
type ImportItem struct {
	SKU    string
	OnHand int64
}

// ImportSummary counts what an applied import did.
type ImportSummary struct {
	Created int // SKUs that did not exist before
	Updated int // existing SKUs whose on_hand was set
}

// Store is the inventory database. It is safe for concurrent use, and other
// processes may use the same file at the same time.
type Store struct {
	db  *sql.DB
	now func() time.Time
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
	// takes the database's write lock before it reads anything.
	dsn := opts.Path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(" + strconv.Itoa(busyTimeoutMillis) +
		")&_pragma=foreign_keys(ON)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open inventory database %s: %w", opts.Path, err)
	}
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
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error {
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

// expireDueIn expires every reservation in state RESERVED whose expire_time
// is at or before now and returns its stock, as the schema requires of every
// write transaction. It returns how many it expired.
func expireDueIn(ctx context.Context, w *writeTx) (int, error) {
	ids, err := queryStrings(ctx, w, `SELECT reservation_id FROM reservations WHERE state = 'RESERVED' AND expire_time <= ?`, w.now)
	if err != nil {
		return 0, fmt.Errorf("find overdue reservations: %w", err)
	}
	for _, id := range ids {
		lines, err := loadLines(ctx, w, id)
		if err != nil {
			return 0, err
		}
		if err := returnStock(ctx, w, lines); err != nil {
			return 0, err
		}
		if err := setState(ctx, w, id, StateExpired); err != nil {
			return 0, err
		}
	}
	return len(ids), nil
}

// ExpireDue expires every overdue reservation and returns how many it
// expired. It takes the write lock only when there is something to expire.
func (s *Store) ExpireDue(ctx context.Context) (int, error) {
	var due int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM reservations WHERE state = 'RESERVED' AND expire_time <= ?`,
		s.now().UnixMilli()).Scan(&due); err != nil {
		return 0, fmt.Errorf("count overdue reservations: %w", err)
	}
	if due == 0 {
		return 0, nil
	}
	var expired int
	err := s.write(ctx, func(w *writeTx) error {
		expired = w.expired // write expires them before calling this
		return nil
	})
	return expired, err
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// ReadStock returns the stored levels of the SKUs that exist, without
// expiring anything.
func (s *Store) ReadStock(ctx context.Context, skus []string) (map[string]Level, error) {
	return readStock(ctx, s.db, skus)
}

func readStock(ctx context.Context, q querier, skus []string) (map[string]Level, error) {
	var distinct skuSet
	for _, sku := range skus {
		distinct.add(sku)
	}
	found := make(map[string]Level, len(distinct.order))
	for chunk := range slices.Chunk(distinct.order, readChunk) {
		args := make([]any, len(chunk))
		for i, sku := range chunk {
			args[i] = sku
		}
		rows, err := q.QueryContext(ctx, `SELECT sku, on_hand, reserved, update_time FROM stock WHERE sku IN (?`+
			strings.Repeat(", ?", len(chunk)-1)+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("read stock: %w", err)
		}
		for rows.Next() {
			var l Level
			if err := rows.Scan(&l.SKU, &l.OnHand, &l.Reserved, &l.UpdateTime); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read stock: %w", err)
			}
			found[l.SKU] = l
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("read stock: %w", err)
		}
	}
	return found, nil
}

// GetStock returns the current levels of skus, in the order asked, after
// expiring overdue reservations, so a level never counts stock whose time has
// run out. Unknown SKUs are NOT_FOUND, reason SKU_NOT_FOUND, naming each.
func (s *Store) GetStock(ctx context.Context, skus []string) ([]Level, error) {
	if _, err := s.ExpireDue(ctx); err != nil {
		return nil, err
	}
	found, err := s.ReadStock(ctx, skus)
	if err != nil {
		return nil, err
	}
	var missing skuSet
	for _, sku := range skus {
		if _, ok := found[sku]; !ok {
			missing.add(sku)
		}
	}
	if len(missing.order) > 0 {
		return nil, skuNotFound(missing.order)
	}
	levels := make([]Level, len(skus))
	for i, sku := range skus {
		levels[i] = found[sku]
	}
	return levels, nil
}

// MergeLines adds up the lines of each SKU and orders them by SKU in UTF-8
// byte order (Go's string order, and SQLite's BINARY collation).
func MergeLines(lines []Line) []Line {
	totals := make(map[string]int64, len(lines))
	for _, l := range lines {
		totals[l.SKU] += l.Quantity
	}
	merged := make([]Line, 0, len(totals))
	for sku, q := range totals {
		merged = append(merged, Line{SKU: sku, Quantity: q})
	}
	slices.SortFunc(merged, func(a, b Line) int { return strings.Compare(a.SKU, b.SKU) })
	return merged
}

// Fingerprint is the request fingerprint the schema defines over merged
// lines: the lowercase hex SHA-256 of "<byte length>:<sku>:<quantity>;" per
// line.
func Fingerprint(merged []Line) string {
	var b strings.Builder
	for _, l := range merged {
		fmt.Fprintf(&b, "%d:%s:%d;", len(l.SKU), l.SKU, l.Quantity)
	}
	sum := sha256.Sum256([]byte(b.String()))
	return hex.EncodeToString(sum[:])
}

// Reserve reserves lines (merged per SKU) for requestID, all or nothing, for
// ttl. A retry with the same lines returns the stored reservation, whatever
// its state now; a retry with other lines is ALREADY_EXISTS, reason
// REQUEST_ID_REUSED.
func (s *Store) Reserve(ctx context.Context, requestID string, lines []Line, ttl time.Duration) (*Reservation, error) {
	merged := MergeLines(lines)
	fp := Fingerprint(merged)
	var out *Reservation
	err := s.write(ctx, func(w *writeTx) error {
		existing, err := findReservation(ctx, w, `request_id`, requestID)
		if err != nil {
			return err
		}
		if existing != nil {
			if existing.fingerprint != fp {
				return reject(businessError(reasonRequestIDReused,
					fmt.Sprintf("request_id %q was already used for a reservation with different lines; send a new request_id for a new reservation.", requestID), nil))
			}
			out = &existing.Reservation
			return nil
		}
		skus := make([]string, len(merged))
		for i, l := range merged {
			skus[i] = l.SKU
		}
		levels, err := readStock(ctx, w, skus)
		if err != nil {
			return err
		}
		var missing []string
		for _, l := range merged {
			if _, ok := levels[l.SKU]; !ok {
				missing = append(missing, l.SKU)
			}
		}
		if len(missing) > 0 {
			return reject(skuNotFound(missing))
		}
		var short, detail []string
		for _, l := range merged {
			lv := levels[l.SKU]
			if available := lv.OnHand - lv.Reserved; available < l.Quantity {
				short = append(short, l.SKU)
				detail = append(detail, fmt.Sprintf("%s (asked %d, available %d)", l.SKU, l.Quantity, available))
			}
		}
		if len(short) > 0 {
			return reject(businessError(reasonOutOfStock,
				fmt.Sprintf("Not enough stock to reserve: %s; nothing was reserved.", strings.Join(detail, ", ")),
				map[string]string{"skus": strings.Join(short, ",")}))
		}
		r := &Reservation{
			ID:         uuid.NewString(),
			RequestID:  requestID,
			State:      StateReserved,
			CreateTime: w.now,
			ExpireTime: w.now + ttl.Milliseconds(),
			Lines:      merged,
		}
		if _, err := w.ExecContext(ctx, `INSERT INTO reservations
			(reservation_id, request_id, fingerprint, state, create_time, expire_time, update_time)
			VALUES (?, ?, ?, 'RESERVED', ?, ?, ?)`, r.ID, requestID, fp, w.now, r.ExpireTime, w.now); err != nil {
			return fmt.Errorf("insert reservation: %w", err)
		}
		for _, l := range merged {
			if _, err := w.ExecContext(ctx, `INSERT INTO reservation_lines (reservation_id, sku, quantity) VALUES (?, ?, ?)`,
				r.ID, l.SKU, l.Quantity); err != nil {
				return fmt.Errorf("insert reservation line: %w", err)
			}
			if _, err := w.ExecContext(ctx, `UPDATE stock SET reserved = reserved + ?, update_time = ? WHERE sku = ?`,
				l.Quantity, w.now, l.SKU); err != nil {
				return fmt.Errorf("hold stock: %w", err)
			}
			w.changed.add(l.SKU)
		}
		out = r
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Commit turns a reservation into a permanent decrement of on_hand;
// committing a committed reservation returns it unchanged.
func (s *Store) Commit(ctx context.Context, reservationID string) (*Reservation, error) {
	return s.settle(ctx, reservationID, StateCommitted)
}

// Release cancels a reservation and returns its stock; releasing a released
// reservation returns it unchanged.
func (s *Store) Release(ctx context.Context, reservationID string) (*Reservation, error) {
	return s.settle(ctx, reservationID, StateReleased)
}

// settle moves a reservation in state RESERVED to to (COMMITTED or
// RELEASED).
func (s *Store) settle(ctx context.Context, reservationID string, to State) (*Reservation, error) {
	var out *Reservation
	err := s.write(ctx, func(w *writeTx) error {
		row, err := findReservation(ctx, w, `reservation_id`, reservationID)
		if err != nil {
			return err
		}
		if row == nil {
			return reject(businessError(reasonReservationNotFound, fmt.Sprintf("No reservation has the id %s.", reservationID), nil))
		}
		r := row.Reservation
		switch {
		case r.State == to:
			out = &r
			return nil
		case r.State == StateExpired:
			return reject(businessError(reasonReservationExpired, fmt.Sprintf(
				"Reservation %s expired before it was committed and its stock was returned; reserve again.", reservationID), nil))
		case r.State == StateReleased: // and to is COMMITTED
			return reject(businessError(reasonReservationReleased, fmt.Sprintf(
				"Reservation %s was released and can no longer be committed; reserve again.", reservationID), nil))
		case r.State == StateCommitted: // and to is RELEASED
			return reject(businessError(reasonReservationCommitted, fmt.Sprintf(
				"Reservation %s was committed and can no longer be released.", reservationID), nil))
		}
		if to == StateCommitted {
			for _, l := range r.Lines {
				if _, err := w.ExecContext(ctx, `UPDATE stock SET on_hand = on_hand - ?, reserved = reserved - ?, update_time = ? WHERE sku = ?`,
					l.Quantity, l.Quantity, w.now, l.SKU); err != nil {
					return fmt.Errorf("take stock: %w", err)
				}
				w.changed.add(l.SKU)
			}
		} else if err := returnStock(ctx, w, r.Lines); err != nil {
			return err
		}
		if err := setState(ctx, w, reservationID, to); err != nil {
			return err
		}
		r.State = to
		out = &r
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ImportStock sets on_hand for every item in one transaction, creating SKUs
// that do not exist; a later item for the same SKU wins. An item whose
// on_hand is below the units reserved for its SKU fails the whole import
// with INVALID_ARGUMENT naming the item's index, and nothing is applied.
func (s *Store) ImportStock(ctx context.Context, items []ImportItem) (ImportSummary, error) {
	var summary ImportSummary
	err := s.write(ctx, func(w *writeTx) error {
		skus := make([]string, len(items))
		for i, it := range items {
			skus[i] = it.SKU
		}
		levels, err := readStock(ctx, w, skus)
		if err != nil {
			return err
		}
		var problems []violation
		for i, it := range items {
			if lv, ok := levels[it.SKU]; ok && it.OnHand < lv.Reserved {
				problems = append(problems, violation{
					field:       fmt.Sprintf("items[%d].on_hand", i),
					description: fmt.Sprintf("must not be below the %d units reserved for %s", lv.Reserved, it.SKU),
				})
			}
		}
		if len(problems) > 0 {
			return reject(invalidArgument(problems))
		}
		var order skuSet
		final := make(map[string]int64, len(items))
		for _, it := range items {
			order.add(it.SKU)
			final[it.SKU] = it.OnHand
		}
		for _, sku := range order.order {
			onHand := final[sku]
			if _, ok := levels[sku]; ok {
				summary.Updated++
				res, err := w.ExecContext(ctx, `UPDATE stock SET on_hand = ?, update_time = ? WHERE sku = ? AND on_hand <> ?`,
					onHand, w.now, sku, onHand)
				if err != nil {
					return fmt.Errorf("set on_hand of %s: %w", sku, err)
				}
				if n, err := res.RowsAffected(); err == nil && n > 0 {
					w.changed.add(sku)
				}
				continue
			}
			summary.Created++
			if _, err := w.ExecContext(ctx, `INSERT INTO stock (sku, on_hand, reserved, update_time) VALUES (?, ?, 0, ?)`,
				sku, onHand, w.now); err != nil {
				return fmt.Errorf("create %s: %w", sku, err)
			}
			w.changed.add(sku)
		}
		return nil
	})
	if err != nil {
		return ImportSummary{}, err
	}
	return summary, nil
}

// reservationRow is a reservation with its stored fingerprint.
type reservationRow struct {
	Reservation
	fingerprint string
}

// findReservation loads the reservation whose column (reservation_id or
// request_id) is value, or returns nil when there is none.
func findReservation(ctx context.Context, w *writeTx, column, value string) (*reservationRow, error) {
	var r reservationRow
	err := w.QueryRowContext(ctx, `SELECT reservation_id, request_id, fingerprint, state, create_time, expire_time
		FROM reservations WHERE `+column+` = ?`, value).
		Scan(&r.ID, &r.RequestID, &r.fingerprint, &r.State, &r.CreateTime, &r.ExpireTime)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("find reservation: %w", err)
	}
	if r.Lines, err = loadLines(ctx, w, r.ID); err != nil {
		return nil, err
	}
	return &r, nil
}

// loadLines returns a reservation's lines ordered by SKU (BINARY collation:
// UTF-8 byte order).
func loadLines(ctx context.Context, w *writeTx, reservationID string) ([]Line, error) {
	rows, err := w.QueryContext(ctx, `SELECT sku, quantity FROM reservation_lines WHERE reservation_id = ? ORDER BY sku`, reservationID)
	if err != nil {
		return nil, fmt.Errorf("load reservation lines: %w", err)
	}
	defer rows.Close()
	var lines []Line
	for rows.Next() {
		var l Line
		if err := rows.Scan(&l.SKU, &l.Quantity); err != nil {
			return nil, fmt.Errorf("load reservation lines: %w", err)
		}
		lines = append(lines, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load reservation lines: %w", err)
	}
	return lines, nil
}

func returnStock(ctx context.Context, w *writeTx, lines []Line) error {
	for _, l := range lines {
		if _, err := w.ExecContext(ctx, `UPDATE stock SET reserved = reserved - ?, update_time = ? WHERE sku = ?`,
			l.Quantity, w.now, l.SKU); err != nil {
			return fmt.Errorf("return stock: %w", err)
		}
		w.changed.add(l.SKU)
	}
	return nil
}

func setState(ctx context.Context, w *writeTx, reservationID string, state State) error {
	if _, err := w.ExecContext(ctx, `UPDATE reservations SET state = ?, update_time = ? WHERE reservation_id = ?`,
		string(state), w.now, reservationID); err != nil {
		return fmt.Errorf("set reservation state: %w", err)
	}
	return nil
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
