package main

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// inodeFlags reads dir's inode flags (FS_IOC_GETFLAGS).
func inodeFlags(t *testing.T, dir string) (uint32, error) {
	t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
}

// TestSpreadFolders checks that spreadFolders sets FS_TOPDIR_FL on a folder and keeps
// its other flags where the file system keeps that flag (ext2/3/4; the test first finds
// out with a folder of its own), and changes nothing where it does not (tmpfs).
func TestSpreadFolders(t *testing.T) {
	probe := t.TempDir()
	f, err := os.Open(probe)
	if err != nil {
		t.Fatal(err)
	}
	v, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err == nil {
		err = unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(v|fsTopdirFL))
	}
	f.Close()
	got, gerr := inodeFlags(t, probe)
	keeps := err == nil && gerr == nil && got&fsTopdirFL != 0

	dir := t.TempDir()
	before, berr := inodeFlags(t, dir)
	spreadFolders(dir)
	after, aerr := inodeFlags(t, dir)
	if !keeps {
		// Best effort: where the flag is not kept the folder stays as it was.
		if (berr == nil) != (aerr == nil) || before != after {
			t.Errorf("%s, a file system without FS_TOPDIR_FL: flags %#x (%v) became %#x (%v)", dir, before, berr, after, aerr)
		}
		return
	}
	if berr != nil || aerr != nil {
		t.Fatal(berr, aerr)
	}
	if after&fsTopdirFL == 0 {
		t.Fatalf("flags %#x: FS_TOPDIR_FL not set", after)
	}
	if after&^fsTopdirFL != before&^fsTopdirFL {
		t.Errorf("flags %#x became %#x: only FS_TOPDIR_FL should be added", before, after)
	}
}
