package inventory_test

import (
	"context"
	"fmt"
	"github.com/polyglot-shop/shop/go_service/internal/grpctest"
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	inventoryv1 "github.com/polyglot-shop/shop/go_service/gen/shop/inventory/v1"
	"github.com/polyglot-shop/shop/go_service/internal/inventory"
	"github.com/polyglot-shop/shop/go_service/internal/rpcerr"
	"github.com/polyglot-shop/shop/go_service/internal/server"
)

// callTimeout bounds every call and wait of these tests (grpctest's bound).
const callTimeout = grpctest.CallTimeout

// The repository's shared files, from this package's directory.
var (
	seedFile   = filepath.Join("..", "..", "..", "data", "products.json")
	schemaFile = filepath.Join("..", "..", "..", "data", "inventory_schema.sql")
)

// seeded SKUs and their initial_stock in data/products.json.
const (
	espresso      = "sku-espresso-beans-1kg" // 120
	decaf         = "sku-decaf-beans-500g"   // 40
	espressoStock = 120
	decafStock    = 40
)

// inventoryServer is a real inventory server on a loopback port, built the
// way the binary builds it.
type inventoryServer struct {
	addr   string
	conn   *grpc.ClientConn
	client inventoryv1.InventoryServiceClient
	svc    *inventory.Server
	store  *inventory.Store
	stop   func() // stops the server and closes the store; idempotent
}

