package server

import (
	"runtime/debug"
	"testing"
)

// gcPercent reads the collector's current target.
func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

func TestTheServicesCollectGarbageAtGCPercentUnlessGOGCIsSet(t *testing.T) {
	was := gcPercent()
	t.Cleanup(func() { debug.SetGCPercent(was) })

	debug.SetGCPercent(100)
	tuneGC(func(string) (string, bool) { return "", false })
	if got := gcPercent(); got != GCPercent {
		t.Errorf("without GOGC the target is %d, want %d", got, GCPercent)
	}

	debug.SetGCPercent(150) // as the runtime would have read GOGC=150
	tuneGC(func(name string) (string, bool) { return "150", name == "GOGC" })
	if got := gcPercent(); got != 150 {
		t.Errorf("with GOGC=150 the target is %d, want GOGC's 150 kept", got)
	}
}
