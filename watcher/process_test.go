package watcher

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxdrop/mxdrop/importer"
	"github.com/mxdrop/mxdrop/importer/intake"
	"github.com/mxdrop/mxdrop/internal/testenv"
)

// TestProcessVanishedClaim: a claimed file that someone else removed is not retried
// forever; it is given up at once.
func TestProcessVanishedClaim(t *testing.T) {
	c, _ := testConnector(t)
	if got, _ := c.process(context.Background(), filepath.Join(c.DropFolder, "gone.eml"), true, nil, nil); got != intake.Skipped {
		t.Errorf("vanished claim: outcome %v, want Skipped (not Retry)", got)
	}
}

// TestProcessNotRegular: a claimed symbolic link or FIFO is quarantined unread with the
// reason not_regular_file; the link's target stays untouched and unread.
func TestProcessNotRegular(t *testing.T) {
	c, root := testConnector(t)
	target := filepath.Join(root, "secret")
	if err := os.WriteFile(target, []byte("Subject: secret\n\nsecret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(c.DropFolder, "link.eml")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.process(context.Background(), link, false, nil, nil); got != intake.Quarantined {
		t.Fatalf("symbolic link: outcome %v, want Quarantined", got)
	}
	q := filepath.Join(c.DropFolder, "ImportFailed", "link.eml")
	if fi, err := os.Lstat(q); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the link itself is not in ImportFailed/: %v", err)
	}
	data, err := os.ReadFile(q + ".json")
	if err != nil {
		t.Fatal(err)
	}
	var rec struct{ Reason string }
	if err := json.Unmarshal(data, &rec); err != nil || rec.Reason != "not_regular_file" {
		t.Errorf("reason %q (%v), want not_regular_file", rec.Reason, err)
	}
	if _, err := os.Stat(target); err != nil {
		t.Errorf("the link's target was touched: %v", err)
	}
	if f, err := openRegular(q); err == nil {
		f.Close()
		t.Errorf("openRegular opened a symbolic link")
	}
}

// removingBouncer fails the first DSN after removing the claimed file, as someone
// else would between the delivery and the acknowledgement; with alsoCopies it removes
// the delivered copies as well.
type removingBouncer struct {
	t          *testing.T
	drop       string
	alsoCopies bool
	calls      int
}

func (b *removingBouncer) Bounce(_ context.Context, _ string, msg importer.Message, res importer.Result) ([]byte, error) {
	b.calls++
	if b.calls > 1 {
		return nil, nil
	}
	var claimed []string
	for _, p := range ClaimedFiles(b.drop) {
		if OriginalName(p) == msg.Name {
			claimed = append(claimed, p)
		}
	}
	if len(claimed) != 1 {
		b.t.Errorf("claimed file %s not found: %v", msg.Name, claimed)
	}
	for _, p := range claimed {
		os.Remove(p)
	}
	if b.alsoCopies {
		for _, d := range res.Delivered {
			os.Remove(d.Path)
		}
	}
	return nil, fmt.Errorf("relay down")
}

// TestClaimRemovedAfterDelivery: a claimed file removed by someone else after its
// delivery, while its DSN failed, is finished once its copies are found under their
// deterministic names, and reported once at error level when they are not; in neither
// case is it retried again.
func TestClaimRemovedAfterDelivery(t *testing.T) {
	for _, copiesGone := range []bool{false, true} {
		t.Run(fmt.Sprintf("copies_gone=%v", copiesGone), func(t *testing.T) {
			c, root := testConnector(t)
			var logs testenv.LogBuffer
			c.Log = zerolog.New(&logs)
			c.Intake.Bouncer = &removingBouncer{t: t, drop: c.DropFolder, alsoCopies: copiesGone}
			m := NewManager("daemon", 1, zerolog.Nop())
			m.retryFirst = 20 * time.Millisecond
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- m.Run(ctx, []*Connector{c}) }()
			defer func() { cancel(); <-done }()
			time.Sleep(100 * time.Millisecond)
			dropRename(t, c.DropFolder, "m1", message(1, "alice@example.com", "nobody@example.com"))

			level, text := "warn", "after its delivery: finished"
			if copiesGone {
				level, text = "error", "nothing left to import"
			}
			waitFor(t, "the failed DSN", 5*time.Second, func() bool { return m.Counts().Retry.Load() > 0 })
			// Retries come after 20, 40, 80, 160 and 320ms.
			time.Sleep(700 * time.Millisecond)
			var evs []map[string]any
			for _, ev := range logs.Events(t, "file", "m1") {
				if msg, _ := ev["message"].(string); strings.Contains(msg, text) && ev["level"] == level {
					evs = append(evs, ev)
				}
			}
			if n := m.Counts().Retry.Load(); n != 1 {
				t.Errorf("%d retries, want only the one of the failed DSN", n)
			}
			if strings.Contains(logs.String(), "claimed file unreadable") {
				t.Errorf("the removed claim was retried")
			}
			if len(evs) != 1 {
				t.Errorf("%d events %q, want 1", len(evs), text)
			}
			want := int64(1)
			if copiesGone {
				want = 0
			}
			if n := m.Counts().Imported.Load(); n != want {
				t.Errorf("imported %d, want %d", n, want)
			}
			if n := countNew(t, filepath.Join(root, "mail", "alice")); !copiesGone && n != 1 {
				t.Errorf("alice has %d messages, want 1", n)
			}
		})
	}
}
