package main

import (
	"bytes"
	"context"
	"errors"
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

	inventoryv1 "github.com/polyglot-shop/shop/go_service/gen/shop/inventory/v1"
	"github.com/polyglot-shop/shop/go_service/internal/proctest"
)

// runMainEnv makes the test binary run the inventory's main instead of the
// tests, so the process tests exercise the real binary's configuration,
// signal handling and exit code without a separate build.
const runMainEnv = "INVENTORY_TEST_RUN_MAIN"

func TestMain(m *testing.M) { proctest.RunMainIf(m, runMainEnv, main) }

// callTimeout is generous: the tests share two cores with other builds.
const callTimeout = 60 * time.Second

// start runs the inventory with baseEnv and env added and waits for its
// "listening" line.
func start(t *testing.T, env ...string) *proctest.Process {
	t.Helper()
	return proctest.Start(t, "inventory", callTimeout, append(baseEnv(t), env...)...)
}

// baseEnv points the child at a fresh database and the repository's files.
func baseEnv(t *testing.T) []string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return []string{
		runMainEnv + "=1",
		"SHOP_DB_PATH=" + filepath.Join(t.TempDir(), "inventory.db"),
		"SHOP_SEED_FILE=" + filepath.Join(root, "data", "products.json"),
		"SHOP_INVENTORY_SCHEMA=" + filepath.Join(root, "data", "inventory_schema.sql"),
	}
}

func TestSIGTERMEndsOpenWatchesTurnsHealthNotServingAndExitsZero(t *testing.T) {
	// A grace period far longer than the test: only ending the watch lets
	// the drain finish in time.
	p := start(t, "SHOP_LISTEN_ADDR=127.0.0.1:0", "SHOP_SHUTDOWN_GRACE_SECONDS=120", "SHOP_RESERVATION_TTL_SECONDS=0.25")
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	conn, err := grpc.NewClient(p.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	defer conn.Close()

	healthCtx, stopHealth := context.WithCancel(ctx)
	defer stopHealth()
	health, err := healthpb.NewHealthClient(conn).Watch(healthCtx, &healthpb.HealthCheckRequest{Service: inventoryv1.InventoryService_ServiceDesc.ServiceName}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatalf("health Watch: %v", err)
	}
	if resp, err := health.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first health status = %v, %v; want SERVING", resp.GetStatus(), err)
	}
	client := inventoryv1.NewInventoryServiceClient(conn)
	reserved, err := client.Reserve(ctx, &inventoryv1.ReserveRequest{RequestId: "req-ttl", Lines: []*inventoryv1.ReservationLine{{Sku: "sku-decaf-beans-500g", Quantity: 1}}})
	if err != nil {
		t.Fatalf("Reserve: %v", err)
	}
	r := reserved.GetReservation()
	if ttl := r.GetExpireTime().AsTime().Sub(r.GetCreateTime().AsTime()); ttl != 250*time.Millisecond {
		t.Errorf("a fractional SHOP_RESERVATION_TTL_SECONDS=0.25 gave a TTL of %v", ttl)
	}
	watch, err := client.WatchStock(ctx, &inventoryv1.WatchStockRequest{Skus: []string{"sku-decaf-beans-500g"}})
	if err != nil {
		t.Fatalf("WatchStock: %v", err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatalf("the initial level: %v", err)
	}

	signalled := time.Now()
	p.Signal(t, syscall.SIGTERM)
	if resp, err := health.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health after SIGTERM = %v, %v; want NOT_SERVING", resp.GetStatus(), err)
	}
	stopHealth() // a health watch is an in-flight call too; only the client ends it
	for {
		_, err := watch.Recv()
		if err == nil {
			continue // the expiry of req-ttl may arrive first
		}
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("the watch ended with %v, want UNAVAILABLE", err)
		}
		break
	}
	if code := p.Wait(t); code != 0 {
		t.Fatalf("exit code %d, want 0; stderr:\n%s\nlogs:\n%s", code, p.Stderr(), p.LogText())
	}

	var sawWatch bool
	for _, l := range p.LogLines(t) {
		if l["service"] != "inventory" || l["impl"] != "go" {
			t.Errorf("log line without service inventory and impl go: %v", l)
		}
		if l["msg"] == "rpc" && l["method"] == "/shop.inventory.v1.InventoryService/WatchStock" {
			sawWatch = l["code"] == "UNAVAILABLE"
		}
	}
	if !sawWatch {
		t.Errorf("no WatchStock rpc line with code UNAVAILABLE in:\n%s", p.LogText())
	}
	if elapsed := time.Since(signalled); elapsed > 10*time.Second {
		t.Errorf("the drain took %v with a grace period of 120s: something held it", elapsed)
	}
	if !strings.Contains(p.LogText(), `"msg":"stopped; every in-flight call finished"`) {
		t.Errorf("the drain did not finish in time:\n%s", p.LogText())
	}
}

// runToExit runs the inventory with env added and returns its exit error and
// stderr.
func runToExit(t *testing.T, env ...string) (error, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(append(os.Environ(), baseEnv(t)...), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err, stderr.String()
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("the inventory with %v did not exit", env)
		return nil, ""
	}
}

func TestABadReservationTTLExitsNonZeroNamingTheVariable(t *testing.T) {
	for _, value := range []string{"0", "-1", "soon", "NaN"} {
		err, stderr := runToExit(t, "SHOP_LISTEN_ADDR=127.0.0.1:0", "SHOP_RESERVATION_TTL_SECONDS="+value)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Errorf("SHOP_RESERVATION_TTL_SECONDS=%s: exit %v, want non-zero", value, err)
		}
		if !strings.Contains(stderr, "SHOP_RESERVATION_TTL_SECONDS") {
			t.Errorf("SHOP_RESERVATION_TTL_SECONDS=%s: stderr %q does not name the variable", value, stderr)
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
	err, stderr := runToExit(t, "SHOP_LISTEN_ADDR="+addr)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("the inventory on a taken port exited with %v, want a non-zero code", err)
	}
	if !strings.Contains(stderr, addr) {
		t.Errorf("stderr %q does not name %s", stderr, addr)
	}
}
