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
// its other flags, wherever the file system keeps that flag (ext2/3/4; what this test
// first finds out with a folder of its own).
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
	if got, gerr := inodeFlags(t, probe); err != nil || gerr != nil || got&fsTopdirFL == 0 {
		t.Skipf("%s: this file system keeps no FS_TOPDIR_FL (%v)", probe, err)
	}

	dir := t.TempDir()
	before, err := inodeFlags(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	spreadFolders(dir)
	after, err := inodeFlags(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	if after&fsTopdirFL == 0 {
		t.Fatalf("flags %#x: FS_TOPDIR_FL not set", after)
	}
	if after&^fsTopdirFL != before&^fsTopdirFL {
		t.Errorf("flags %#x became %#x: only FS_TOPDIR_FL should be added", before, after)
	}
}
