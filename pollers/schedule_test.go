package pollers

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestNextWait(t *testing.T) {
	const mid = 0.5 // no jitter
	for _, tc := range []struct {
		interval time.Duration
		failures int
		want     time.Duration
	}{
		{5 * time.Minute, 0, 5 * time.Minute},
		{5 * time.Minute, 1, 30 * time.Second},
		{5 * time.Minute, 2, time.Minute},
		{5 * time.Minute, 4, 4 * time.Minute},
		{5 * time.Minute, 8, time.Hour}, // 30s·2^7 = 64m, capped at 1h
		{5 * time.Minute, 50, time.Hour},
		{10 * time.Second, 1, 10 * time.Second},
		{10 * time.Second, 3, 40 * time.Second},
		{3 * time.Hour, 20, 3 * time.Hour}, // the cap is the interval when it is longer
		{0, 0, time.Minute},
	} {
		if got := nextWait(tc.interval, tc.failures, mid); got != tc.want {
			t.Errorf("nextWait(%v, %d) = %v, want %v", tc.interval, tc.failures, got, tc.want)
		}
	}
	// Jitter stays within ±10% and covers both sides.
	lo, hi := nextWait(time.Minute, 0, 0), nextWait(time.Minute, 0, 0.999999)
	if lo != 54*time.Second || hi < 65*time.Second || hi > 66*time.Second {
		t.Errorf("jitter range %v..%v, want 54s..66s", lo, hi)
	}
	// Growth is monotonic up to the cap.
	prev := time.Duration(0)
	for n := 1; n < 20; n++ {
		d := nextWait(5*time.Minute, n, mid)
		if d < prev {
			t.Fatalf("backoff shrank at failure %d: %v < %v", n, d, prev)
		}
		prev = d
	}
}

func TestStartDelay(t *testing.T) {
	if d := startDelay(5*time.Minute, 0.999); d > startSpreadMax {
		t.Errorf("start delay %v above %v", d, startSpreadMax)
	}
	if d := startDelay(time.Second, 0.5); d != 50*time.Millisecond {
		t.Errorf("start delay of 1s interval = %v, want 50ms", d)
	}
}

func TestSleepCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if sleep(ctx, time.Hour) {
		t.Fatal("sleep reported the full wait on a cancelled context")
	}
	if time.Since(start) > time.Second {
		t.Fatal("sleep did not return at once")
	}
	if !sleep(context.Background(), time.Millisecond) {
		t.Fatal("sleep did not report a completed wait")
	}
}

func TestCountFailures(t *testing.T) {
	boom := errors.New("connection refused")
	partial := &FolderErrors{Err: errors.New("folder Archiv: NO [NONEXISTENT]")}
	for _, c := range []struct {
		before     int
		progressed bool
		err        error
		want       int
	}{
		{3, false, nil, 0},
		{3, false, partial, 0},
		{3, false, fmt.Errorf("cycle: %w", partial), 0},
		{3, false, boom, 4},
		{0, false, boom, 1},
		{5, true, boom, 1},
	} {
		if got := countFailures(c.before, c.progressed, c.err); got != c.want {
			t.Errorf("countFailures(%d, %v, %v) = %d, want %d", c.before, c.progressed, c.err, got, c.want)
		}
	}
}
