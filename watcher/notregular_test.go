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
	"golang.org/x/sys/unix"

	"github.com/mxdrop/mxdrop/importer/quarantine"
	"github.com/mxdrop/mxdrop/internal/testenv"
)

// craftEntries makes in dir what is not a message: a symlink to a message outside the
// drop folder, nFIFO FIFOs, a folder and a socket. It returns their names.
func craftEntries(t *testing.T, dir, outside string, nFIFO int) []string {
	t.Helper()
	names := []string{"link", "folder", "socket"}
	if err := os.Symlink(outside, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "folder"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(dir, "socket"), unix.S_IFSOCK|0o640, 0); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < nFIFO; i++ {
		name := fmt.Sprintf("fifo%d", i)
		if err := unix.Mkfifo(filepath.Join(dir, name), 0o640); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	return names
}

// TestDaemonLeavesWhatIsNotAFile: symlinks, FIFOs, folders and sockets in a drop folder
// (a Maildir's new/, or a plain one), there at start-up or arriving later, are neither
// claimed nor read; each is reported once at warn level, however often events and scans
// see it; a FIFO per worker blocks nothing, and shutdown needs one cancel.
func TestDaemonLeavesWhatIsNotAFile(t *testing.T) {
	for _, maildir := range []bool{true, false} {
		t.Run(fmt.Sprintf("maildir=%v", maildir), func(t *testing.T) {
			c, root := testConnector(t)
			dir := c.DropFolder
			if maildir {
				for _, sub := range []string{"tmp", "new", "cur"} {
					os.Mkdir(filepath.Join(dir, sub), 0o750)
				}
				dir = filepath.Join(dir, "new")
			}
			outside := filepath.Join(root, "outside.eml")
			if err := os.WriteFile(outside, message(1, "alice@example.com"), 0o600); err != nil {
				t.Fatal(err)
			}
			var logs testenv.LogBuffer
			c.Log = zerolog.New(&logs)
			// Entries there before the daemon starts are found by its first scan.
			if err := os.Symlink(outside, filepath.Join(dir, "early-link")); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mkfifo(filepath.Join(dir, "early-fifo"), 0o640); err != nil {
				t.Fatal(err)
			}
			const workers = 4
			m := NewManager("daemon", workers, zerolog.Nop())
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- m.Run(ctx, []*Connector{c}) }()
			time.Sleep(100 * time.Millisecond) // the watch is set up

			names := append(craftEntries(t, dir, outside, workers), "early-link", "early-fifo")
			dropRename(t, dir, "real", message(2, "bob@example.com"))
			waitFor(t, "the real message delivered past the FIFOs", 5*time.Second, func() bool {
				return countNew(t, filepath.Join(root, "mail", "bob")) == 1
			})
			// A rescan sees them all again; the report stays one per entry.
			cl, err := m.claimsFor(c)
			if err != nil {
				t.Fatal(err)
			}
			if err := m.scan(ctx, c, cl, dir, maildir, func(string) bool { return true }, nil, newFolderState(ChooseMode(dir, c.Watch), cl)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2 * c.Settle)

			cancel()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("shutdown blocked")
			}
			if n := countNew(t, filepath.Join(root, "mail", "alice")); n != 0 {
				t.Errorf("the symlink's target outside the drop folder was delivered (%d)", n)
			}
			if b, err := os.ReadFile(outside); err != nil || !strings.Contains(string(b), "body 1") {
				t.Errorf("the symlink's target was touched: %v", err)
			}
			for _, name := range names {
				if _, err := os.Lstat(filepath.Join(dir, name)); err != nil {
					t.Errorf("%s not left in place: %v", name, err)
				}
				n := 0
				for _, ev := range logs.Events(t, "file", name) {
					if ev["level"] == "warn" && ev["type"] != nil {
						n++
					}
				}
				if n != 1 {
					t.Errorf("%s reported %d times at warn with its type, want once", name, n)
				}
			}
			if claimed := ClaimedFiles(c.DropFolder); len(claimed) != 0 {
				t.Errorf("claimed: %v", claimed)
			}
		})
	}
}

// TestRecoveredFIFONotRead: a dead instance's claims folder holding a FIFO and a symlink
// is recovered without blocking on the FIFO or following the link; both are set aside.
func TestRecoveredFIFONotRead(t *testing.T) {
	c, root := testConnector(t)
	c.Settle = 0
	dead, err := testClaims(t, c.DropFolder, "dead")
	if err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(root, "outside.eml")
	os.WriteFile(outside, message(1, "alice@example.com"), 0o600)
	os.Symlink(outside, filepath.Join(dead.dir, "link"))
	unix.Mkfifo(filepath.Join(dead.dir, "fifo"), 0o640)
	dead.close()
	m := NewManager("me", 2, zerolog.Nop())
	done := make(chan error, 1)
	go func() { done <- m.Once(context.Background(), []*Connector{c}) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("run --once blocked")
	}
	if n := countNew(t, filepath.Join(root, "mail", "alice")); n != 0 {
		t.Errorf("the link's target was delivered")
	}
	for _, name := range []string{"link", "fifo"} {
		if _, err := os.Lstat(filepath.Join(c.DropFolder, quarantine.FolderName, name)); err != nil {
			t.Errorf("%s not set aside: %v", name, err)
		}
	}
}
