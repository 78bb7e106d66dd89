package catalog_test

import (
	"context"
	"github.com/polyglot-shop/shop/go_service/internal/grpctest"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/genproto/googleapis/type/money"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/polyglot-shop/shop/go_service/gen/shop/catalog/v1"
	"github.com/polyglot-shop/shop/go_service/internal/catalog"
	"github.com/polyglot-shop/shop/go_service/internal/rpcerr"
	"github.com/polyglot-shop/shop/go_service/internal/server"
)

// callTimeout bounds every call and wait of these tests (grpctest's bound).
const callTimeout = grpctest.CallTimeout

// seedFile is the repository's one product list.
var seedFile = filepath.Join("..", "..", "..", "data", "products.json")

func loadSeed(t *testing.T) *catalog.Seed {
	t.Helper()
	seed, err := catalog.LoadSeed(seedFile)
	if err != nil {
		t.Fatalf("LoadSeed: %v", err)
	}
	return seed
}

// catalogServer is a real catalog server on a loopback port, built by the
// same bootstrap the binary uses.
type catalogServer struct {
	addr   string
	conn   *grpc.ClientConn
	client catalogv1.CatalogServiceClient
	stop   func() // stops the server and closes the store; idempotent
}

// startCatalog opens (or creates) the database at dbPath, serves it on
// 127.0.0.1:0 and returns a client. The server stops when the test ends, or
// earlier through stop.
func startCatalog(t *testing.T, dbPath string) *catalogServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	store, err := catalog.Open(ctx, catalog.OpenOptions{Path: dbPath, SeedFile: seedFile})
	if err != nil {
		cancel()
		t.Fatalf("Open: %v", err)
	}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	srv := server.New(server.Config{Service: "catalog", ListenAddr: "127.0.0.1:0", ShutdownGrace: callTimeout}, log)
	catalogv1.RegisterCatalogServiceServer(srv, catalog.NewServer(store, log))
	lis, err := srv.Listen()
	if err != nil {
		cancel()
		t.Fatalf("Listen: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, lis) }()

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	stopped := false
	cs := &catalogServer{addr: lis.Addr().String(), conn: conn, client: catalogv1.NewCatalogServiceClient(conn)}
	cs.stop = func() {
		if stopped {
			return
		}
		stopped = true
		_ = conn.Close()
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if err := store.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	t.Cleanup(cs.stop)
	waitServing(t, conn)
	return cs
}

// waitServing blocks until the health check says SERVING: no sleeps.
func waitServing(t *testing.T, conn *grpc.ClientConn) {
	t.Helper()
	grpctest.WaitServing(t, conn, "")
}

func callCtx(t *testing.T) context.Context {
	t.Helper()
	return grpctest.CallCtx(t)
}

// wantStatus fails unless err is a status with code want, and returns it.
func wantStatus(t *testing.T, err error, want codes.Code) *status.Status {
	t.Helper()
	return grpctest.WantStatus(t, err, want)
}

func wantFields(t *testing.T, st *status.Status, want ...string) {
	t.Helper()
	got := rpcerr.Decode(st).FieldPaths
	if len(got) != len(want) {
		t.Fatalf("field violations = %q, want %q (status %v, details %v)", got, want, st, st.Details())
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("field violations = %q, want %q (status %v)", got, want, st)
		}
	}
}

func wantReason(t *testing.T, st *status.Status, reason string) *errdetails.ErrorInfo {
	t.Helper()
	info := rpcerr.Decode(st).ErrorInfo
	if info == nil || info.GetReason() != reason || info.GetDomain() != catalog.ErrorDomain {
		t.Fatalf("ErrorInfo = %v, want reason %s domain %s (status %v)", info, reason, catalog.ErrorDomain, st)
	}
	return info
}

func newCatalog(t *testing.T) *catalogServer {
	t.Helper()
	return startCatalog(t, filepath.Join(t.TempDir(), "catalog.db"))
}

func moneyEqual(a, b *money.Money) bool {
	return a.GetCurrencyCode() == b.GetCurrencyCode() && a.GetUnits() == b.GetUnits() && a.GetNanos() == b.GetNanos()
}

func eur(units int64, nanos int32) *money.Money {
	return &money.Money{CurrencyCode: "EUR", Units: units, Nanos: nanos}
}
