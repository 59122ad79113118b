package sharetest

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"
)

// TestBackingWritesRaiseNoEvent shows why shares are polled: a write into the backing
// folder (the other host) is visible on the mount by listing, but inotify on the mount
// reports nothing, while a write through the mount itself is reported.
func TestBackingWritesRaiseNoEvent(t *testing.T) {
	s := New(t)
	mnt := s.Mount()
	w, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Add(mnt); err != nil {
		t.Fatal(err)
	}
	s.Deliver(".", "remote.eml", []byte("Subject: x\r\n\r\nbody\r\n"))
	select {
	case ev := <-w.Events:
		t.Fatalf("inotify reported %v for a write on the other side", ev)
	case <-time.After(1500 * time.Millisecond):
	}
	if _, err := os.Stat(filepath.Join(mnt, "remote.eml")); err != nil {
		t.Fatalf("the other side's file is not visible on the mount: %v", err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "local.eml"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-w.Events:
		if filepath.Base(ev.Name) != "local.eml" {
			t.Fatalf("unexpected event %v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no inotify event for a write through the mount itself")
	}
}

// TestTwoMountsFlockDoNotCross shows that two mounts behave as two hosts for flock:
// each takes an exclusive lock on the same file.
func TestTwoMountsFlockDoNotCross(t *testing.T) {
	s := New(t)
	a, b := s.Mount(), s.Mount()
	if err := os.WriteFile(filepath.Join(s.Backing, "lock"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	fa := lock(t, filepath.Join(a, "lock"))
	defer fa.Close()
	fb := lock(t, filepath.Join(b, "lock"))
	defer fb.Close()
	if fa == nil || fb == nil {
		t.Fatal("flock crossed the two mounts; the share harness does not model two hosts")
	}
}

func lock(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil
	}
	return f
}
