package durable

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrNotLinkable wraps the reasons LinkTemp refuses a file before trying a link: the
// caller copies the file instead.
var ErrNotLinkable = errors.New("file cannot be delivered by a hard link")

// LinkTemp makes tmp (on the destination file system, like WriteTemp's) a second name
// of the existing file src, instead of writing a copy, and makes src's content durable:
// at once with a nil b, else at b.Sync. A leftover tmp of the same name (from a crash)
// is replaced.
//
// src must be a regular file (a symbolic link is not followed) of size bytes (size < 0:
// any), with no other name, owned by this process's user, and neither writable by its
// group nor accessible by others: the new name shares its inode, owner and mode, so a
// link must give no one more access to the message than a copy written 0600 into a
// 0700 Maildir would. Otherwise the error wraps ErrNotLinkable; any other error (EXDEV
// when src is on another file system, EPERM where the file system has no hard links)
// also means: copy instead. On error nothing is left at tmp.
//
// The caller renames tmp into place and syncs that folder (or records it in b), as
// after WriteTemp; once that fsync and the data sync (b.Sync) have returned, the content
// and the new name are durable, and only then may the source be acknowledged. Why that
// is enough:
//   - fdatasync(2) makes src's data durable with the metadata needed to read it (its
//     size and block map). It acts on the inode behind the descriptor whichever of its
//     names it was opened by, so it covers the bytes the delivery name shows, however
//     src was written. A file its writer fsynced (Postfix virtual does) has nothing left
//     to write then: only its change time is dirty (the rename into the drop folder and
//     the claim set it), which fdatasync leaves alone and fsync would write.
//   - link(2) (new directory entry and the inode's link count) and rename(2) are
//     metadata operations that ext4 and XFS journal, each as one transaction, in the
//     order they were made. The folder fsync after the rename (or after the link, for a
//     name linked straight into its folder by Batch.Link) commits the running
//     transaction (ext4, jbd2) or forces the log up to it (XFS), and with it every
//     earlier transaction, the link's included. So the name in new/ is durable with a
//     link count that counts it, and a crash before that fsync leaves the name in tmp/
//     or new/ or neither.
//   - Without a journal (ext2, ext4 without has_journal) the folder fsync writes the
//     folder's blocks but not the linked inode's new link count, so after a crash the
//     inode may count fewer names than point to it. Such a file system is marked not
//     clean while mounted, and e2fsck, which runs at the next boot because of it,
//     recounts every inode's names from the folders (its pass 4) before anything can
//     remove the drop file's name and free an inode still named in new/.
//   - With a Batch the data sync comes after the name in new/, so that the copy is
//     visible without waiting for the disk (the latency of a drop file is its claim,
//     its header and its link). A copy written by mxdrop is never visible before
//     its data is durable (WriteTemp); a linked one is the drop file itself: until the
//     sync a power loss can take the same bytes from its delivered name and from its
//     claimed name, and the claim, not acknowledged yet, is imported again at the next
//     start, which finds the delivered name and syncs it before it acknowledges. Only a
//     drop file its writer never synced can lose bytes that way, and it would lose them
//     just the same in the drop folder. Its size then changes, so the next import sees
//     a new identity whose delivery name was never used; the importer finds the linked
//     copy by its inode instead (the claim still has two names) and does not deliver
//     it again.
//
// References: fsync(2) and fdatasync(2), link(2), rename(2); ext4's jbd2 commits a transaction as a
// whole (Documentation/filesystems/ext4 "data=ordered"; ext4_sync_file); XFS
// xfs_dir_fsync forces the log to the directory's last LSN; and Pillai et al., "All
// File Systems Are Not Created Equal" (OSDI 2014), who found directory operations
// ordered and atomic on ext4 (ordered) and XFS.
//
// The file is shared, not copied: whoever holds src must never write it again (it may
// remove it or rename it away, which leaves the delivered name alone).
func LinkTemp(src, tmp string, size int64, b *Batch) (err error) {
	f, fi, err := openLinkable(src, size)
	if err != nil {
		return err
	}
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	if b == nil {
		// No batch: durable before the second name exists.
		if err := syncData(f); err != nil {
			return fmt.Errorf("fdatasync: %w", err)
		}
	}
	err = os.Link(src, tmp)
	if errors.Is(err, os.ErrExist) {
		// Temporary names derive from the caller's identity: a leftover of an
		// interrupted delivery of the same message.
		if rerr := os.Remove(tmp); rerr != nil {
			return fmt.Errorf("remove leftover temporary file: %w", rerr)
		}
		err = os.Link(src, tmp)
	}
	if err != nil {
		return fmt.Errorf("link: %w", err)
	}
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	// link(2) takes a name, and the name may have been replaced since the open:
	// deliver only the very file that was checked.
	li, err := os.Lstat(tmp)
	if err != nil {
		return fmt.Errorf("stat linked file: %w", err)
	}
	if !os.SameFile(fi, li) {
		return fmt.Errorf("%w: %s was replaced while it was linked", ErrNotLinkable, filepath.Base(src))
	}
	if b != nil {
		b.keep(f)
		f = nil
	}
	return nil
}

