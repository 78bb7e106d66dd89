package server_test

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/polyglot-shop/shop/go_service/internal/server"
)

// A server stream every server has: grpc.health.v1 Watch, which stays open.
func openWatch(ctx context.Context, t *testing.T, health healthpb.HealthClient, client string) (healthpb.Health_WatchClient, error) {
	t.Helper()
	ctx = metadata.AppendToOutgoingContext(ctx, server.CustomerHeader, client)
	stream, err := health.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return nil, err
	}
	if _, err := stream.Recv(); err != nil {
		return nil, err
	}
	return stream, nil
}

func TestAClientPastItsCapOfServerStreamsIsRefusedAndOthersAreNot(t *testing.T) {
	srv := server.New(server.Config{Service: "catalog", ListenAddr: "127.0.0.1:0", ShutdownGrace: time.Second, MaxStreamsPerClient: 2},
		server.NewLogger(io.Discard, "catalog", slog.LevelInfo))
	lis, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	t.Cleanup(func() { stop(); <-done })
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	health := healthpb.NewHealthClient(conn)
	if _, err := health.Check(callCtx(t), &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true)); err != nil {
		t.Fatal(err)
	}

	first, cancelFirst := context.WithCancel(callCtx(t))
	defer cancelFirst()
	if _, err := openWatch(first, t, health, "ada"); err != nil {
		t.Fatalf("first stream: %v", err)
	}
	if _, err := openWatch(callCtx(t), t, health, "ada"); err != nil {
		t.Fatalf("second stream: %v", err)
	}
	_, err = openWatch(callCtx(t), t, health, "ada")
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), "SHOP_MAX_STREAMS_PER_CLIENT") {
		t.Fatalf("third stream of one client: %v; want RESOURCE_EXHAUSTED naming SHOP_MAX_STREAMS_PER_CLIENT", err)
	}
	if _, err := openWatch(callCtx(t), t, health, "grace"); err != nil {
		t.Fatalf("another client's stream: %v", err)
	}
	// A unary call is never counted.
	if _, err := health.Check(metadata.AppendToOutgoingContext(callCtx(t), server.CustomerHeader, "ada"), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("a unary call of a client at its cap: %v", err)
	}
	// Closing a stream frees its slot, once the server has seen the cancellation.
	cancelFirst()
	deadline := time.Now().Add(callTimeout)
	for {
		_, err := openWatch(callCtx(t), t, health, "ada")
		if err == nil {
			break
		}
		if status.Code(err) != codes.ResourceExhausted || time.Now().After(deadline) {
			t.Fatalf("after closing a stream: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestMaxStreamsPerClientComesFromTheEnvironment(t *testing.T) {
	for value, want := range map[string]string{"7": "", "": "", "-1": "SHOP_MAX_STREAMS_PER_CLIENT", "many": "SHOP_MAX_STREAMS_PER_CLIENT"} {
		env := map[string]string{"SHOP_MAX_STREAMS_PER_CLIENT": value}
		var cfg server.Config
		flags := server.NewFlags(flag.NewFlagSet("test", flag.ContinueOnError), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
		cfg.Register(flags, "127.0.0.1:0")
		err := flags.Parse(nil)
		switch {
		case want == "" && err != nil:
			t.Errorf("%q: %v", value, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("%q: error %v, want one naming %s", value, err, want)
		case value == "7" && cfg.MaxStreamsPerClient != 7:
			t.Errorf("%q: MaxStreamsPerClient = %d", value, cfg.MaxStreamsPerClient)
		}
	}
}
