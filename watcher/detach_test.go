package watcher

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxdrop/mxdrop/importer"
)

// waitingBouncer holds the DSN of the first message until bob has a copy of another.
type waitingBouncer struct {
	bob     string
	started chan struct{}
}

func (b *waitingBouncer) Bounce(_ context.Context, _ string, _ importer.Message, _ importer.Result) ([]byte, error) {
	close(b.started)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if n, _ := filepath.Glob(filepath.Join(b.bob, "new", "*")); len(n) > 0 {
			return nil, nil
		}
		if time.Now().After(deadline) {
			return nil, errors.New("no other file was delivered while this one waited")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDetachedJobFreesWorker: once a file's copies are in place, the rest of its job
// (the syncs shared with other files, the DSN, the acknowledgement) waits off the
// worker pool. With one worker, a second file is delivered while the first one's DSN
// is still being written, and both are then finished and acknowledged.
func TestDetachedJobFreesWorker(t *testing.T) {
	c, root := testConnector(t)
	bounced := &waitingBouncer{bob: filepath.Join(root, "mail", "bob"), started: make(chan struct{})}
	c.Intake.Bouncer = bounced
	m := NewManager("daemon", 1, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, []*Connector{c}) }()
	time.Sleep(100 * time.Millisecond) // the watch is set up

	// nobody@example.com is no account: a failed recipient, so a DSN.
	dropRename(t, c.DropFolder, "first", message(1, "alice@example.com", "nobody@example.com"))
	select {
	case <-bounced.started:
	case <-time.After(5 * time.Second):
		t.Fatal("the first file's DSN was never started")
	}
	dropRename(t, c.DropFolder, "second", message(2, "bob@example.com"))
	waitFor(t, "both files finished", 15*time.Second, func() bool {
		return m.Counts().Imported.Load() == 2
	})
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}
	if n := m.Counts().Retry.Load(); n != 0 {
		t.Errorf("%d retries: the first file's DSN timed out waiting for the second file", n)
	}
	if left := ClaimedFiles(c.DropFolder); len(left) != 0 {
		t.Errorf("claims left: %v", left)
	}
}
