package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/polyglot-shop/shop/go_service/internal/server"
)

const getProduct = "/shop.catalog.v1.CatalogService/GetProduct"

// tracedCall is the context of a call with an x-request-id, inside a span.
func tracedCall(t *testing.T) context.Context {
	t.Helper()
	tid, err := trace.TraceIDFromHex("0af7651916cd43dd8448eb211c80319c")
	if err != nil {
		t.Fatal(err)
	}
	sid, err := trace.SpanIDFromHex("b7ad6b7169203331")
	if err != nil {
		t.Fatal(err)
	}
	ctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid}))
	return metadata.NewIncomingContext(ctx, metadata.Pairs(server.RequestIDKey, "order-7"))
}

// callThrough runs one unary call through UnaryLogging with log.
func callThrough(ctx context.Context, log *slog.Logger, err error) {
	handler := func(context.Context, any) (any, error) { return nil, err }
	_, _ = server.UnaryLogging(log)(ctx, nil, &grpc.UnaryServerInfo{FullMethod: getProduct}, handler)
}

// The per-call line keeps docs/conventions.md's fields, names and order: the
// common ones, then the call's, then the span's.
func TestTheRPCLineHasTheConventionsFieldsInOrder(t *testing.T) {
	var buf bytes.Buffer
	callThrough(tracedCall(t), server.NewLogger(&buf, "catalog", slog.LevelInfo), nil)
	line := strings.TrimSuffix(buf.String(), "\n")
	if strings.Count(buf.String(), "\n") != 1 || line == "" {
		t.Fatalf("want one line, got %q", buf.String())
	}
	dec := json.NewDecoder(strings.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("line %q is not a JSON object: %v", line, err)
	}
	var keys []string
	values := map[string]any{}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		keys = append(keys, key.(string))
		values[key.(string)] = v
	}
	want := []string{"time", "level", "msg", "service", "method", "code", "duration_ms", "request_id", "trace_id", "span_id"}
	if strings.Join(keys, ",") != strings.Join(want, ",") {
		t.Errorf("keys = %v, want %v (line %s)", keys, want, line)
	}
	wantValues := map[string]any{
		"level": "info", "msg": "rpc", "service": "catalog", "method": getProduct, "code": "OK",
		"request_id": "order-7", "trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331",
	}
	for k, v := range wantValues {
		if values[k] != v {
			t.Errorf("%s = %#v, want %#v", k, values[k], v)
		}
	}
	if d, ok := values["duration_ms"].(float64); !ok || d < 0 {
		t.Errorf("duration_ms = %#v, want a number of milliseconds", values["duration_ms"])
	}
	if ts, ok := values["time"].(string); !ok {
		t.Errorf("time = %#v, want RFC 3339 text", values["time"])
	} else if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
		t.Errorf("time %q is not RFC 3339: %v", ts, err)
	}
}

// A failed call's line has its code, its level and the error message.
func TestTheRPCLineOfAFailedCallHasItsCodeAndError(t *testing.T) {
	var buf bytes.Buffer
	callThrough(context.Background(), server.NewLogger(&buf, "catalog", slog.LevelInfo), status.Error(codes.Internal, "disk on fire"))
	var l map[string]any
	if err := json.Unmarshal(buf.Bytes(), &l); err != nil {
		t.Fatalf("line %q: %v", buf.String(), err)
	}
	if l["level"] != "error" || l["code"] != "INTERNAL" || l["error"] != "disk on fire" {
		t.Errorf("line = %v, want level error, code INTERNAL and the error", l)
	}
	if _, ok := l["request_id"]; ok {
		t.Errorf("a call without x-request-id logged request_id: %v", l)
	}
}

// Levels are spelt in lower case, as every service in the shop writes them.
func TestLevelsAreLowerCase(t *testing.T) {
	var buf bytes.Buffer
	log := server.NewLogger(&buf, "catalog", slog.LevelDebug)
	log.Debug("d")
	log.Info("i")
	log.Warn("w")
	log.Error("e")
	log.Log(context.Background(), slog.LevelInfo+2, "between")
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var l map[string]any
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		got = append(got, l["level"].(string))
	}
	if want := "debug,info,warn,error,info+2"; strings.Join(got, ",") != want {
		t.Errorf("levels = %v, want %s", got, want)
	}
}

// BenchmarkRPCLine is what one call line costs, written to io.Discard
// (docs/performance.md, P7 (Go)).
func BenchmarkRPCLine(b *testing.B) {
	tid, _ := trace.TraceIDFromHex("0af7651916cd43dd8448eb211c80319c")
	sid, _ := trace.SpanIDFromHex("b7ad6b7169203331")
	ctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid}))
	ctx = metadata.NewIncomingContext(ctx, metadata.Pairs(server.RequestIDKey, "order-7"))
	log := server.NewLogger(io.Discard, "catalog", slog.LevelInfo)
	for b.Loop() {
		callThrough(ctx, log, nil)
	}
}
