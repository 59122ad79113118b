package durable

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
)

// ErrNotLinkable wraps the reasons LinkTemp refuses a file before trying a link: the
// caller copies the file instead.
var ErrNotLinkable = errors.New("file cannot be delivered by a hard link")

// LinkTemp makes tmp (on the destination file system, like WriteTemp's) a second name
// of the existing file src, instead of writing a copy, and makes src's content durable:
// at once with a nil b, else at b.Sync. A leftover tmp of the same name (from a crash)
// is replaced. The link is made through the open descriptor where the kernel allows
// it (linkOpen), else by name, and then the new name must be the file that was checked.
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
//     order they were made. The folder fsync after the rename commits the running
//     transaction (ext4, jbd2) or forces the log up to the rename (XFS), and with it
//     every earlier transaction, the link's included. So the name in new/ is durable
//     with a link count that counts it, and a crash before that fsync leaves the name
//     in tmp/ or new/ or neither.
//   - Without a journal (ext2, ext4 without has_journal) the folder fsync writes the
//     folder's blocks but not the linked inode's new link count, so after a crash the
//     inode may count fewer names than point to it. Such a file system is marked not
//     clean while mounted, and e2fsck, which runs at the next boot because of it,
//     recounts every inode's names from the folders (its pass 4) before anything can
//     remove the drop file's name and free an inode still named in new/.
//   - With a Batch the data sync comes after the rename, so that the copy is visible
//     without waiting for the disk (the latency of a drop file is its claim, its header
//     and one directory operation, two where the link is made by name: Batch.Link). A
//     copy written by mxdrop is never visible before its data is durable (WriteTemp); a
//     linked one is the drop file itself: until the sync a power loss can take the same
//     bytes from its delivered name and from its claimed name, and the claim, not
//     acknowledged yet, is imported again at the next start, which finds the delivered
//     name and syncs it before it acknowledges. Only a drop file its writer never
//     synced can lose bytes that way, and it would lose them just the same in the drop
//     folder. Its size then changes, so the next import sees a new identity whose
//     delivery name was never used; the importer finds the linked copy by its inode
//     instead (the claim still has two names) and does not deliver it again.
//
// References: fsync(2) and fdatasync(2), link(2), rename(2); ext4's jbd2 commits a transaction as a
// whole (Documentation/filesystems/ext4 "data=ordered"; ext4_sync_file); XFS
// xfs_dir_fsync forces the log to the directory's last LSN; and Pillai et al., "All
// File Systems Are Not Created Equal" (OSDI 2014), who found directory operations
// ordered and atomic on ext4 (ordered) and XFS.
//
// The file is shared, not copied: whoever holds src must never write it again (it may
// remove it or rename it away, which leaves the delivered name alone).
//
// f, when not nil, is src open already (by that name, for reading, with O_NOFOLLOW):
// it is used instead of opening src again, and it stays the caller's, never closed
// here. The caller keeps it open until b has been synced or closed (with a nil b,
// until LinkTemp returns), since b's data sync uses it.
func LinkTemp(src string, f *os.File, tmp string, size int64, b *Batch) error {
	if f != nil {
		return linkTemp(f, false, src, tmp, size, b)
	}
	f, err := os.OpenFile(src, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("open file to link: %w", err)
	}
	return linkTemp(f, true, src, tmp, size, b)
}

// linkTemp is LinkTemp with src open as f; own says whether f is linkTemp's to close
// (or to hand to b, which closes it after its sync).
func linkTemp(f *os.File, own bool, src, tmp string, size int64, b *Batch) (err error) {
	defer func() {
		if f != nil && own {
			f.Close()
		}
	}()
	fi, err := prepareLink(f, size, b)
	if err != nil {
		return err
	}
	byDescriptor, err := linkOpen(f, src, tmp)
	if errors.Is(err, os.ErrExist) {
		// Temporary names derive from the caller's identity: a leftover of an
		// interrupted delivery of the same message.
		if rerr := os.Remove(tmp); rerr != nil {
			return fmt.Errorf("remove leftover temporary file: %w", rerr)
		}
		byDescriptor, err = linkOpen(f, src, tmp)
	}
	if err != nil {
		return fmt.Errorf("link: %w", err)
	}
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if !byDescriptor {
		// link(2) took a name, and the name may have been replaced since the open:
		// deliver only the very file that was checked.
		li, err := os.Lstat(tmp)
		if err != nil {
			return fmt.Errorf("stat linked file: %w", err)
		}
		if !os.SameFile(fi, li) {
			return fmt.Errorf("%w: %s was replaced while it was linked", ErrNotLinkable, filepath.Base(src))
		}
	}
	if b != nil {
		b.keep(f, own)
		f = nil
	}
	return nil
}

