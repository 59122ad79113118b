package watcher

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxdrop/mxdrop/internal/sharetest"
)

// shareConnector is testConnector with its drop folder on a FUSE mount of a share;
// the test writes into share.Backing as the MTA on another host does.
func shareConnector(t *testing.T) (*Connector, *sharetest.Share, string) {
	t.Helper()
	c, root := testConnector(t)
	share := sharetest.New(t)
	c.DropFolder = share.Mount()
	c.Settle = 500 * time.Millisecond // the default
	return c, share, root
}

func runManager(t *testing.T, m *Manager, c *Connector) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, []*Connector{c}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}

// TestShareRenamedInPolled: files another host renames into a share raise no event;
// at the defaults (watch auto, poll_interval 1s) they are found by listing, each
// imported once however many listings see it.
func TestShareRenamedInPolled(t *testing.T) {
	c, share, root := shareConnector(t)
	m := NewManager("poll", 2, zerolog.Nop())
	runManager(t, m, c)
	alice := filepath.Join(root, "mail", "alice")
	waitFor(t, "watch mode chosen", 5*time.Second, func() bool {
		h := m.Health()
		return len(h) == 1 && h[0].Watch == WatchPoll
	})
	for i := 0; i < 30; i++ {
		share.Deliver(".", fmt.Sprintf("m%02d", i), message(i, "alice@example.com"))
	}
	waitFor(t, "renamed-in files on the share imported", 10*time.Second, func() bool { return countNew(t, alice) == 30 })
	time.Sleep(2500 * time.Millisecond) // more listings: nothing is taken twice
	if n := countNew(t, alice); n != 30 {
		t.Errorf("alice has %d messages, want 30", n)
	}
	if n := m.Counts().Skipped.Load(); n != 0 {
		t.Errorf("%d files offered more than once (skipped claims)", n)
	}
	if h := m.Health(); !strings.Contains(h[0].WatchReason, "fuse") {
		t.Errorf("watch reason does not name the file system: %q", h[0].WatchReason)
	}
}

// TestShareSlowWriterInPlace: another host writes a file in place, slowly, with pauses
// shorter than settle; it is taken only whole.
func TestShareSlowWriterInPlace(t *testing.T) {
	c, share, root := shareConnector(t)
	m := NewManager("poll", 2, zerolog.Nop())
	runManager(t, m, c)
	alice := filepath.Join(root, "mail", "alice")
	time.Sleep(200 * time.Millisecond)
	f, err := os.Create(filepath.Join(share.Backing, "inplace"))
	if err != nil {
		t.Fatal(err)
	}
	data := message(2, "alice@example.com")
	data = append(data, []byte(strings.Repeat("more body\n", 20))...)
	for i := 0; i < len(data); i += 40 {
		f.Write(data[i:min(i+40, len(data))])
		time.Sleep(200 * time.Millisecond) // under settle; the whole write spans listings
		if countNew(t, alice) != 0 {
			t.Fatalf("taken half-written after %d of %d bytes", i+40, len(data))
		}
	}
	f.Close()
	waitFor(t, "in-place file imported", 10*time.Second, func() bool { return countNew(t, alice) == 1 })
	entries, _ := os.ReadDir(filepath.Join(alice, "new"))
	b, _ := os.ReadFile(filepath.Join(alice, "new", entries[0].Name()))
	if !strings.HasSuffix(string(b), "more body\n") || !strings.Contains(string(b), strings.Repeat("more body\n", 20)) {
		t.Errorf("imported incomplete: %q", b)
	}
}

// TestOnceTakesYoungFiles: run --once right after a copy takes every file, though all
// are younger than settle when it starts.
func TestOnceTakesYoungFiles(t *testing.T) {
	c, root := testConnector(t)
	c.Settle = 500 * time.Millisecond
	for i := 0; i < 20; i++ {
		if err := os.WriteFile(filepath.Join(c.DropFolder, fmt.Sprintf("m%02d.eml", i)), message(i, "alice@example.com"), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	m := NewManager("once", 2, zerolog.Nop())
	if err := m.Once(context.Background(), []*Connector{c}); err != nil {
		t.Fatal(err)
	}
	if n := countNew(t, filepath.Join(root, "mail", "alice")); n != 20 {
		t.Errorf("alice has %d messages, want 20 (imported %d, skipped %d, waiting %d)", n,
			m.Counts().Imported.Load(), m.Counts().Skipped.Load(), m.Counts().Waiting.Load())
	}
}

// TestOnceLeavesFileStillWritten: a file that keeps changing is left in place and
// counted as waiting; the complete one beside it is imported.
func TestOnceLeavesFileStillWritten(t *testing.T) {
	c, root := testConnector(t)
	c.Settle = 300 * time.Millisecond
	dropRename(t, c.DropFolder, "done", message(1, "alice@example.com"))
	path := filepath.Join(c.DropFolder, "growing")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	stop := make(chan struct{})
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
				f.Write([]byte("x\n"))
			}
		}
	}()
	m := NewManager("once", 2, zerolog.Nop())
	err = m.Once(context.Background(), []*Connector{c})
	close(stop)
	<-wrote
	if err != nil {
		t.Fatal(err)
	}
	if n := countNew(t, filepath.Join(root, "mail", "alice")); n != 1 {
		t.Errorf("alice has %d messages, want 1", n)
	}
	if n := m.Counts().Waiting.Load(); n != 1 {
		t.Errorf("waiting %d, want 1", n)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("the file still being written was not left in place: %v", err)
	}
}
