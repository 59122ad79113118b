package main

import (
	"runtime"
	"testing"
)

// TestSetProcs: mxdrop run gives the runtime procsPerCPU processors per CPU of its
// default, and leaves a GOMAXPROCS from the environment alone.
func TestSetProcs(t *testing.T) {
	prev := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(prev)
	for def, want := range map[int]int{1: procsPerCPU, 2: 2 * procsPerCPU, 0: procsPerCPU} {
		if got := procsFor(def); got != want {
			t.Errorf("procsFor(%d) = %d, want %d", def, got, want)
		}
	}
	t.Setenv("GOMAXPROCS", "3")
	runtime.GOMAXPROCS(3)
	if n := setProcs(); n != 3 || runtime.GOMAXPROCS(0) != 3 {
		t.Errorf("GOMAXPROCS=3 in the environment: %d processors, want 3", runtime.GOMAXPROCS(0))
	}
	t.Setenv("GOMAXPROCS", "")
	runtime.GOMAXPROCS(2)
	if n := setProcs(); n != 2*procsPerCPU || runtime.GOMAXPROCS(0) != n {
		t.Errorf("no GOMAXPROCS in the environment, default 2: %d processors, want %d", runtime.GOMAXPROCS(0), 2*procsPerCPU)
	}
}