// openLinkable opens src for reading, without following a symbolic link, and checks
// that it may be linked (linkable).
func openLinkable(src string, size int64) (*os.File, os.FileInfo, error) {
	f, err := os.OpenFile(src, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open file to link: %w", err)
	}
	fi, err := f.Stat()
	if err == nil {
		err = linkable(fi, size)
	} else {
		err = fmt.Errorf("stat file to link: %w", err)
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, fi, nil
}

// linkable says why the file fi (of size bytes when size >= 0) may not get a second
// name in a Maildir, or nil.
func linkable(fi os.FileInfo, size int64) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: not a regular file (%s)", ErrNotLinkable, fi.Mode().Type())
	}
	if size >= 0 && fi.Size() != size {
		return fmt.Errorf("%w: %d bytes, not %d", ErrNotLinkable, fi.Size(), size)
	}
	if p := fi.Mode().Perm(); p&0o027 != 0 {
		return fmt.Errorf("%w: mode %#o gives its group write or others access", ErrNotLinkable, p)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%w: no owner and link count", ErrNotLinkable)
	}
	if st.Nlink != 1 {
		return fmt.Errorf("%w: it has %d names", ErrNotLinkable, st.Nlink)
	}
	if int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%w: owned by uid %d", ErrNotLinkable, st.Uid)
	}
	return nil
}

// Link is WriteFile for a file that exists already: dir/name becomes a second name of
// the file src of size bytes (size < 0: any), and src's content and the new name become
// durable, at once with a nil b, else at b.Sync (see LinkTemp for what src must be and
// why the sequence is enough). Any error means nothing was delivered and the caller may
// write a copy instead.
//
// The name is made by link(2) straight into dir, not in tmpDir and renamed. Maildir's
// tmp/ is there so that a reader never sees a file in new/ before it is complete; a
// link gives a name to a file that is complete already (the claimed file is never
// written again), all at once, so a reader sees the whole message or nothing, as after a
// rename. It spares one rename across folders per message, and Linux serialises those
// for a whole file system (s_vfs_rename_mutex, Documentation/filesystems/
// directory-locking.rst): under load every import of the file system queued behind
// it. The open descriptor is linked (linkat(2) of /proc/self/fd/N with
// AT_SYMLINK_FOLLOW, as open(2) shows for O_TMPFILE), so the name is given to the very
// file that was checked, and a file whose last name went meanwhile is not brought back
// (ENOENT). Where /proc is not mounted, or dir/name exists already (a leftover, which is
// replaced), the link goes through tmpDir/tmpName and a rename as for a written copy.
// A crash leaves the name in dir or nowhere; a leftover tmpDir/tmpName of an earlier
// attempt is the caller's to remove.
func (b *Batch) Link(src string, size int64, tmpDir, tmpName, dir, name string) error {
	if procFD() {
		f, _, err := openLinkable(src, size)
		if err != nil {
			return err
		}
		err = b.linkFile(f, filepath.Join(dir, name))
		if err == nil {
			return b.SyncDir(dir)
		}
		if !errors.Is(err, os.ErrExist) {
			return err
		}
	}
	tmp := filepath.Join(tmpDir, tmpName)
	if err := LinkTemp(src, tmp, size, b); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("rename into place: %w", err)
	}
	return b.SyncDir(dir)
}

// linkFile names the open file f dst, and syncs its data at once with a nil b, or
// leaves f to b.Sync. f is closed or kept by b in any case.
func (b *Batch) linkFile(f *os.File, dst string) error {
	if b == nil {
		defer f.Close()
		// No batch: durable before the second name exists.
		if err := syncData(f); err != nil {
			return fmt.Errorf("fdatasync: %w", err)
		}
	}
	var err error
	if cerr := controlFD(f, func(fd uintptr) {
		err = unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(int(fd)), unix.AT_FDCWD, dst, unix.AT_SYMLINK_FOLLOW)
	}); cerr != nil {
		err = cerr
	}
	if err != nil {
		if b != nil {
			f.Close()
		}
		return &os.LinkError{Op: "link", Old: f.Name(), New: dst, Err: err}
	}
	if b != nil {
		b.keep(f)
	}
	return nil
}

func controlFD(f *os.File, fn func(fd uintptr)) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(fn)
}

// procFD reports whether open files can be linked by their /proc/self/fd name.
var procFD = sync.OnceValue(func() bool {
	fi, err := os.Stat("/proc/self/fd")
	return err == nil && fi.IsDir()
})
