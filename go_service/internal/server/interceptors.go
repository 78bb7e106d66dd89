package server

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// RequestIDKey is the metadata key whose value is logged as request_id and
// that servers forward to the services they call.
const RequestIDKey = "x-request-id"

// healthMethodPrefix marks the health checks, which are logged at debug only:
// Envoy calls them every second.
const healthMethodPrefix = "/grpc.health.v1.Health/"

// errPanic is what a client sees when a handler panics. It says nothing about
// the panic itself; the log line has the details.
var errPanic = status.Error(codes.Internal, "The server hit an internal error while handling this call; the error has been logged, and the call can be retried.")

// UnaryLogging logs one line per finished unary RPC with the method, the
// status code name, the duration and the x-request-id when the call has one.
func UnaryLogging(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		logRPC(ctx, log, info.FullMethod, start, err)
		return resp, err
	}
}

// StreamLogging is UnaryLogging for streaming RPCs; the line is written when
// the stream ends.
func StreamLogging(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := time.Now()
		err := handler(srv, ss)
		logRPC(ss.Context(), log, info.FullMethod, start, err)
		return err
	}
}

func logRPC(ctx context.Context, log *slog.Logger, method string, start time.Time, err error) {
	st := status.Convert(err)
	level := levelFor(method, st.Code())
	h := log.Handler()
	if !h.Enabled(ctx, level) {
		return
	}
	// The record goes to the handler directly, without a program counter:
	// Logger.LogAttrs takes one with runtime.Callers on every line, for a
	// source the line does not show (the handler has no AddSource). One clock
	// read gives the line's time and the duration.
	now := time.Now()
	r := slog.NewRecord(now, level, "rpc", 0)
	r.AddAttrs(
		slog.String("method", method),
		slog.String("code", CodeName(st.Code())),
		slog.Float64("duration_ms", float64(now.Sub(start).Microseconds())/1000),
	)
	if id := requestID(ctx); id != "" {
		r.AddAttrs(slog.String("request_id", id))
	}
	if err != nil {
		r.AddAttrs(slog.String("error", st.Message()))
	}
	_ = h.Handle(ctx, r)
}

// levelFor logs server faults at error, health checks at debug and everything
// else, client mistakes included, at info.
func levelFor(method string, code codes.Code) slog.Level {
	switch {
	case code == codes.Internal || code == codes.Unknown || code == codes.DataLoss:
		return slog.LevelError
	case strings.HasPrefix(method, healthMethodPrefix):
		return slog.LevelDebug
	default:
		return slog.LevelInfo
	}
}

func requestID(ctx context.Context) string {
	if v := metadata.ValueFromIncomingContext(ctx, RequestIDKey); len(v) > 0 {
		return v[0]
	}
	return ""
}

// UnaryRecovery turns a panic in a handler into INTERNAL and logs it with the
// stack, so one bad call does not take the server down.
func UnaryRecovery(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if p := recover(); p != nil {
				logPanic(ctx, log, info.FullMethod, p)
				resp, err = nil, errPanic
			}
		}()
		return handler(ctx, req)
	}
}

// StreamRecovery is UnaryRecovery for streaming RPCs. It recovers panics in
// the handler's own goroutine; a goroutine the handler starts must recover its
// own.
func StreamRecovery(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer func() {
			if p := recover(); p != nil {
				logPanic(ss.Context(), log, info.FullMethod, p)
				err = errPanic
			}
		}()
		return handler(srv, ss)
	}
}

func logPanic(ctx context.Context, log *slog.Logger, method string, p any) {
	attrs := []slog.Attr{
		slog.String("method", method),
		slog.String("panic", fmt.Sprint(p)),
		slog.String("stack", string(debug.Stack())),
	}
	if id := requestID(ctx); id != "" {
		attrs = append(attrs, slog.String("request_id", id))
	}
	log.LogAttrs(ctx, slog.LevelError, "handler panicked", attrs...)
}
