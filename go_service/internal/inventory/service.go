package inventory

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/polyglot-shop/shop/go_service/gen/shop/inventory/v1"
)

// DefaultReservationTTL is SHOP_RESERVATION_TTL_SECONDS's default.
const DefaultReservationTTL = 900 * time.Second

// Options tune a Server; the zero value of each field means its default.
type Options struct {
	// ReservationTTL is how long an uncommitted reservation lives.
	ReservationTTL time.Duration
	// PollInterval is how often WatchStock looks for other processes'
	// commits (DefaultPollInterval).
	PollInterval time.Duration
	// SweepInterval is how often overdue reservations are expired so that
	// watchers see it; the default is half the TTL, within 50 ms to 5 s.
	SweepInterval time.Duration
}

// Server implements shop.inventory.v1.InventoryService on a Store. Run must
// be running for WatchStock to see other processes' changes and expiries
// nobody else triggers.
type Server struct {
	inventoryv1.UnimplementedInventoryServiceServer
	store *Store
	hub   *hub
	log   *slog.Logger
	ttl   time.Duration
	sweep time.Duration
	// metrics are safe for concurrent use (Prometheus' own locking).
	metrics metrics
}

var _ inventoryv1.InventoryServiceServer = (*Server)(nil)

// NewServer returns a Server on store.
func NewServer(store *Store, log *slog.Logger, opts Options) *Server {
	ttl := opts.ReservationTTL
	if ttl <= 0 {
		ttl = DefaultReservationTTL
	}
	sweep := opts.SweepInterval
	if sweep <= 0 {
		sweep = min(5*time.Second, max(50*time.Millisecond, ttl/2))
	}
	return &Server{
		store:   store,
		hub:     newHub(store, log, opts.PollInterval),
		log:     log,
		ttl:     ttl,
		sweep:   sweep,
		metrics: newMetrics(),
	}
}

// Run expires overdue reservations periodically and follows stock changes
// for WatchStock until ctx is done; then it ends every open watch with
// UNAVAILABLE, so a shutdown's drain is not held up by them, and returns once
// its goroutines have stopped.
func (s *Server) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { s.hub.run(ctx) })
	wg.Go(func() { s.sweepLoop(ctx) })
	wg.Wait()
}

func (s *Server) sweepLoop(ctx context.Context) {
	ticker := time.NewTicker(s.sweep)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		n, err := s.store.ExpireDue(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Error("reservation sweep failed", "error", err.Error())
		case n > 0:
			s.metrics.expired.Add(float64(n))
			s.log.Debug("expired reservations", "expired", n)
		}
	}
}

// Watchers is the number of open WatchStock streams.
func (s *Server) Watchers() int { return s.hub.len() }

// GetStock returns the current stock of one or more SKUs.
func (s *Server) GetStock(ctx context.Context, req *inventoryv1.GetStockRequest) (*inventoryv1.GetStockResponse, error) {
	if vs := checkSKUs(req.GetSkus()); len(vs) > 0 {
		return nil, invalidArgument(vs)
	}
	levels, err := s.store.GetStock(ctx, req.GetSkus())
	if err != nil {
		return nil, s.rpcError(ctx, "GetStock", err)
	}
	resp := &inventoryv1.GetStockResponse{Levels: make([]*inventoryv1.StockLevel, len(levels))}
	for i, l := range levels {
		resp.Levels[i] = toLevel(l)
	}
	return resp, nil
}

// Reserve sets stock aside, all or nothing, idempotently on request_id.
func (s *Server) Reserve(ctx context.Context, req *inventoryv1.ReserveRequest) (*inventoryv1.ReserveResponse, error) {
	if vs := checkReserve(req); len(vs) > 0 {
		return nil, invalidArgument(vs)
	}
	lines := make([]Line, len(req.GetLines()))
	for i, l := range req.GetLines() {
		lines[i] = Line{SKU: l.GetSku(), Quantity: int64(l.GetQuantity())}
	}
	r, err := s.store.Reserve(ctx, req.GetRequestId(), lines, s.ttl)
	if err != nil {
		return nil, s.rpcError(ctx, "Reserve", err)
	}
	s.metrics.reservations.WithLabelValues("reserved").Inc()
	return &inventoryv1.ReserveResponse{Reservation: toReservation(r)}, nil
}

// Commit turns a reservation into a permanent decrement of on_hand.
func (s *Server) Commit(ctx context.Context, req *inventoryv1.CommitRequest) (*inventoryv1.CommitResponse, error) {
	if vs := checkReservationID(req.GetReservationId()); len(vs) > 0 {
		return nil, invalidArgument(vs)
	}
	r, err := s.store.Commit(ctx, req.GetReservationId())
	if err != nil {
		return nil, s.rpcError(ctx, "Commit", err)
	}
	s.metrics.reservations.WithLabelValues("committed").Inc()
	return &inventoryv1.CommitResponse{Reservation: toReservation(r)}, nil
}

// Release cancels a reservation and returns its stock.
func (s *Server) Release(ctx context.Context, req *inventoryv1.ReleaseRequest) (*inventoryv1.ReleaseResponse, error) {
	if vs := checkReservationID(req.GetReservationId()); len(vs) > 0 {
		return nil, invalidArgument(vs)
	}
	r, err := s.store.Release(ctx, req.GetReservationId())
	if err != nil {
		return nil, s.rpcError(ctx, "Release", err)
	}
	s.metrics.reservations.WithLabelValues("released").Inc()
	return &inventoryv1.ReleaseResponse{Reservation: toReservation(r)}, nil
}

