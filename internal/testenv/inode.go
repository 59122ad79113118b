package testenv

import (
	"os"
	"syscall"
	"testing"
)

// Inode returns the inode number and link count of path (not following a link), for
// tests that check whether two names are one file.
func Inode(t testing.TB, path string) (ino, nlink uint64) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return st.Ino, uint64(st.Nlink)
}
