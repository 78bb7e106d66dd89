package inventory

import (
	"context"
	"database/sql"
	"log/slog"
	"sync"
	"time"
)

// DefaultPollInterval is how often the hub looks for commits made by other
// processes while anyone watches.
const DefaultPollInterval = 150 * time.Millisecond

// hub wakes WatchStock streams when stock they watch may have changed.
// Changes this process makes arrive from the Store right after each commit,
// for the SKUs they touched. Changes another process makes on the same file
// (a second implementation during a live swap) are found by polling PRAGMA
// data_version on a dedicated connection; then every stream is woken. A woken
// stream re-reads its SKUs and sends only the levels that differ from what it
// last sent, so a spurious wake sends nothing.
type hub struct {
	store        *Store
	log          *slog.Logger
	pollInterval time.Duration
	// mu guards subs and closed.
	mu     sync.Mutex
	subs   map[*subscription]struct{}
	closed bool
}

// subscription is one open WatchStock stream.
type subscription struct {
	// skus are the watched SKUs, each once, in the order first asked.
	skus    []string
	watched map[string]bool
	// wake holds a token while the stream has levels to re-read.
	wake chan struct{}
	// done closes when the hub shuts down: the stream must end.
	done chan struct{}
}

func newHub(store *Store, log *slog.Logger, pollInterval time.Duration) *hub {
	if pollInterval <= 0 {
		pollInterval = DefaultPollInterval
	}
	return &hub{store: store, log: log, pollInterval: pollInterval, subs: make(map[*subscription]struct{})}
}

// subscribe adds a stream watching skus. It returns false once the hub has
// shut down.
func (h *hub) subscribe(skus []string) (*subscription, bool) {
	sub := &subscription{
		watched: make(map[string]bool, len(skus)),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	for _, sku := range skus {
		if !sub.watched[sku] {
			sub.watched[sku] = true
			sub.skus = append(sub.skus, sku)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, false
	}
	h.subs[sub] = struct{}{}
	return sub, true
}

func (h *hub) unsubscribe(sub *subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs, sub)
}

// len is the number of open watches.
func (h *hub) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

func (s *subscription) signal() {
	select {
	case s.wake <- struct{}{}:
	default: // a wake is already pending; it will read the latest levels
	}
}

// localChange wakes the streams watching any of skus. The Store calls it
// after each commit of this process.
func (h *hub) localChange(skus []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for sub := range h.subs {
		for _, sku := range skus {
			if sub.watched[sku] {
				sub.signal()
				break
			}
		}
	}
}

func (h *hub) wakeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for sub := range h.subs {
		sub.signal()
	}
}

// run listens for this process's commits and polls for other processes'
// until ctx is done, then ends every stream and refuses new ones.
func (h *hub) run(ctx context.Context) {
	stopListening := h.store.OnChange(h.localChange)
	defer func() {
		stopListening()
		h.mu.Lock()
		defer h.mu.Unlock()
		h.closed = true
		for sub := range h.subs {
			close(sub.done)
			delete(h.subs, sub)
		}
	}()

	// conn is the dedicated connection data_version is read on, opened when
	// first needed and kept: the value only means something per connection.
	var conn *sql.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close() // it only read; nothing to lose
		}
	}()
	var last int64
	known := false // whether last holds a value read while someone watched
	ticker := time.NewTicker(h.pollInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		if h.len() == 0 {
			known = false
			continue
		}
		if conn == nil {
			c, err := h.store.dataVersionConn(ctx)
			if err != nil {
				if ctx.Err() == nil {
					h.log.Error("watch poll failed", "error", err.Error())
				}
				continue
			}
			conn = c
		}
		v, err := dataVersion(ctx, conn)
		if err != nil {
			if ctx.Err() == nil {
				h.log.Error("watch poll failed", "error", err.Error())
			}
			continue
		}
		if !known || v != last {
			last, known = v, true
			h.wakeAll()
		}
	}
}
