// Stock: the levels GetStock reads, the items ImportStock sets, and the
// expiry of overdue reservations that every write (and the sweeper) runs
// first, as data/inventory_schema.sql requires.

package inventory

import (
	"context"
	"fmt"
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
	var expired int
	err := s.write(ctx, func(w *writeTx) error {
		expired = w.expired // write expires them before calling this
		return nil
	})
	return expired, err
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
