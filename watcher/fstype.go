package watcher

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Watch modes of a connector's drop folder (the connector key watch).
const (
	WatchAuto   = "auto"   // events on local file systems, poll on network and FUSE ones
	WatchEvents = "events" // inotify only, with the safety-net rescan
	WatchPoll   = "poll"   // list the folder every poll_interval, events kept for local writers
)

// fsKind is what a file system type means for watching and claiming.
type fsKind int

const (
	fsUnknown fsKind = iota // not in the table: treated as local (events), and said so
	fsLocal                 // one kernel sees every write: inotify and flock are complete
	fsShared                // network or FUSE: other hosts' writes raise no inotify event
)

// fsType names a statfs(2) f_type and says whether it is local or shared.
type fsType struct {
	name string
	kind fsKind
}

// fsTypes maps statfs(2) f_type values to names. The values are the kernel's, from
// include/uapi/linux/magic.h (as golang.org/x/sys/unix exports them) unless noted; see
// also statfs(2), which lists them. inotify(7) under "Limitations and caveats": "Inotify
// reports only events that a user-space program triggers through the filesystem API. As a
// result, it does not catch remote events that occur on network filesystems." The same
// holds for FUSE: the kernel sees only the writes that pass through this mount, never
// those a FUSE server's backing store receives elsewhere (sshfs, bindfs, s3fs, glusterfs
// native client, virtiofs). watchman's FSDetect (watchman/fs/FSDetect.cpp) makes the same
// statfs check to refuse watching nfs, cifs and smb.
var fsTypes = map[int64]fsType{
	// Local disk and memory file systems: one kernel, inotify sees every write.
	unix.EXT4_SUPER_MAGIC:      {"ext2/ext3/ext4", fsLocal}, // 0xef53, shared by ext2, ext3 and ext4
	unix.XFS_SUPER_MAGIC:       {"xfs", fsLocal},            // 0x58465342
	unix.BTRFS_SUPER_MAGIC:     {"btrfs", fsLocal},          // 0x9123683e
	unix.TMPFS_MAGIC:           {"tmpfs", fsLocal},          // 0x01021994
	unix.RAMFS_MAGIC:           {"ramfs", fsLocal},          // 0x858458f6
	unix.OVERLAYFS_SUPER_MAGIC: {"overlay", fsLocal},        // 0x794c7630 (containers)
	0x2fc12fc1:                 {"zfs", fsLocal},            // ZFS_SUPER_MAGIC, OpenZFS include/sys/fs/zfs.h (not in the kernel tree)
	unix.F2FS_SUPER_MAGIC:      {"f2fs", fsLocal},           // 0xf2f52010
	unix.BCACHEFS_SUPER_MAGIC:  {"bcachefs", fsLocal},       // 0xca451a4e
	unix.REISERFS_SUPER_MAGIC:  {"reiserfs", fsLocal},       // 0x52654973
	0x3153464a:                 {"jfs", fsLocal},            // JFS_SUPER_MAGIC, fs/jfs/jfs_superblock.h
	unix.NILFS_SUPER_MAGIC:     {"nilfs2", fsLocal},         // 0x3434
	unix.MSDOS_SUPER_MAGIC:     {"vfat/msdos", fsLocal},     // 0x4d44
	unix.EXFAT_SUPER_MAGIC:     {"exfat", fsLocal},          // 0x2011bab0
	0x7366746e:                 {"ntfs3", fsLocal},          // fs/ntfs3/super.c sb->s_magic
	unix.ECRYPTFS_SUPER_MAGIC:  {"ecryptfs", fsLocal},       // 0xf15f, stacked on a local file system

	// Network file systems: writes made by other clients or on the server raise no event.
	unix.NFS_SUPER_MAGIC:  {"nfs", fsShared},  // 0x6969, NFSv2, v3 and v4 alike
	unix.SMB_SUPER_MAGIC:  {"smb", fsShared},  // 0x517b, the old smbfs
	unix.CIFS_SUPER_MAGIC: {"cifs", fsShared}, // 0xff534d42, CIFS_SUPER_MAGIC: mount -t cifs
	// 0xfe534d42, SMB2_SUPER_MAGIC: the same cifs.ko client mounted as -t smb3 reports
	// this value instead (fs/smb/client/cifsfs.c), so both must be listed.
	unix.SMB2_SUPER_MAGIC: {"smb2/smb3", fsShared},
	// 0x65735546: fuse and fuseblk share one value (fs/fuse/inode.c sets
	// sb->s_magic = FUSE_SUPER_MAGIC for both), and so does virtiofs. sshfs, bindfs,
	// glusterfs' native client, s3fs, rclone mount, NTFS-3G (fuseblk) all report it.
	unix.FUSE_SUPER_MAGIC:  {"fuse", fsShared},
	unix.V9FS_MAGIC:        {"9p", fsShared},       // 0x01021997 (WSL, QEMU shares)
	unix.CEPH_SUPER_MAGIC:  {"ceph", fsShared},     // 0x00c36400
	unix.AFS_SUPER_MAGIC:   {"afs", fsShared},      // 0x5346414f, kAFS
	unix.AFS_FS_MAGIC:      {"afs", fsShared},      // 0x6b414653, kAFS's other value
	unix.CODA_SUPER_MAGIC:  {"coda", fsShared},     // 0x73757245
	unix.NCP_SUPER_MAGIC:   {"ncpfs", fsShared},    // 0x564c
	0x0bd00bd0:             {"lustre", fsShared},   // LL_SUPER_MAGIC, lustre/include/lustre_user.h
	0x47504653:             {"gpfs", fsShared},     // GPFS_SUPER_MAGIC ("GPFS"), as coreutils stat(1) lists it
	0x01161970:             {"gfs2", fsShared},     // GFS2_MAGIC, include/uapi/linux/gfs2_ondisk.h: a shared disk
	unix.OCFS2_SUPER_MAGIC: {"ocfs2", fsShared},    // 0x7461636f: a shared disk, other nodes write too
	0x20030528:             {"orangefs", fsShared}, // ORANGEFS_DEVREQ_MAGIC, fs/orangefs
	0x786f4256:             {"vboxsf", fsShared},   // VBOXSF_SUPER_MAGIC, fs/vboxsf/vfsmod.c
	0x013111a8:             {"ibrix", fsShared},    // as coreutils stat(1) lists it
}

