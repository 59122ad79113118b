package main

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestSummarizeStages: the slowest 1% and the fastest half are told apart by their
// latency, and each span is the mean of its own stage differences; messages without
// every stage, and lines of other names, are left out.
func TestSummarizeStages(t *testing.T) {
	const n = 200
	base := time.Unix(1_800_000_000, 0)
	sent, arrived := make([]time.Time, n), make([]time.Time, n)
	var lines strings.Builder
	for i := 0; i < n; i++ {
		// Fast messages take 100 µs in each span; the two slowest wait 5 ms for a
		// worker more.
		queue := 100 * time.Microsecond
		if i == 7 || i == 150 {
			queue = 5 * time.Millisecond
		}
		s := base.Add(time.Duration(i) * time.Millisecond)
		read := s.Add(100 * time.Microsecond)
		worker := read.Add(queue)
		claimed := worker.Add(100 * time.Microsecond)
		visible := claimed.Add(100 * time.Microsecond)
		synced := visible.Add(2 * time.Millisecond)
		sent[i], arrived[i] = s, visible.Add(100*time.Microsecond)
		fmt.Fprintf(&lines, "m%06d %d %d %d %d %d\n", i, read.UnixNano(), worker.UnixNano(), claimed.UnixNano(), visible.UnixNano(), synced.UnixNano())
	}
	fmt.Fprintf(&lines, "m%06d %d 0 0 0 0\n", n-1, base.UnixNano()) // replaces a line: not every stage
	lines.WriteString("other 1 2 3 4 5\n")                          // not the benchmark's: skipped
	st, err := readStages(strings.NewReader(lines.String()), n)
	if err != nil {
		t.Fatal(err)
	}
	s := summarizeStages(st, sent, arrived)
	if s.nSlow != 1 || s.nFast != 99 {
		t.Fatalf("slowest %d, fastest half %d; want 1 and 99 of the 199 complete", s.nSlow, s.nFast)
	}
	want := []time.Duration{100 * time.Microsecond, 5 * time.Millisecond, 100 * time.Microsecond, 100 * time.Microsecond, 100 * time.Microsecond, 2 * time.Millisecond}
	for k, sp := range stageSpans {
		if s.slow[k] != want[k] {
			t.Errorf("slowest, %s: %v, want %v", sp.name, s.slow[k], want[k])
		}
		fastWant := want[k]
		if k == 1 {
			fastWant = 100 * time.Microsecond
		}
		if s.fast[k] != fastWant {
			t.Errorf("fastest half, %s: %v, want %v", sp.name, s.fast[k], fastWant)
		}
	}
	if _, err := readStages(strings.NewReader("m000001 1 2\n"), n); err == nil {
		t.Error("a short line was read without an error")
	}
}
