package bounce

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/configs"
)

// TestOpenBackoff checks that bounce.min_backoff and bounce.max_backoff reach the
// outbox, and that zero keeps the outbox's defaults.
func TestOpenBackoff(t *testing.T) {
	for _, tc := range []struct {
		name     string
		min, max time.Duration
		wantMin  time.Duration
		wantMax  time.Duration
	}{
		{"defaults", 0, 0, DefaultMinBackoff, DefaultMaxBackoff},
		{"set", 200 * time.Millisecond, 2 * time.Second, 200 * time.Millisecond, 2 * time.Second},
		{"min only", 2 * time.Hour, 0, 2 * time.Hour, 2 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := &configs.Config{
				StateDir: filepath.Join(dir, "state"),
				SMTP:     configs.SMTP{Host: "127.0.0.1", Port: 25, ReportingMTA: "mx.example.com"},
				Bounce: configs.Bounce{Language: "en", MinBackoff: configs.Duration(tc.min),
					MaxBackoff: configs.Duration(tc.max)},
				Connectors: []configs.Connector{{Name: "mx", DropFolder: filepath.Join(dir, "drop")}},
			}
			b, err := Open(cfg, OpenOptions{})
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer b.Close()
			o := b.Outbox()
			if o == nil {
				t.Fatal("no outbox")
			}
			if o.opts.MinBackoff != tc.wantMin || o.opts.MaxBackoff != tc.wantMax {
				t.Errorf("backoff %v..%v, want %v..%v", o.opts.MinBackoff, o.opts.MaxBackoff, tc.wantMin, tc.wantMax)
			}
			if got := o.backoff(1); got != tc.wantMin {
				t.Errorf("first backoff %v, want %v", got, tc.wantMin)
			}
		})
	}
}