// errShuttingDown ends the watches still open when the server shuts down.
var errShuttingDown = status.Error(codes.Unavailable, "The server is shutting down; watch again.")

// WatchStock sends the level of every requested SKU (initial = true, one
// message per SKU asked), then the level of a watched SKU whenever it
// changes, until the client cancels, the deadline passes or the server shuts
// down.
func (s *Server) WatchStock(req *inventoryv1.WatchStockRequest, stream grpc.ServerStreamingServer[inventoryv1.WatchStockResponse]) error {
	if vs := checkSKUs(req.GetSkus()); len(vs) > 0 {
		return invalidArgument(vs)
	}
	ctx := stream.Context()
	skus := distinct(req.GetSkus()) // one message per SKU, however often the request names it
	// Subscribe before reading the initial levels, so a change committed in
	// between wakes the loop below rather than being missed.
	sub, ok := s.hub.subscribe(skus)
	if !ok {
		return errShuttingDown
	}
	defer s.hub.unsubscribe(sub)

	initial, err := s.store.GetStock(ctx, skus)
	if err != nil {
		return s.rpcError(ctx, "WatchStock", err)
	}
	sent := make(map[string]Level, len(sub.skus)) // the last level sent per SKU
	for _, l := range initial {
		sent[l.SKU] = l
		if err := stream.Send(&inventoryv1.WatchStockResponse{Level: toLevel(l), Initial: true}); err != nil {
			return err
		}
	}
	for {
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-sub.done:
			return errShuttingDown
		case <-sub.wake:
		}
		levels, err := s.store.ReadStock(ctx, sub.skus)
		if err != nil {
			return s.rpcError(ctx, "WatchStock", err)
		}
		for _, sku := range sub.skus {
			l, ok := levels[sku]
			if !ok || sent[sku] == l {
				continue
			}
			sent[sku] = l
			if err := stream.Send(&inventoryv1.WatchStockResponse{Level: toLevel(l)}); err != nil {
				return err
			}
		}
	}
}

// ImportStock collects every item until the client half-closes, then
// applies them all in one transaction, or none.
func (s *Server) ImportStock(stream grpc.ClientStreamingServer[inventoryv1.ImportStockRequest, inventoryv1.ImportStockResponse]) error {
	var items []*inventoryv1.ImportStockRequest
	for {
		item, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err // cancelled or past its deadline: nothing applied
		}
		items = append(items, item)
	}
	if vs := checkImportItems(items); len(vs) > 0 {
		return invalidArgument(vs)
	}
	ctx := stream.Context()
	converted := make([]ImportItem, len(items))
	for i, it := range items {
		converted[i] = ImportItem{SKU: it.GetSku(), OnHand: int64(it.GetOnHand())}
	}
	summary, err := s.store.ImportStock(ctx, converted)
	if err != nil {
		return s.rpcError(ctx, "ImportStock", err)
	}
	return stream.SendAndClose(&inventoryv1.ImportStockResponse{
		ItemsReceived: int32(len(items)),
		SkusCreated:   int32(summary.Created),
		SkusUpdated:   int32(summary.Updated),
	})
}

// rpcError turns a store error into the status for the client: a status
// error as it is; the call's own cancellation or deadline as CANCELLED or
// DEADLINE_EXCEEDED; a database held by another writer past busy_timeout as
// UNAVAILABLE (safe to retry); anything else as INTERNAL, with the cause
// logged rather than sent.
func (s *Server) rpcError(ctx context.Context, method string, err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	if isBusy(err) {
		return status.Error(codes.Unavailable, "The inventory database is busy; retry the call.")
	}
	s.log.ErrorContext(ctx, "handler failed", "method", method, "error", err.Error())
	return status.Error(codes.Internal, "The inventory service failed unexpectedly; the cause is in its logs.")
}

func timestamp(ms int64) *timestamppb.Timestamp {
	return timestamppb.New(time.UnixMilli(ms))
}

func toLevel(l Level) *inventoryv1.StockLevel {
	return &inventoryv1.StockLevel{
		Sku:        l.SKU,
		OnHand:     int32(l.OnHand),
		Reserved:   int32(l.Reserved),
		Available:  int32(l.OnHand - l.Reserved),
		UpdateTime: timestamp(l.UpdateTime),
	}
}

var states = map[State]inventoryv1.ReservationState{
	StateReserved:  inventoryv1.ReservationState_RESERVATION_STATE_RESERVED,
	StateCommitted: inventoryv1.ReservationState_RESERVATION_STATE_COMMITTED,
	StateReleased:  inventoryv1.ReservationState_RESERVATION_STATE_RELEASED,
	StateExpired:   inventoryv1.ReservationState_RESERVATION_STATE_EXPIRED,
}

func toReservation(r *Reservation) *inventoryv1.Reservation {
	lines := make([]*inventoryv1.ReservationLine, len(r.Lines))
	for i, l := range r.Lines {
		lines[i] = &inventoryv1.ReservationLine{Sku: l.SKU, Quantity: int32(l.Quantity)}
	}
	return &inventoryv1.Reservation{
		ReservationId: r.ID,
		RequestId:     r.RequestID,
		Lines:         lines,
		State:         states[r.State],
		CreateTime:    timestamp(r.CreateTime),
		ExpireTime:    timestamp(r.ExpireTime),
	}
}

// distinct returns values without repeats, in the order each first appears.
func distinct(values []string) []string {
	seen := make(map[string]bool, len(values))
	out := make([]string, 0, len(values))
	for _, v := range values {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}
