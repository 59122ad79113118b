package watcher

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxdrop/mxdrop/importer/intake"
	"github.com/mxdrop/mxdrop/importer/quarantine"
	"github.com/mxdrop/mxdrop/internal/testenv"
)

// partialRun starts a daemon over c whose account bob's Maildir cannot be made (its
// path is a regular file), drops a message for alice and bob, and waits until alice's
// copy is made and the file kept claimed for a retry. It returns the claimed file, the
// Manager, bob's Maildir and a stop function.
func partialRun(t *testing.T, c *Connector, root string) (string, *Manager, string, func()) {
	t.Helper()
	c.Settle = 0
	bob := filepath.Join(root, "mail", "bob")
	if err := os.MkdirAll(filepath.Dir(bob), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bob, []byte("not a folder"), 0o640); err != nil {
		t.Fatal(err)
	}
	m := NewManager("daemon", 1, zerolog.Nop())
	m.retryFirst = 300 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, []*Connector{c}) }()
	time.Sleep(100 * time.Millisecond)
	dropRename(t, c.DropFolder, "m1", message(1, "alice@example.com", "bob@example.com"))
	waitFor(t, "the partial delivery", 5*time.Second, func() bool { return m.Counts().Retry.Load() > 0 })
	if n := countNew(t, filepath.Join(root, "mail", "alice")); n != 1 {
		t.Fatalf("alice has %d messages after the first attempt, want 1", n)
	}
	claimed := ClaimedFiles(c.DropFolder)
	if len(claimed) != 1 {
		t.Fatalf("claimed: %v", claimed)
	}
	return claimed[0], m, bob, func() { cancel(); <-done }
}

// TestChangedAfterPartialDelivery: a claimed file delivered to one of its accounts and
// kept for a retry (the other account's Maildir could not be made) that changes before
// the retry is not delivered again under a new identity (a second copy for the first
// account): it is quarantined with the identity of its first delivery, and a replay
// after the fix delivers it to the other account only.
func TestChangedAfterPartialDelivery(t *testing.T) {
	c, root := testConnector(t)
	claimed, m, bob, stop := partialRun(t, c, root)
	defer stop()
	f, err := os.OpenFile(claimed, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("appended after the first delivery\n")
	f.Close()
	os.Remove(bob)

	waitFor(t, "the retry", 5*time.Second, func() bool {
		return m.Counts().Quarantined.Load()+m.Counts().Imported.Load() > 0
	})
	if n := countNew(t, filepath.Join(root, "mail", "alice")); n != 1 {
		t.Fatalf("alice has %d messages, want 1", n)
	}
	if n := countNew(t, bob); n != 0 {
		t.Errorf("bob has %d messages before the replay, want 0", n)
	}
	entries, err := quarantine.ForConnector(c.DropFolder).List()
	if err != nil || len(entries) != 1 || entries[0].Name != "m1" || entries[0].Record == nil {
		t.Fatalf("quarantine: %+v %v", entries, err)
	}
	if r := entries[0].Record; r.Reason != "changed_after_delivery" || !strings.Contains(r.Detail, "alice@example.com") {
		t.Errorf("reason %q, %q", r.Reason, r.Detail)
	}
	// The replay takes the first identity: alice's copy is found, bob gets his.
	if out := c.Intake.Replay(context.Background(), entries[0]); out != intake.Delivered {
		t.Errorf("replay: %s", out)
	}
	if n := countNew(t, filepath.Join(root, "mail", "alice")); n != 1 {
		t.Errorf("alice has %d messages after the replay, want 1", n)
	}
	if n := countNew(t, bob); n != 1 {
		t.Errorf("bob has %d messages after the replay, want 1", n)
	}
}

// TestRemovedAfterPartialDelivery: a claimed file removed by someone else after a
// retry kept it with one of its two copies made is reported as lost undelivered for
// the other, at error level, never as finished.
func TestRemovedAfterPartialDelivery(t *testing.T) {
	c, root := testConnector(t)
	var logs testenv.LogBuffer
	c.Log = zerolog.New(&logs)
	claimed, m, _, stop := partialRun(t, c, root)
	defer stop()
	os.Remove(claimed)
	waitFor(t, "the retry", 5*time.Second, func() bool { return strings.Contains(logs.String(), `"outcome":"vanished"`) })
	for _, ev := range logs.Events(t, "outcome", "vanished") {
		if ev["level"] != "error" || !strings.Contains(ev["message"].(string), "before its delivery was complete") {
			t.Errorf("vanished reported as %v: %v", ev["level"], ev["message"])
		}
	}
	if n := m.Counts().Imported.Load(); n != 0 {
		t.Errorf("imported %d, want 0", n)
	}
}

// TestRetryAfterPartialDelivery: unchanged, the file kept after a partial delivery is
// delivered at the retry to the account that lacked it, the other keeping its one copy.
func TestRetryAfterPartialDelivery(t *testing.T) {
	c, root := testConnector(t)
	_, m, bob, stop := partialRun(t, c, root)
	defer stop()
	os.Remove(bob)
	waitFor(t, "the retry", 5*time.Second, func() bool { return m.Counts().Imported.Load() > 0 })
	if n := countNew(t, filepath.Join(root, "mail", "alice")); n != 1 {
		t.Errorf("alice has %d messages, want 1", n)
	}
	if n := countNew(t, bob); n != 1 {
		t.Errorf("bob has %d messages, want 1", n)
	}
	if n := m.Counts().Quarantined.Load(); n != 0 {
		t.Errorf("quarantined %d", n)
	}
	if left := ClaimedFiles(c.DropFolder); len(left) != 0 {
		t.Errorf("claims left: %v", left)
	}
}
