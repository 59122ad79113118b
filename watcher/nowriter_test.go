package watcher

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestNoWriter: the write-lease check says free only for a regular file nobody has open
// for writing, and leaves no lease behind. A file open for writing is busy; a symbolic link (even to a free file),
// a FIFO and a folder are never free, and the FIFO does not block the check (no
// writer ever opens it here).
func TestNoWriter(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "msg.eml")
	if err := os.WriteFile(file, []byte("Subject: x\n\nx\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if free, ok, refused := noWriter(file); !free || !ok || refused {
		t.Fatalf("closed file: free=%v ok=%v refused=%v, want free", free, ok, refused)
	}
	// The check gives its lease up before it returns (by closing its descriptor): a
	// lease left behind would hold every writer's open for the lease break time (45 s
	// by default), and a non-blocking open would fail with EWOULDBLOCK.
	w, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatalf("open for writing after the check: %v (lease still held)", err)
	}
	if free, ok, _ := noWriter(file); free || !ok {
		t.Errorf("file open for writing: free=%v ok=%v, want busy", free, ok)
	}
	w.Close()
	if free, _, _ := noWriter(file); !free {
		t.Error("file no longer open for writing: not free")
	}

	link := filepath.Join(dir, "link.eml")
	if err := os.Symlink(file, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo.eml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "folder.eml")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{link, fifo, sub, filepath.Join(dir, "missing.eml")} {
		done := make(chan bool, 1)
		go func() {
			free, _, _ := noWriter(p)
			done <- free
		}()
		select {
		case free := <-done:
			if free {
				t.Errorf("%s: free, want never", filepath.Base(p))
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: the check blocked", filepath.Base(p))
		}
	}
}