// prepareLink checks that the file open as f may be linked (linkable) and, without a
// batch, makes its data durable before it gets a second name. It returns f's status.
func prepareLink(f *os.File, size int64, b *Batch) (os.FileInfo, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat file to link: %w", err)
	}
	if err := linkable(fi, size); err != nil {
		return nil, err
	}
	if b == nil {
		if err := syncData(f); err != nil {
			return nil, fmt.Errorf("fdatasync: %w", err)
		}
	}
	return fi, nil
}

// noLinkByDescriptor is set once the kernel has refused this process a link through a
// descriptor (see linkOpen): it is not tried again.
var noLinkByDescriptor atomic.Bool

// euid is this process's effective user ID, asked once: geteuid(2) is a system call
// of its own for every linked delivery otherwise, and mxdrop never changes its IDs.
var euid = os.Geteuid()

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
	if int(st.Uid) != euid {
		return fmt.Errorf("%w: owned by uid %d", ErrNotLinkable, st.Uid)
	}
	return nil
}

// Link is WriteFile for a file that exists already: LinkTemp(src, f, tmpDir/tmpName,
// size, b), then rename to dir/name and fsync dir (or, with a non-nil b, leave the
// data sync and the folder fsync to Sync). Any error means nothing was delivered and
// the caller may write a copy instead; see LinkTemp, also for f (nil: open src).
//
// Where the kernel links the open descriptor itself (linkOpen), the file gets dir/name
// at once and tmpDir is not used: tmp/ is where the Maildir protocol has a file written
// until it is complete, and src is complete and is the very file that was checked, so
// its link into dir is as atomic for a reader as the rename (link(2) makes the whole
// entry or none). It spares each delivery a system call and a rename between two
// folders, which takes the file system's rename lock (s_vfs_rename_mutex), the lock the
// claims' renames wait for too. The durability argument of LinkTemp holds unchanged:
// the fsync of dir commits the link (journaled file systems) or writes dir's blocks
// (without a journal).
func (b *Batch) Link(src string, f *os.File, size int64, tmpDir, tmpName, dir, name string) error {
	if f != nil {
		linked, err := linkFinal(f, src, filepath.Join(dir, name), size, b)
		if err != nil {
			return err
		}
		if linked {
			return b.SyncDir(dir)
		}
	}
	tmp := filepath.Join(tmpDir, tmpName)
	if err := LinkTemp(src, f, tmp, size, b); err != nil {
		return err
	}
	// rename(2) itself: os.Rename first looks up the new name to refuse a folder
	// there, which rename(2) refuses anyway for a file (EISDIR), one system call more
	// for every delivery.
	dst := filepath.Join(dir, name)
	if err := syscall.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("rename into place: %w", &os.LinkError{Op: "rename", Old: tmp, New: dst, Err: err})
	}
	return b.SyncDir(dir)
}

// linkFinal gives the checked file f its delivered name dst through the descriptor
// (Batch.Link), with LinkTemp's checks and data sync. linked is false, with no error,
// when that is not possible here (no right to link a descriptor, a name at dst
// already, f without a name left): the caller then links through tmp/ as before,
// which also tells a refusal of the right apart and remembers it. f stays the caller's.
func linkFinal(f *os.File, src, dst string, size int64, b *Batch) (linked bool, err error) {
	if noLinkByDescriptor.Load() {
		return false, nil
	}
	if _, err := prepareLink(f, size, b); err != nil {
		return false, err
	}
	ok, err := linkDescriptor(f, dst)
	if !ok || err != nil {
		if err != nil {
			err = &os.LinkError{Op: "link", Old: src, New: dst, Err: err}
		}
		return false, err
	}
	if b != nil {
		b.keep(f, false)
	}
	return true, nil
}

// LinkNew links src to the new name dst: like os.Link it fails with an error matching
// os.ErrExist when dst is taken by another file, but dst already being src's own file
// is success (an earlier attempt a crash cut short, or an NFS link retransmitted after
// its reply was lost, which the server answers with EEXIST). Callers that move a file
// without replacing one link, then remove the first name.
func LinkNew(src, dst string) error {
	err := os.Link(src, dst)
	if errors.Is(err, os.ErrExist) {
		if sfi, serr := os.Lstat(src); serr == nil {
			if dfi, derr := os.Lstat(dst); derr == nil && os.SameFile(sfi, dfi) {
				return nil
			}
		}
	}
	return err
}
