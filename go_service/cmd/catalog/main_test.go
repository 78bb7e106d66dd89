package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/polyglot-shop/shop/go_service/gen/shop/catalog/v1"
	"github.com/polyglot-shop/shop/go_service/internal/proctest"
)

// runMainEnv makes the test binary run the catalog's main instead of the
// tests, so the shutdown test exercises the real binary's signal handling and
// exit code without a separate build.
const runMainEnv = "CATALOG_TEST_RUN_MAIN"

func TestMain(m *testing.M) { proctest.RunMainIf(m, runMainEnv, main) }

// callTimeout is generous: the tests share two cores with other builds.
const callTimeout = 60 * time.Second

func seedEnv(t *testing.T) []string {
	t.Helper()
	seed, err := filepath.Abs(filepath.Join("..", "..", "..", "data", "products.json"))
	if err != nil {
		t.Fatal(err)
	}
	return []string{
		"SHOP_DB_PATH=" + filepath.Join(t.TempDir(), "catalog.db"),
		"SHOP_SEED_FILE=" + seed,
	}
}

func TestSIGTERMDrainsTheCallInFlightAndExitsZero(t *testing.T) {
	p := proctest.Start(t, "catalog", callTimeout,
		append(seedEnv(t), runMainEnv+"=1", "SHOP_LISTEN_ADDR=127.0.0.1:0", "SHOP_SHUTDOWN_GRACE_SECONDS=120")...)
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()

	conn, err := grpc.NewClient(p.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	watchCtx, stopWatching := context.WithCancel(ctx)
	defer stopWatching()
	watch, err := health.Watch(watchCtx, &healthpb.HealthCheckRequest{Service: catalogv1.CatalogService_ServiceDesc.ServiceName}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first health status = %v, %v; want SERVING", resp.GetStatus(), err)
	}

	// A cart being quoted is the call in flight.
	cart, err := catalogv1.NewCatalogServiceClient(conn).QuoteCart(ctx)
	if err != nil {
		t.Fatalf("QuoteCart: %v", err)
	}
	if err := cart.Send(&catalogv1.QuoteCartRequest{ProductId: "sku-espresso-beans-1kg", Quantity: 1}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if _, err := cart.Recv(); err != nil {
		t.Fatalf("Recv: %v", err)
	}

	p.Signal(t, syscall.SIGTERM)

	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health status after SIGTERM = %v, %v; want NOT_SERVING; logs:\n%s", resp.GetStatus(), err, p.LogText())
	}
	stopWatching() // the watch is an in-flight call too; end it

	// The listener closes right after health turns NOT_SERVING; poll for the
	// refusal rather than assume when it happens.
	refused := false
	for deadline := time.Now().Add(callTimeout); time.Now().Before(deadline); {
		c, err := net.DialTimeout("tcp", p.Addr, time.Second)
		if err != nil {
			refused = true
			break
		}
		_ = c.Close()
		time.Sleep(20 * time.Millisecond)
	}
	if !refused {
		t.Fatalf("%s still accepts connections while draining", p.Addr)
	}
	fresh, err := grpc.NewClient(p.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	defer fresh.Close()
	if _, err := healthpb.NewHealthClient(fresh).Check(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("a call on a new connection while draining = %v, want UNAVAILABLE", err)
	}

	// The call in flight keeps working until the client ends it.
	if err := cart.Send(&catalogv1.QuoteCartRequest{ProductId: "sku-filter-beans-500g", Quantity: 2}); err != nil {
		t.Fatalf("Send while draining: %v", err)
	}
	resp, err := cart.Recv()
	if err != nil || resp.GetItemCount() != 3 {
		t.Fatalf("Recv while draining = %v, %v; want 3 items", resp, err)
	}
	if err := cart.CloseSend(); err != nil {
		t.Fatalf("CloseSend: %v", err)
	}
	if _, err := cart.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("Recv after CloseSend = %v, want io.EOF", err)
	}

	if code := p.Wait(t); code != 0 {
		t.Fatalf("exit code %d, want 0; stderr:\n%s\nlogs:\n%s", code, p.Stderr(), p.LogText())
	}
	logs := p.LogText()
	for _, want := range []string{`"msg":"shutting down"`, `"msg":"stopped; every in-flight call finished"`, `"method":"/shop.catalog.v1.CatalogService/QuoteCart","code":"OK"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("the logs lack %s:\n%s", want, logs)
		}
	}
}

func TestATakenPortExitsNonZeroNamingTheAddress(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	addr := lis.Addr().String()

	cmd := exec.Command(os.Args[0])
	cmd.Env = append(append(os.Environ(), runMainEnv+"=1", "SHOP_LISTEN_ADDR="+addr), seedEnv(t)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("the catalog on a taken port exited with %v, want a non-zero code", err)
	}
	if !strings.Contains(stderr.String(), addr) {
		t.Errorf("stderr %q does not name %s", stderr.String(), addr)
	}
}

func TestANewDatabaseWithoutASeedFileExitsNonZero(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "products.json")
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), runMainEnv+"=1", "SHOP_LISTEN_ADDR=127.0.0.1:0",
		"SHOP_DB_PATH="+filepath.Join(t.TempDir(), "catalog.db"), "SHOP_SEED_FILE="+missing)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("the catalog without a seed exited with %v, want a non-zero code", err)
	}
	if !strings.Contains(stderr.String(), missing) {
		t.Errorf("stderr %q does not name %s", stderr.String(), missing)
	}
}
