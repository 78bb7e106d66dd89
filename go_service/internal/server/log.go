package server

import (
	"io"
	"log/slog"
	"strings"

	"google.golang.org/grpc/codes"
)

// NewLogger returns a logger writing one JSON object per line to w, with the
// "service" key on every line, as docs/conventions.md asks, and the
// trace_id and span_id of the span in the context a line is logged with.
func NewLogger(w io.Writer, service string, level slog.Leveler) *slog.Logger {
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level, ReplaceAttr: lowerLevel})
	return slog.New(traceHandler{h}).With("service", service)
}

// lowerLevel writes the level as every service in the shop does: "info",
// not slog's "INFO" (docs/conventions.md). The four levels the services use
// are spelt once, not lower-cased on every line.
func lowerLevel(_ []string, a slog.Attr) slog.Attr {
	if a.Key == slog.LevelKey {
		if l, ok := a.Value.Any().(slog.Level); ok {
			a.Value = levelValue(l)
		}
	}
	return a
}

var (
	debugValue = slog.StringValue("debug")
	infoValue  = slog.StringValue("info")
	warnValue  = slog.StringValue("warn")
	errorValue = slog.StringValue("error")
)

func levelValue(l slog.Level) slog.Value {
	switch l {
	case slog.LevelDebug:
		return debugValue
	case slog.LevelInfo:
		return infoValue
	case slog.LevelWarn:
		return warnValue
	case slog.LevelError:
		return errorValue
	}
	return slog.StringValue(strings.ToLower(l.String()))
}

// codeNames maps each gRPC code to its canonical name as google.rpc.Code
// spells it (codes.Code.String gives "NotFound"; the logs use "NOT_FOUND").
var codeNames = map[codes.Code]string{
	codes.OK:                 "OK",
	codes.Canceled:           "CANCELLED",
	codes.Unknown:            "UNKNOWN",
	codes.InvalidArgument:    "INVALID_ARGUMENT",
	codes.DeadlineExceeded:   "DEADLINE_EXCEEDED",
	codes.NotFound:           "NOT_FOUND",
	codes.AlreadyExists:      "ALREADY_EXISTS",
	codes.PermissionDenied:   "PERMISSION_DENIED",
	codes.ResourceExhausted:  "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION",
	codes.Aborted:            "ABORTED",
	codes.OutOfRange:         "OUT_OF_RANGE",
	codes.Unimplemented:      "UNIMPLEMENTED",
	codes.Internal:           "INTERNAL",
	codes.Unavailable:        "UNAVAILABLE",
	codes.DataLoss:           "DATA_LOSS",
	codes.Unauthenticated:    "UNAUTHENTICATED",
}

// CodeName returns the canonical upper-case name of c, for example
// "NOT_FOUND", or "Code(n)" for a code gRPC does not define.
func CodeName(c codes.Code) string {
	if name, ok := codeNames[c]; ok {
		return name
	}
	return c.String()
}
