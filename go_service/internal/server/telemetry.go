package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/zipkin"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"
)

// Telemetry is a server's tracing and metrics, set up once by New from the
// Config (docs/observability.md):
//
//   - traces: OpenTelemetry's SDK with a parent-based ratio sampler and a
//     span per RPC from otelgrpc's stats handler, which continues the
//     caller's W3C traceparent. With a Zipkin URL, spans are exported in
//     batches from a bounded queue; a Zipkin that is down costs a dropped
//     batch after the export timeout, never an RPC's time.
//   - metrics: go-grpc-middleware's Prometheus provider (grpc_server_started_total,
//     grpc_server_handled_total, grpc_server_handling_seconds by grpc_type,
//     grpc_service, grpc_method and grpc_code), plus whatever the service
//     registers on Registry, served at /metrics on the metrics address.
type Telemetry struct {
	// Registry holds the server's series; a service adds its own to it.
	Registry *prometheus.Registry
	provider *sdktrace.TracerProvider
	rpc      *grpcprom.ServerMetrics
}

// exportTimeout bounds one export to Zipkin; queueSize bounds the spans
// waiting for it (past it, new spans are dropped rather than waited for).
const (
	exportTimeout = 2 * time.Second
	queueSize     = 4096
	batchDelay    = 500 * time.Millisecond
)

func newTelemetry(cfg Config, log *slog.Logger) (*Telemetry, error) {
	// A failed export (Zipkin down) is a warning in the service's own log
	// format, not a line from the standard logger.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("telemetry export failed", "error", err.Error())
	}))
	attrs := []attribute.KeyValue{semconv.ServiceName(cfg.Service), semconv.ServiceNamespace("shop")}
	if cfg.Impl != "" {
		attrs = append(attrs, attribute.String("shop.impl", cfg.Impl))
	}
	opts := []sdktrace.TracerProviderOption{
		sdktrace.WithResource(resource.NewSchemaless(attrs...)),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.TraceSampleRatio))),
	}
	if cfg.ZipkinURL != "" {
		exp, err := zipkin.New(cfg.ZipkinURL, zipkin.WithClient(&http.Client{Timeout: exportTimeout}))
		if err != nil {
			return nil, fmt.Errorf("zipkin exporter for %s: %w", cfg.ZipkinURL, err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp,
			sdktrace.WithMaxQueueSize(queueSize),
			sdktrace.WithBatchTimeout(batchDelay),
			sdktrace.WithExportTimeout(exportTimeout)))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))

	reg := prometheus.NewRegistry()
	rpc := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
		grpcprom.WithHistogramBuckets([]float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}),
	))
	reg.MustRegister(rpc, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &Telemetry{Registry: reg, provider: tp, rpc: rpc}, nil
}

// serverOptions instruments a grpc.Server: the stats handler makes the spans
// (health checks and reflection excepted); the metrics interceptors go
// outermost so they see the status the client sees.
func (t *Telemetry) serverOptions(cfg Config) []grpc.ServerOption {
	spanAttrs := []attribute.KeyValue{}
	if cfg.Impl != "" {
		spanAttrs = append(spanAttrs, attribute.String("shop.impl", cfg.Impl))
	}
	return []grpc.ServerOption{
		grpc.StatsHandler(otelgrpc.NewServerHandler(
			otelgrpc.WithTracerProvider(t.provider),
			otelgrpc.WithFilter(traced),
			otelgrpc.WithSpanAttributes(spanAttrs...),
		)),
		grpc.ChainUnaryInterceptor(t.rpc.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(t.rpc.StreamServerInterceptor()),
	}
}

// traced is false for Envoy's health checks (every second) and reflection.
func traced(info *stats.RPCTagInfo) bool {
	return filters.Not(filters.HealthCheck())(info) && !strings.HasPrefix(info.FullMethodName, "/grpc.reflection.")
}

// serveMetrics serves /metrics on addr until ctx is done; an empty addr
// serves nothing. A bind failure is returned at once.
func (t *Telemetry) serveMetrics(ctx context.Context, addr string, log *slog.Logger) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("serve metrics on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(t.Registry, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	// done closes when Serve returns, which srv.Close in stop guarantees.
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server failed", "addr", addr, "error", err.Error())
		}
	}()
	log.Info("serving metrics", "addr", lis.Addr().String())
	return func() {
		_ = srv.Close()
		<-done
	}, nil
}

// shutdown sends the spans still queued, within the export timeout.
func (t *Telemetry) shutdown(log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), exportTimeout)
	defer cancel()
	if err := t.provider.Shutdown(ctx); err != nil {
		log.Warn("spans not exported at shutdown", "error", err.Error())
	}
}

// traceHandler adds the trace_id and span_id of the context's span to every
// record logged with that context.
type traceHandler struct{ slog.Handler }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(attrs)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}