// ModeChoice is the watch mode chosen for a drop folder, and why.
type ModeChoice struct {
	Mode   string // WatchEvents or WatchPoll
	FSType string // file system name ("" when statfs failed)
	Magic  int64  // statfs f_type
	Shared bool   // a network or FUSE file system: flock and inotify stop at this host
	Reason string // one line for the start-up log, check-config and status
}

// ChooseMode decides how dir is watched. want is the connector's watch key (auto,
// events, poll; "" means auto). With auto, a network or FUSE file system is polled and
// anything else gets events; an unknown type gets events and says so.
func ChooseMode(dir, want string) ModeChoice {
	var st unix.Statfs_t
	err := unix.Statfs(dir, &st)
	ch := ModeChoice{Magic: int64(st.Type)}
	t, known := fsTypes[int64(st.Type)]
	switch {
	case err != nil:
		ch.FSType = ""
	case known:
		ch.FSType = t.name
		ch.Shared = t.kind == fsShared
	default:
		ch.FSType = fmt.Sprintf("unknown file system 0x%x", uint64(st.Type))
	}
	fs := fmt.Sprintf("%s (0x%x)", ch.FSType, uint64(st.Type))
	if err != nil {
		fs = "file system unknown (statfs: " + err.Error() + ")"
	}
	switch want {
	case WatchEvents:
		ch.Mode, ch.Reason = WatchEvents, "watch: events set; "+fs
		if ch.Shared {
			ch.Reason += ": writes made by other hosts are found only by the rescan every " + RescanEvery.String()
		}
	case WatchPoll:
		ch.Mode, ch.Reason = WatchPoll, "watch: poll set; "+fs
	default:
		switch {
		case ch.Shared:
			ch.Mode, ch.Reason = WatchPoll, "auto: "+fs+" is a network or FUSE file system, where other hosts' writes raise no event"
		case known:
			ch.Mode, ch.Reason = WatchEvents, "auto: "+fs+" is a local file system"
		default:
			ch.Mode, ch.Reason = WatchEvents, "auto: "+fs+" is not known to be a share; set watch: poll if other hosts write into it"
		}
	}
	return ch
}
