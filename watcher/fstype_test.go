package watcher

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/mxdrop/mxdrop/internal/sharetest"
)

func TestChooseMode(t *testing.T) {
	share := sharetest.New(t)
	mnt := share.Mount()
	local := t.TempDir()
	for _, tc := range []struct {
		dir, want, mode, fs string
	}{
		{mnt, "auto", WatchPoll, "fuse"},
		{mnt, "", WatchPoll, "fuse"},
		{mnt, "events", WatchEvents, "fuse"},
		{local, "auto", WatchEvents, ""},
		{local, "poll", WatchPoll, ""},
	} {
		ch := ChooseMode(tc.dir, tc.want)
		if ch.Mode != tc.mode {
			t.Errorf("%s watch %q: mode %s, want %s (%s)", tc.dir, tc.want, ch.Mode, tc.mode, ch.Reason)
		}
		if tc.fs != "" && ch.FSType != tc.fs {
			t.Errorf("%s: file system %q, want %q", tc.dir, ch.FSType, tc.fs)
		}
		if ch.Reason == "" {
			t.Errorf("%s: no reason given", tc.dir)
		}
	}
	if ch := ChooseMode(mnt, "events"); !strings.Contains(ch.Reason, "rescan") {
		t.Errorf("events forced on a share does not warn of the rescan-only discovery: %s", ch.Reason)
	}
}

// TestFSTypes checks the table against the values the issue and the kernel name: the
// two SMB client values differ, and every share kind polls under auto.
func TestFSTypes(t *testing.T) {
	shared := map[int64]string{
		0x6969: "nfs", 0xff534d42: "cifs", 0xfe534d42: "smb2/smb3", 0x517b: "smb",
		0x65735546: "fuse", 0x01021997: "9p", 0x00c36400: "ceph", 0x5346414f: "afs",
		0x6b414653: "afs", 0x0bd00bd0: "lustre", 0x47504653: "gpfs",
	}
	for magic, name := range shared {
		ft, ok := fsTypes[magic]
		if !ok || ft.kind != fsShared || ft.name != name {
			t.Errorf("0x%x: %+v (known %v), want shared %s", magic, ft, ok, name)
		}
	}
	for _, magic := range []int64{unix.EXT4_SUPER_MAGIC, unix.XFS_SUPER_MAGIC, unix.BTRFS_SUPER_MAGIC, unix.TMPFS_MAGIC, 0x2fc12fc1, unix.OVERLAYFS_SUPER_MAGIC} {
		if fsTypes[magic].kind != fsLocal {
			t.Errorf("0x%x is not local", magic)
		}
	}
}
