package server_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/polyglot-shop/shop/go_service/internal/server"
)

func serveUntilCancelled(t *testing.T, cfg server.Config) {
	t.Helper()
	srv := server.New(cfg, server.NewLogger(io.Discard, cfg.Service, slog.LevelInfo))
	lis, err := srv.Listen()
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve = %v, want nil after a shutdown", err)
	}
}

func TestCPUProfileIsWrittenWhenServeEnds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cpu.pprof")
	serveUntilCancelled(t, server.Config{Service: "catalog", ListenAddr: "127.0.0.1:0", CPUProfile: path})
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the CPU profile was not written: %v", err)
	}
	// A pprof profile is a gzipped protobuf.
	if !bytes.HasPrefix(data, []byte{0x1f, 0x8b}) {
		t.Fatalf("%s is not a gzipped pprof profile: % x", path, data[:min(len(data), 8)])
	}
}

func TestNoCPUProfileByDefault(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	serveUntilCancelled(t, server.Config{Service: "catalog", ListenAddr: "127.0.0.1:0"})
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("Serve wrote %v without SHOP_CPU_PROFILE", entries)
	}
}

func TestAnUnwritableCPUProfileFailsServe(t *testing.T) {
	srv := server.New(server.Config{Service: "catalog", ListenAddr: "127.0.0.1:0", CPUProfile: filepath.Join(t.TempDir(), "missing", "cpu.pprof")},
		server.NewLogger(io.Discard, "catalog", slog.LevelInfo))
	lis, err := srv.Listen()
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	if err := srv.Serve(context.Background(), lis); err == nil {
		t.Fatal("Serve with an unwritable SHOP_CPU_PROFILE = nil, want an error")
	}
}
