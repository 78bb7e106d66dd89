package server

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// GCPercent is the garbage collector's target in the services (GOGC) unless
// the environment sets GOGC: the heap may grow to five times what is live
// between collections instead of twice. A call allocates a few kilobytes
// (the request and reply, the span, the log line and the metrics' labels)
// and a service's live heap is a few megabytes, so at Go's default of 100
// the collector ran many times a second under load; its marking and the
// allocations it slows were a fifth of catalog's CPU per call, for about
// 12 MB more memory at 400 (docs/performance.md, P7 (Go)).
const GCPercent = 400

// tuneGC sets GCPercent unless lookup finds GOGC, which Go itself reads.
func tuneGC(lookup func(string) (string, bool)) {
	if _, set := lookup("GOGC"); !set {
		debug.SetGCPercent(GCPercent)
	}
}

// Main runs a command's run function with a context that SIGTERM or an
// interrupt cancels (run drains the server when it is), then exits: 0 after a
// clean stop or -h, 1 with the error on stderr otherwise. Every command's main
// is one call to it.
func Main(name string, run func(ctx context.Context, args []string) error) {
	tuneGC(os.LookupEnv)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(ctx, os.Args[1:])
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0) // -h printed the usage
	case err != nil:
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}
