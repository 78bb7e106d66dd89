// Reservations: Reserve, Commit and Release, each one BEGIN IMMEDIATE
// transaction over the tables data/inventory_schema.sql lays out, with the
// request fingerprint that schema defines for idempotent Reserve calls.

package inventory

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
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
