package watcher

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// quirkyRename makes claims meet a file server's quirk: after the real rename, or
// instead of it, the given error.
func quirkyRename(t *testing.T, rename bool, err error) {
	t.Helper()
	t.Cleanup(func() { claimRename = renameNoReplace })
	claimRename = func(src, dst string) error {
		if rename {
			if e := renameNoReplace(src, dst); e != nil {
				t.Fatal(e)
			}
		}
		return &os.LinkError{Op: "rename", Old: src, New: dst, Err: err}
	}
}

// TestClaimConfirmedByDestination: an NFS rename retransmitted after a lost reply
// answers ENOENT or EEXIST although it succeeded; the claim is ours all the same.
func TestClaimConfirmedByDestination(t *testing.T) {
	for _, errno := range []error{unix.ENOENT, unix.EEXIST} {
		drop := t.TempDir()
		cl, err := testClaims(t, drop, "me")
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(drop, "m1"), []byte("x"), 0o640)
		quirkyRename(t, true, errno)
		cl.shared = true // an NFS quirk: only a share is checked for it
		p, ok, err := cl.claim(filepath.Join(drop, "m1"))
		if !ok || err != nil || p != filepath.Join(drop, claimName(cl.tag, 0, "m1")) {
			t.Errorf("%v after a successful rename: path %q ok=%v err=%v", errno, p, ok, err)
		}
		cl.shared = false
		cl.close()
	}
}

// TestClaimNotYetOnShare: an SMB server refuses to rename a file another client has
// open; on a share that is "not yet" (no error, the file stays), locally an error.
func TestClaimNotYetOnShare(t *testing.T) {
	drop := t.TempDir()
	cl, err := testClaims(t, drop, "me")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.close()
	os.WriteFile(filepath.Join(drop, "m1"), []byte("x"), 0o640)
	quirkyRename(t, false, unix.EBUSY)
	cl.shared = true
	if _, ok, err := cl.claim(filepath.Join(drop, "m1")); ok || err != nil {
		t.Errorf("share: ok=%v err=%v, want not yet", ok, err)
	}
	cl.shared = false
	if _, ok, err := cl.claim(filepath.Join(drop, "m1")); ok || err == nil {
		t.Errorf("local: ok=%v err=%v, want an error", ok, err)
	}
	if _, err := os.Stat(filepath.Join(drop, "m1")); err != nil {
		t.Errorf("file not left in place: %v", err)
	}
}
