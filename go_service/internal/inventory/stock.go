// Stock: the levels GetStock reads, the items ImportStock sets, and the
// expiry of overdue reservations that every write (and the sweeper) runs
// first, as data/inventory_schema.sql requires.

package inventory

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"slices"
	"strings"
)

// Level is one SKU's stock. UpdateTime is in Unix milliseconds.
type Level struct {
	SKU        string
	OnHand     int64
	Reserved   int64
	UpdateTime int64
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
	return s.expireDue(ctx)
}

// expireDue expires every overdue reservation in one write transaction.
func (s *Store) expireDue(ctx context.Context) (int, error) {
	var expired int
	err := s.write(ctx, func(w *writeTx) error {
		expired = w.expired // write expires them before calling this
		return nil
	})
	return expired, err
}

// noExpiry is the next expiry when no reservation is RESERVED.
const noExpiry = math.MaxInt64

// levelsSQL reads the levels of n SKUs and, in each row, the next expiry:
// the earliest expire_time among RESERVED reservations, or NULL when there
// is none. Both come from one statement, so from one snapshot of the file:
// the levels count exactly the reservations whose earliest deadline is that
// next expiry, whichever process wrote them. The subquery does not depend on
// the row, so SQLite runs it once per statement, and it is one seek in the
// reservations_state_expire_time index.
func levelsSQL(n int) string {
	return `SELECT sku, on_hand, reserved, update_time,
		(SELECT min(expire_time) FROM reservations WHERE state = 'RESERVED')
		FROM stock WHERE sku IN (?` + strings.Repeat(", ?", n-1) + `)`
}

// ReadStock returns the stored levels of the SKUs that exist, without
// expiring anything.
func (s *Store) ReadStock(ctx context.Context, skus []string) (map[string]Level, error) {
	found, _, err := s.readLevels(ctx, s.db, skus)
	return found, err
}

func readStock(ctx context.Context, q querier, skus []string) (map[string]Level, error) {
	found, _, err := readLevels(ctx, q, nil, skus)
	return found, err
}

// readLevels reads the levels of skus that exist, and the next expiry as
// the snapshot of each read saw it (the earliest over the reads when skus
// need more than one), noExpiry when no reservation is RESERVED or no SKU
// exists. One SKU, the common read, runs the statement prepared when the
// store opened.
func (s *Store) readLevels(ctx context.Context, q querier, skus []string) (map[string]Level, int64, error) {
	return readLevels(ctx, q, s.readOne, skus)
}

func readLevels(ctx context.Context, q querier, one *sql.Stmt, skus []string) (map[string]Level, int64, error) {
	var distinct skuSet
	for _, sku := range skus {
		distinct.add(sku)
	}
	found := make(map[string]Level, len(distinct.order))
	next := int64(noExpiry)
	for chunk := range slices.Chunk(distinct.order, readChunk) {
		args := make([]any, len(chunk))
		for i, sku := range chunk {
			args[i] = sku
		}
		var rows *sql.Rows
		var err error
		if len(chunk) == 1 && one != nil {
			// The common read runs without the call's cancellation: with a
			// context that can be cancelled, database/sql and the driver
			// each start a goroutine per query to watch it, which cost
			// more CPU than the read (docs/performance.md, P6). A read in
			// WAL mode does not wait for writers, so it is checked once,
			// here, instead.
			if err := ctx.Err(); err != nil {
				return nil, 0, err
			}
			rows, err = one.QueryContext(context.WithoutCancel(ctx), args...)
		} else {
			rows, err = q.QueryContext(ctx, levelsSQL(len(chunk)), args...)
		}
		if err != nil {
			return nil, 0, fmt.Errorf("read stock: %w", err)
		}
		for rows.Next() {
			var l Level
			var expiry sql.NullInt64
			if err := rows.Scan(&l.SKU, &l.OnHand, &l.Reserved, &l.UpdateTime, &expiry); err != nil {
				rows.Close()
				return nil, 0, fmt.Errorf("read stock: %w", err)
			}
			found[l.SKU] = l
			if expiry.Valid {
				next = min(next, expiry.Int64)
			}
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, 0, fmt.Errorf("read stock: %w", err)
		}
	}
	return found, next, nil
}

// GetStock returns the current levels of skus, in the order asked. A level
// never counts stock whose time has run out: when the next expiry read with
// the levels is at or before now, GetStock expires the overdue reservations
// (a write) and reads again; otherwise the levels are exact as read, and the
// read is one query with no write. Unknown SKUs are NOT_FOUND, reason
// SKU_NOT_FOUND, naming each.
func (s *Store) GetStock(ctx context.Context, skus []string) ([]Level, error) {
	var found map[string]Level
	for {
		var next int64
		var err error
		if found, next, err = s.readLevels(ctx, s.db, skus); err != nil {
			return nil, err
		}
		// now is taken after the read, so every reservation the levels
		// count has a deadline after the moment they were read.
		if next > s.now().UnixMilli() {
			break
		}
		if _, err := s.expireDue(ctx); err != nil {
			return nil, err
		}
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
