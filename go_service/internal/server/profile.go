package server

import (
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
)

// startCPUProfile writes a pprof CPU profile to path until the returned
// function is called (Serve calls it when the shutdown ends). An empty path,
// the default, profiles nothing. `make profile` sets SHOP_CPU_PROFILE to look
// at a Go service under a bench scenario (docs/performance.md).
func startCPUProfile(path string, log *slog.Logger) (func(), error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("SHOP_CPU_PROFILE: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("SHOP_CPU_PROFILE: start the CPU profile: %w", err)
	}
	log.Info("cpu profile started", "path", path)
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			log.Error("cpu profile not written", "path", path, "error", err.Error())
			return
		}
		log.Info("cpu profile written", "path", path)
	}, nil
}
