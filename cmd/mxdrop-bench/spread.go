package main

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// fsTopdirFL is FS_TOPDIR_FL (linux/fs.h, chattr +T), which x/sys/unix does not name.
const fsTopdirFL = 0x00020000

// spreadFolders marks dir as the top of directory hierarchies (chattr +T), so that
// ext4 places each folder made in it in a block group of its own choosing (the Orlov
// allocator's spread for top-level folders) instead of beside dir, and the files made
// in it with it.
//
// Why the benchmark needs it: on ext4 without a journal (this machine's disk), the
// inode allocator skips every inode freed in the last minute, and in the last six while
// its inode table block is not yet written back (recently_deleted in fs/ext4/ialloc.c),
// one by one from the start of the group. An invocation removes its work folder when it
// ends, tens of thousands of files; the next one, made in the same group, then paid
// 180-400 µs per file creation instead of about 20 µs for minutes, holding the drop
// folder's lock all the while: at 2,000 files/s its writer's creates alone kept the lock
// for half to four fifths of each second, and the figures were the allocator's more
// than a deliverer's. Nothing else in the benchmark or in mxdrop frees inodes while it measures
// (setAside; a linked delivery keeps the drop file's inode as the message). A
// production drop folder is not in a group a benchmark just emptied.
//
// Best effort: on a file system without the flag the folder stays as it is, and
// createCost still shows what creation costs.
func spreadFolders(dir string) {
	f, err := os.Open(dir)
	if err != nil {
		return
	}
	defer f.Close()
	fd := int(f.Fd())
	flags, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	if err != nil || flags&fsTopdirFL != 0 {
		return
	}
	if err := unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(flags|fsTopdirFL)); err != nil {
		fmt.Fprintf(os.Stderr, "mxdrop-bench: %s: could not spread its folders over the disk (chattr +T): %v\n", dir, err)
	}
}