// startInventory opens (or creates) the database at dbPath, serves it on
// 127.0.0.1:0 with the sweeper and watch hub running, and returns a client.
// The server stops when the test ends, or earlier through stop.
func startInventory(t *testing.T, dbPath string, opts inventory.Options) *inventoryServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	store, err := inventory.Open(ctx, inventory.OpenOptions{Path: dbPath, SchemaFile: schemaFile, SeedFile: seedFile})
	if err != nil {
		cancel()
		t.Fatalf("Open: %v", err)
	}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	svc := inventory.NewServer(store, log, opts)
	srv := server.New(server.Config{Service: "inventory", ListenAddr: "127.0.0.1:0", ShutdownGrace: callTimeout}, log)
	inventoryv1.RegisterInventoryServiceServer(srv, svc)
	lis, err := srv.Listen()
	if err != nil {
		cancel()
		t.Fatalf("Listen: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, lis) }()
	background := make(chan struct{})
	go func() {
		defer close(background)
		svc.Run(ctx)
	}()

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	s := &inventoryServer{addr: lis.Addr().String(), conn: conn, client: inventoryv1.NewInventoryServiceClient(conn), svc: svc, store: store}
	stopped := false
	s.stop = func() {
		if stopped {
			return
		}
		stopped = true
		_ = conn.Close()
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		<-background
		if err := store.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	t.Cleanup(s.stop)
	waitServing(t, conn)
	return s
}

// startFresh serves a new database in a temporary directory.
func startFresh(t *testing.T, opts inventory.Options) *inventoryServer {
	t.Helper()
	return startInventory(t, filepath.Join(t.TempDir(), "inventory.db"), opts)
}

// waitServing blocks until the health check says SERVING: no sleeps.
func waitServing(t *testing.T, conn *grpc.ClientConn) {
	t.Helper()
	grpctest.WaitServing(t, conn, inventoryv1.InventoryService_ServiceDesc.ServiceName)
}

func callCtx(t *testing.T) context.Context {
	t.Helper()
	return grpctest.CallCtx(t)
}

var uniqueCounter atomic.Int64

// unique returns a name no other call of this test binary returns.
func unique(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano(), uniqueCounter.Add(1))
}

// importStock sets on_hand for each (sku, on_hand) pair in one import.
func importStock(t *testing.T, c inventoryv1.InventoryServiceClient, items ...any) (*inventoryv1.ImportStockResponse, error) {
	t.Helper()
	stream, err := c.ImportStock(callCtx(t))
	if err != nil {
		t.Fatalf("ImportStock: %v", err)
	}
	for i := 0; i < len(items); i += 2 {
		if err := stream.Send(&inventoryv1.ImportStockRequest{Sku: items[i].(string), OnHand: int32(items[i+1].(int))}); err != nil {
			t.Fatalf("ImportStock Send: %v", err)
		}
	}
	return stream.CloseAndRecv()
}

// freshSKU creates a new SKU with onHand units.
func freshSKU(t *testing.T, c inventoryv1.InventoryServiceClient, onHand int) string {
	t.Helper()
	sku := unique("sku-test")
	if _, err := importStock(t, c, sku, onHand); err != nil {
		t.Fatalf("import %s: %v", sku, err)
	}
	return sku
}

// level is (on_hand, reserved, available) of one SKU.
type level struct{ onHand, reserved, available int32 }

func getLevel(t *testing.T, c inventoryv1.InventoryServiceClient, sku string) level {
	t.Helper()
	resp, err := c.GetStock(callCtx(t), &inventoryv1.GetStockRequest{Skus: []string{sku}})
	if err != nil {
		t.Fatalf("GetStock %s: %v", sku, err)
	}
	l := resp.GetLevels()[0]
	return level{l.GetOnHand(), l.GetReserved(), l.GetAvailable()}
}

func wantLevel(t *testing.T, c inventoryv1.InventoryServiceClient, sku string, want level) {
	t.Helper()
	if got := getLevel(t, c, sku); got != want {
		t.Fatalf("level of %s = %+v, want %+v", sku, got, want)
	}
}

func lines(pairs ...any) []*inventoryv1.ReservationLine {
	var out []*inventoryv1.ReservationLine
	for i := 0; i < len(pairs); i += 2 {
		out = append(out, &inventoryv1.ReservationLine{Sku: pairs[i].(string), Quantity: int32(pairs[i+1].(int))})
	}
	return out
}

func reserve(t *testing.T, c inventoryv1.InventoryServiceClient, requestID string, pairs ...any) (*inventoryv1.Reservation, error) {
	t.Helper()
	resp, err := c.Reserve(callCtx(t), &inventoryv1.ReserveRequest{RequestId: requestID, Lines: lines(pairs...)})
	return resp.GetReservation(), err
}

func mustReserve(t *testing.T, c inventoryv1.InventoryServiceClient, pairs ...any) *inventoryv1.Reservation {
	t.Helper()
	r, err := reserve(t, c, unique("req"), pairs...)
	if err != nil {
		t.Fatalf("Reserve %v: %v", pairs, err)
	}
	return r
}

// wantStatus fails unless err is a status with code want, and returns it.
func wantStatus(t *testing.T, err error, want codes.Code) *status.Status {
	t.Helper()
	return grpctest.WantStatus(t, err, want)
}

// wantFields fails unless st is INVALID_ARGUMENT with exactly these field
// violation paths, in order.
func wantFields(t *testing.T, err error, want ...string) {
	t.Helper()
	st := wantStatus(t, err, codes.InvalidArgument)
	got := rpcerr.Decode(st).FieldPaths
	if !slices.Equal(got, want) {
		t.Fatalf("field violations = %q, want %q (status %v)", got, want, st)
	}
}

// wantReason fails unless err has code and an ErrorInfo with reason in the
// inventory domain and, when metadata is not nil, exactly that metadata.
func wantReason(t *testing.T, err error, code codes.Code, reason string, metadata map[string]string) {
	t.Helper()
	st := wantStatus(t, err, code)
	info := rpcerr.Decode(st).ErrorInfo
	if info == nil {
		t.Fatalf("no ErrorInfo in %v (details %v)", st, st.Details())
	}
	if info.GetReason() != reason || info.GetDomain() != inventory.ErrorDomain {
		t.Fatalf("ErrorInfo = %v, want reason %s domain %s", info, reason, inventory.ErrorDomain)
	}
	if metadata != nil && !maps.Equal(info.GetMetadata(), metadata) {
		t.Fatalf("ErrorInfo metadata = %v, want %v", info.GetMetadata(), metadata)
	}
}

// eventually polls cond every few milliseconds until it holds or the call
// timeout passes; for conditions with nothing to wait on (a counter).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(callTimeout); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}
