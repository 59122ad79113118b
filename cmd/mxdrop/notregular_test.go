package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDropMaildirNonRegular: in a drop folder that is a Maildir, the daemon takes only
// regular files. A symbolic link to a file outside is not followed (its content reaches
// no account), FIFOs do not block the workers (four of them with workers: 4), a folder
// is not claimed, and a message dropped after all of them is delivered; SIGTERM stops
// the daemon at once.
func TestDropMaildirNonRegular(t *testing.T) {
	e := newEnv(t, "")
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := os.MkdirAll(filepath.Join(e.drop, sub), 0o750); err != nil {
			t.Fatal(err)
		}
	}
	p := e.start("run")
	p.waitLog(t, "mxdrop started", 10*time.Second)
	p.waitLog(t, "watching drop folder", 10*time.Second)

	newDir := filepath.Join(e.drop, "new")
	secret := filepath.Join(e.root, "outside.eml")
	if err := os.WriteFile(secret, msg("outside@test", "", "alice@example.com"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(newDir, "link.eml")); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if err := syscall.Mkfifo(filepath.Join(newDir, "fifo"+string(rune('0'+i))), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(newDir, "folder"), 0o750); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the events of the entries above come first
	dropFile(t, newDir, "real.eml", msg("real@test", "", "alice@example.com"))

	alice := filepath.Join(e.root, "mail/alice")
	waitUntil(t, "the regular message delivered", 15*time.Second, func() bool {
		ids, _ := maildirIDs(t, alice)
		return ids["real@test"] == 1
	})
	time.Sleep(500 * time.Millisecond)
	if ids, _ := maildirIDs(t, alice); ids["outside@test"] != 0 {
		t.Errorf("the file behind a symbolic link was delivered: %v", ids)
	}
	for _, n := range []string{"link.eml", "fifo0", "fifo3", "folder"} {
		if _, err := os.Lstat(filepath.Join(newDir, n)); err != nil {
			t.Errorf("%s was taken from the drop folder: %v", n, err)
		}
	}
	if logs := p.Logs(); !strings.Contains(logs, "not a regular file") {
		t.Errorf("nothing logged about the entries left behind")
	}
	start := time.Now()
	p.stop(t)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("SIGTERM took %s", d)
	}
}
