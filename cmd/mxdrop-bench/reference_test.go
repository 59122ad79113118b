package main

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestDeliverReference checks that the reference deliverer does the work it stands for:
// the drop file's inode appears in new/ under the unique name, nothing stays in tmp/,
// and the drop file's name is gone.
func TestDeliverReference(t *testing.T) {
	dir := t.TempDir()
	drop, maildir := filepath.Join(dir, "drop"), filepath.Join(dir, "mail")
	for _, d := range []string{drop, filepath.Join(maildir, "tmp"), filepath.Join(maildir, "new")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	src := filepath.Join(drop, "m1")
	if err := os.WriteFile(src, []byte("Subject: bench 1\n\nbody\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := deliverReference(src, maildir, "u1"); err != nil {
		t.Fatal(err)
	}
	got, err := os.Stat(filepath.Join(maildir, "new", "u1"))
	if err != nil {
		t.Fatal(err)
	}
	if got.Sys().(*syscall.Stat_t).Ino != before.Sys().(*syscall.Stat_t).Ino {
		t.Error("new/u1 is not the drop file's inode")
	}
	if _, err := os.Lstat(src); !os.IsNotExist(err) {
		t.Errorf("drop file still there: %v", err)
	}
	if left, _ := os.ReadDir(filepath.Join(maildir, "tmp")); len(left) != 0 {
		t.Errorf("tmp/ not empty: %d entries", len(left))
	}
	// A missing drop file is an error, not a silent success.
	if err := deliverReference(src, maildir, "u2"); err == nil {
		t.Error("delivering a missing file succeeded")
	}
}
