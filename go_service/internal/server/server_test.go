package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/polyglot-shop/shop/go_service/gen/shop/catalog/v1"
	"github.com/polyglot-shop/shop/go_service/internal/server"
)

const callTimeout = 30 * time.Second

// fakeCatalog is a CatalogService whose handlers misbehave on request: the
// product id "panic" panics; QuoteCart echoes an empty quote per message
// until the client closes, and panics on "panic".
type fakeCatalog struct {
	catalogv1.UnimplementedCatalogServiceServer
}

func (fakeCatalog) GetProduct(_ context.Context, req *catalogv1.GetProductRequest) (*catalogv1.GetProductResponse, error) {
	if req.GetProductId() == "panic" {
		panic("fake handler panicked")
	}
	return &catalogv1.GetProductResponse{Product: &catalogv1.Product{Id: req.GetProductId()}}, nil
}

func (fakeCatalog) QuoteCart(stream grpc.BidiStreamingServer[catalogv1.QuoteCartRequest, catalogv1.QuoteCartResponse]) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if req.GetProductId() == "panic" {
			panic("fake stream handler panicked")
		}
		if err := stream.Send(&catalogv1.QuoteCartResponse{ItemCount: req.GetQuantity()}); err != nil {
			return err
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the server's and the test's
// goroutines; mu guards buf.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns every JSON log line written so far.
func (b *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

type running struct {
	conn   *grpc.ClientConn
	client catalogv1.CatalogServiceClient
	health healthpb.HealthClient
	logs   *syncBuffer
	cancel context.CancelFunc // starts the shutdown
	// stopped closes when Serve returns; serveErr is its result, written
	// before the close.
	stopped  chan struct{}
	serveErr error
}

// wait blocks until Serve returns and returns its error.
func (r *running) wait() error {
	<-r.stopped
	return r.serveErr
}

// startFake serves fakeCatalog through the shared bootstrap on 127.0.0.1:0.
func startFake(t *testing.T, grace time.Duration) *running {
	t.Helper()
	logs := &syncBuffer{}
	log := server.NewLogger(logs, "catalog", slog.LevelInfo)
	srv := server.New(server.Config{Service: "catalog", ListenAddr: "127.0.0.1:0", ShutdownGrace: grace}, log)
	catalogv1.RegisterCatalogServiceServer(srv, fakeCatalog{})
	lis, err := srv.Listen()
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{logs: logs, cancel: cancel, stopped: make(chan struct{})}
	go func() {
		r.serveErr = srv.Serve(ctx, lis)
		close(r.stopped)
	}()
	r.conn, err = grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	r.client = catalogv1.NewCatalogServiceClient(r.conn)
	r.health = healthpb.NewHealthClient(r.conn)
	t.Cleanup(func() {
		_ = r.conn.Close()
		cancel()
		_ = r.wait()
	})
	resp, err := r.health.Check(callCtx(t), &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health check: %v, %v", resp.GetStatus(), err)
	}
	return r
}

func callCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	t.Cleanup(cancel)
	return ctx
}

func findLog(lines []map[string]any, msg, method string) map[string]any {
	for _, l := range lines {
		if l["msg"] == msg && (method == "" || l["method"] == method) {
			return l
		}
	}
	return nil
}

func TestAPanickingHandlerIsInternalAndTheServerKeepsServing(t *testing.T) {
	r := startFake(t, callTimeout)

	_, err := r.client.GetProduct(callCtx(t), &catalogv1.GetProductRequest{ProductId: "panic"})
	if status.Code(err) != codes.Internal {
		t.Fatalf("GetProduct that panics = %v, want INTERNAL", err)
	}
	if _, err := r.client.GetProduct(callCtx(t), &catalogv1.GetProductRequest{ProductId: "fine"}); err != nil {
		t.Fatalf("GetProduct after a panic: %v", err)
	}

	stream, err := r.client.QuoteCart(callCtx(t))
	if err != nil {
		t.Fatalf("QuoteCart: %v", err)
	}
	if err := stream.Send(&catalogv1.QuoteCartRequest{ProductId: "panic"}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Internal {
		t.Fatalf("QuoteCart that panics = %v, want INTERNAL", err)
	}

	resp, err := r.health.Check(callCtx(t), &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health after the panics = %v, %v; want SERVING", resp.GetStatus(), err)
	}

	lines := r.logs.lines(t)
	for _, method := range []string{"/shop.catalog.v1.CatalogService/GetProduct", "/shop.catalog.v1.CatalogService/QuoteCart"} {
		if findLog(lines, "handler panicked", method) == nil {
			t.Errorf("no \"handler panicked\" line for %s in %v", method, lines)
		}
	}
	if l := findLog(lines, "rpc", "/shop.catalog.v1.CatalogService/QuoteCart"); l == nil || l["code"] != "INTERNAL" || l["level"] != "error" {
		t.Errorf("QuoteCart rpc line = %v, want code INTERNAL at error", l)
	}
}

func TestEveryRPCLogsOneJSONLine(t *testing.T) {
	r := startFake(t, callTimeout)
	ctx := metadata.AppendToOutgoingContext(callCtx(t), "x-request-id", "req-123")
	if _, err := r.client.GetProduct(ctx, &catalogv1.GetProductRequest{ProductId: "sku-a"}); err != nil {
		t.Fatalf("GetProduct: %v", err)
	}
	if _, err := r.client.BatchGetProducts(callCtx(t), &catalogv1.BatchGetProductsRequest{}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("BatchGetProducts on the fake = %v, want UNIMPLEMENTED", err)
	}

	lines := r.logs.lines(t)
	l := findLog(lines, "rpc", "/shop.catalog.v1.CatalogService/GetProduct")
	if l == nil {
		t.Fatalf("no rpc line for GetProduct in %v", lines)
	}
	if l["service"] != "catalog" || l["code"] != "OK" || l["request_id"] != "req-123" || l["level"] != "info" {
		t.Errorf("GetProduct line = %v, want service catalog, code OK, request_id req-123, level info", l)
	}
	if _, ok := l["duration_ms"].(float64); !ok {
		t.Errorf("duration_ms = %#v, want a number", l["duration_ms"])
	}
	if _, err := time.Parse(time.RFC3339, l["time"].(string)); err != nil {
		t.Errorf("time %v is not RFC 3339: %v", l["time"], err)
	}
	if l := findLog(lines, "rpc", "/shop.catalog.v1.CatalogService/BatchGetProducts"); l == nil || l["code"] != "UNIMPLEMENTED" || l["request_id"] != nil {
		t.Errorf("BatchGetProducts line = %v, want code UNIMPLEMENTED and no request_id", l)
	}
	if l := findLog(lines, "rpc", "/grpc.health.v1.Health/Check"); l != nil {
		t.Errorf("a health check was logged at info: %v", l)
	}
	if l := findLog(lines, "listening", ""); l == nil || !strings.HasPrefix(l["addr"].(string), "127.0.0.1:") || strings.HasSuffix(l["addr"].(string), ":0") {
		t.Errorf("listening line = %v, want the bound 127.0.0.1 address", l)
	}
}

// watchHealth opens a health Watch and returns a channel of the statuses it
// sees; the goroutine ends when the watch does (the test cancels it).
func watchHealth(ctx context.Context, t *testing.T, health healthpb.HealthClient) <-chan healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	watch, err := health.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	statuses := make(chan healthpb.HealthCheckResponse_ServingStatus, 8)
	go func() {
		defer close(statuses)
		for {
			resp, err := watch.Recv()
			if err != nil {
				return
			}
			statuses <- resp.GetStatus()
		}
	}()
	return statuses
}

func TestShutdownTurnsHealthNotServingAndDrainsInFlightCalls(t *testing.T) {
	r := startFake(t, callTimeout)
	watchCtx, stopWatching := context.WithCancel(callCtx(t))
	defer stopWatching()
	statuses := watchHealth(watchCtx, t, r.health)
	if st := <-statuses; st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first watched status = %v, want SERVING", st)
	}

	stream, err := r.client.QuoteCart(callCtx(t))
	if err != nil {
		t.Fatalf("QuoteCart: %v", err)
	}
	if err := stream.Send(&catalogv1.QuoteCartRequest{ProductId: "a", Quantity: 1}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("Recv: %v", err)
	}

	r.cancel() // what SIGTERM does in main
	if st := <-statuses; st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("watched status after shutdown began = %v, want NOT_SERVING", st)
	}
	stopWatching() // the watch is an in-flight call too

	// The stream that was in flight still works, and ends normally.
	if err := stream.Send(&catalogv1.QuoteCartRequest{ProductId: "b", Quantity: 2}); err != nil {
		t.Fatalf("Send during the drain: %v", err)
	}
	if resp, err := stream.Recv(); err != nil || resp.GetItemCount() != 2 {
		t.Fatalf("Recv during the drain = %v, %v", resp, err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatalf("CloseSend: %v", err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("Recv after CloseSend = %v, want io.EOF", err)
	}
	if err := r.wait(); err != nil {
		t.Fatalf("Serve = %v, want nil after a shutdown", err)
	}
	if l := findLog(r.logs.lines(t), "stopped; every in-flight call finished", ""); l == nil {
		t.Errorf("no drained line in %v", r.logs.lines(t))
	}
}

func TestShutdownCancelsCallsStillRunningAfterTheGracePeriod(t *testing.T) {
	r := startFake(t, 200*time.Millisecond)
	stream, err := r.client.QuoteCart(callCtx(t))
	if err != nil {
		t.Fatalf("QuoteCart: %v", err)
	}
	if err := stream.Send(&catalogv1.QuoteCartRequest{ProductId: "a", Quantity: 1}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("Recv: %v", err)
	}

	r.cancel()
	// The client never closes the stream, so only the forced stop ends it.
	if err := r.wait(); err != nil {
		t.Fatalf("Serve = %v, want nil after a forced stop", err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable && status.Code(err) != codes.Canceled {
		t.Errorf("Recv on a stream cut by the forced stop = %v, want UNAVAILABLE or CANCELLED", err)
	}
	if l := findLog(r.logs.lines(t), "stopped; the grace period ended and the calls still in flight were cancelled", ""); l == nil || l["level"] != "warn" {
		t.Errorf("forced-stop line = %v, want one at warn", l)
	}
}

func TestListenOnATakenPortNamesTheAddress(t *testing.T) {
	first := server.New(server.Config{Service: "catalog", ListenAddr: "127.0.0.1:0"}, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	lis, err := first.Listen()
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	defer lis.Close()
	addr := lis.Addr().String()
	second := server.New(server.Config{Service: "catalog", ListenAddr: addr}, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	if _, err := second.Listen(); err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("Listen on a taken port = %v, want an error naming %s", err, addr)
	}
}

func TestCodeNamesAreCanonical(t *testing.T) {
	for code, want := range map[codes.Code]string{
		codes.OK: "OK", codes.Canceled: "CANCELLED", codes.NotFound: "NOT_FOUND",
		codes.InvalidArgument: "INVALID_ARGUMENT", codes.DeadlineExceeded: "DEADLINE_EXCEEDED",
		codes.Unauthenticated: "UNAUTHENTICATED", codes.Code(99): "Code(99)",
	} {
		if got := server.CodeName(code); got != want {
			t.Errorf("CodeName(%d) = %q, want %q", code, got, want)
		}
	}
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if name := server.CodeName(c); name != strings.ToUpper(name) {
			t.Errorf("CodeName(%d) = %q is not upper-case", c, name)
		}
	}
}

func TestConfigComesFromTheEnvironmentAndFlagsWin(t *testing.T) {
	env := map[string]string{
		"SHOP_LISTEN_ADDR":            "0.0.0.0:6000",
		"SHOP_SHUTDOWN_GRACE_SECONDS": "3",
		"SHOP_LOG_LEVEL":              "debug",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }

	cfg := server.Config{Service: "catalog"}
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	flags := server.NewFlags(fs, lookup)
	cfg.Register(flags, "127.0.0.1:50051")
	if err := flags.Parse([]string{"-listen-addr", "127.0.0.1:7000"}); err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if cfg.ListenAddr != "127.0.0.1:7000" || cfg.ShutdownGrace != 3*time.Second || cfg.LogLevel != slog.LevelDebug {
		t.Errorf("config = %+v, want the flag's address, 3s grace and debug", cfg)
	}

	defaults := server.Config{Service: "catalog"}
	fs = flag.NewFlagSet("test", flag.ContinueOnError)
	flags = server.NewFlags(fs, func(string) (string, bool) { return "", false })
	defaults.Register(flags, "127.0.0.1:50051")
	if err := flags.Parse(nil); err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if defaults.ListenAddr != "127.0.0.1:50051" || defaults.ShutdownGrace != server.DefaultShutdownGrace || defaults.LogLevel != slog.LevelInfo {
		t.Errorf("defaults = %+v", defaults)
	}
}

func TestABadEnvironmentValueIsNamed(t *testing.T) {
	for env, value := range map[string]string{
		"SHOP_SHUTDOWN_GRACE_SECONDS": "soon",
		"SHOP_LOG_LEVEL":              "loud",
	} {
		cfg := server.Config{Service: "catalog"}
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		flags := server.NewFlags(fs, func(k string) (string, bool) { return value, k == env })
		cfg.Register(flags, "127.0.0.1:50051")
		if err := flags.Parse(nil); err == nil || !strings.Contains(err.Error(), env) {
			t.Errorf("%s=%s: Parse = %v, want an error naming %s", env, value, err, env)
		}
	}
	cfg := server.Config{Service: "catalog"}
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg.Register(server.NewFlags(fs, func(string) (string, bool) { return "", false }), "127.0.0.1:50051")
	if err := fs.Parse([]string{"-shutdown-grace-seconds", "-1"}); err == nil {
		t.Error("a negative grace period was accepted")
	}
}

func TestSecondsReadFractionsAsEveryLanguageDoes(t *testing.T) {
	for raw, want := range map[string]time.Duration{
		"1.5":   1500 * time.Millisecond,
		"0":     0,
		"10":    10 * time.Second,
		" 0.25": 250 * time.Millisecond,
	} {
		d := time.Minute
		if err := server.Seconds(&d, true).UnmarshalText([]byte(raw)); err != nil || d != want {
			t.Errorf("Seconds(%q) = %v, %v; want %v", raw, d, err, want)
		}
	}
	for _, raw := range []string{"-1", "soon", "NaN", "Inf"} {
		d := time.Minute
		if err := server.Seconds(&d, true).UnmarshalText([]byte(raw)); err == nil {
			t.Errorf("Seconds(%q) accepted, giving %v", raw, d)
		}
	}
	d := time.Minute
	if err := server.Seconds(&d, false).UnmarshalText([]byte("0")); err == nil {
		t.Errorf("a zero that must be more than zero was accepted")
	}
}
