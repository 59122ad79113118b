// Package sharetest gives tests a drop folder on a share: a FUSE mount (bindfs) of a
// backing folder that the test writes into directly, as the MTA host writes into an NFS
// or SMB export. The kernel sees the backing folder's writes only on the backing file
// system, so the mount gets no inotify event for them, exactly as a network client gets
// none for another host's writes. Two mounts of one backing folder are two "hosts": each
// sees the other's writes only by listing, and flock does not cross them.
package sharetest

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mxdrop/mxdrop/internal/testenv"
)

// Share is a backing folder ("the other host's disk") and its FUSE mounts.
type Share struct {
	Backing string // written by the test as the remote writer
	t       testing.TB
}

// New makes a backing folder and returns the Share; Mount adds mounts of it. Without
// bindfs or FUSE the test ends through testenv.Unavailable (a failure under CI=true).
func New(t testing.TB) *Share {
	t.Helper()
	if _, err := exec.LookPath("bindfs"); err != nil {
		testenv.Unavailable(t, "bindfs not installed (Debian package bindfs)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testenv.Unavailable(t, "no /dev/fuse: %v", err)
	}
	dir := t.TempDir()
	s := &Share{Backing: filepath.Join(dir, "backing"), t: t}
	if err := os.Mkdir(s.Backing, 0o755); err != nil {
		t.Fatal(err)
	}
	return s
}

// Mount mounts the backing folder at a new folder with bindfs and returns its path. The
// mount is undone by t.Cleanup, after the test's own cleanups (which stop what uses it).
func (s *Share) Mount() string {
	t := s.t
	t.Helper()
	mnt, err := os.MkdirTemp(filepath.Dir(s.Backing), "mnt")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	// -f: in the foreground, so the test owns the process and can wait for it.
	// --no-allow-other: only this user (root in CI) uses the mount; no fuse.conf change.
	cmd := exec.Command("bindfs", "-f", "--no-allow-other", s.Backing, mnt)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		testenv.Unavailable(t, "start bindfs: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { unmount(t, mnt, cmd, exited) })
	deadline := time.Now().Add(10 * time.Second)
	for {
		var st unix.Statfs_t
		if err := unix.Statfs(mnt, &st); err == nil && st.Type == unix.FUSE_SUPER_MAGIC {
			return mnt
		}
		select {
		case err := <-exited:
			exited <- err
			testenv.Unavailable(t, "bindfs could not mount (FUSE unusable here?): %v: %s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("bindfs mount %s did not appear within 10s: %s", mnt, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func unmount(t testing.TB, mnt string, cmd *exec.Cmd, exited chan error) {
	for _, args := range [][]string{{"fusermount3", "-u", mnt}, {"fusermount", "-u", mnt}, {"umount", mnt}} {
		if err := exec.Command(args[0], args[1:]...).Run(); err == nil {
			break
		}
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		// Still busy: detach it lazily and stop our own bindfs.
		exec.Command("umount", "-l", mnt).Run()
		cmd.Process.Kill()
		<-exited
	}
	if err := os.Remove(mnt); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Logf("sharetest: remove mount point %s: %v", mnt, err)
	}
}

// Deliver writes a message as a careful remote writer does: into a dot-name in the
// backing folder's dir (relative to Backing), then a rename to name.
func (s *Share) Deliver(dir, name string, data []byte) {
	s.t.Helper()
	tmp := filepath.Join(s.Backing, dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(s.Backing, dir, name)); err != nil {
		s.t.Fatal(err)
	}
}
