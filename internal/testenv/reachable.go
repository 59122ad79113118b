package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

// maxReachableBase bounds the length of the folder ReachableDir creates its folders in:
// the harnesses put Unix sockets a few levels below, and sun_path holds 108 bytes.
const maxReachableBase = 48

// ReachableDir creates a fresh folder for t that other users can reach, named prefix
// followed by a random suffix, and returns its path; t.Cleanup removes it. The servers
// the harnesses start open files in it from unprivileged processes (Postfix as postfix
// and nobody, Dovecot as dovecot, dovenull and 65534, spamd's children as nobody).
//
// TMPDIR may lie below a folder closed to others, such as a clone under /root (0700 on
// Debian) whose CI sets TMPDIR=$PWD/.tmp. So the folder goes in os.TempDir() only when
// every folder above it is searchable by others and its path is short enough for the
// sockets; otherwise in /tmp, then /var/tmp. The folder itself is 0711: others pass
// through it to the names they know, but cannot list it. t.Fatal if no such place exists.
func ReachableDir(t testing.TB, prefix string) string {
	t.Helper()
	var base string
	for _, b := range []string{os.TempDir(), "/tmp", "/var/tmp"} {
		if len(b) <= maxReachableBase && SearchableByOthers(b) {
			base = b
			break
		}
	}
	if base == "" {
		t.Fatalf("testenv: neither TMPDIR (%s), /tmp nor /var/tmp is searchable by other users all the way up", os.TempDir())
	}
	dir, err := os.MkdirTemp(base, prefix)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("testenv: remove %s: %v", dir, err)
		}
	})
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return dir
}

// SearchableByOthers reports whether dir and every folder above it have the search
// bit for others (o+x), so that a process of any user can reach names inside dir.
func SearchableByOthers(dir string) bool {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for {
		fi, err := os.Stat(dir)
		if err != nil || !fi.IsDir() || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return true
		}
		dir = parent
	}
}

// BelowClosedFolder makes, for a test, a folder like a clone's .tmp under /root: below
// a folder that only its owner may search (0700). It returns the closed folder and the
// one below it.
func BelowClosedFolder(t testing.TB) (closed, below string) {
	t.Helper()
	closed = filepath.Join(t.TempDir(), "home")
	below = filepath.Join(closed, "clone", ".tmp")
	if err := os.MkdirAll(below, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	return closed, below
}
