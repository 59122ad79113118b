package durable

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// datasync makes f's data durable with what is needed to read it back (size, block
// map), not its timestamps: fdatasync(2).
func datasync(f *os.File) error {
	return ignoringEINTR(func() error { return syscall.Fdatasync(int(f.Fd())) })
}

// syncFolder opens, fsyncs and closes the folder dir with the system calls alone:
// os.Open registers every descriptor with the runtime's poller, which refuses a folder
// after three calls (fcntl twice, epoll_ctl), and a folder sync follows most
// deliveries.
func syncFolder(dir string) error {
	var fd int
	err := ignoringEINTR(func() (err error) {
		fd, err = syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return fmt.Errorf("open folder for fsync: %w", &os.PathError{Op: "open", Path: dir, Err: err})
	}
	defer syscall.Close(fd)
	if err := ignoringEINTR(func() error { return syscall.Fsync(fd) }); err != nil {
		return fmt.Errorf("fsync folder %s: %w", dir, &os.PathError{Op: "sync", Path: dir, Err: err})
	}
	return nil
}

// ignoringEINTR calls fn again while a signal interrupts it (the runtime's own
// preemption signals interrupt slow system calls).
func ignoringEINTR(fn func() error) error {
	for {
		if err := fn(); err != syscall.EINTR {
			return err
		}
	}
}

// linkOpen gives the file open as f (by the name src) the new name tmp. It links the
// descriptor itself where the kernel allows it (linkat(2) with AT_EMPTY_PATH: since
// Linux 6.10 for the process that opened the file, before that only with
// CAP_DAC_READ_SEARCH), which names the very file that was opened and checked, and
// spares the caller a look at what the new name points to. Otherwise it links by name,
// and byDescriptor is false: src may have been replaced since the open.
func linkOpen(f *os.File, src, tmp string) (byDescriptor bool, err error) {
	if !noLinkByDescriptor.Load() {
		err := linkat(f, tmp)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EPERM) {
			return false, &os.LinkError{Op: "link", Old: src, New: tmp, Err: err}
		}
		// ENOENT: no right to link a descriptor, or the file has no name left (its
		// name was replaced since the open), or tmp's folder is missing; EPERM: no
		// right. Only a refusal of the right is remembered; the link by name tells
		// the rest.
		var st unix.Stat_t
		if unix.Fstat(int(f.Fd()), &st) == nil && st.Nlink > 0 {
			if _, serr := os.Stat(filepath.Dir(tmp)); serr == nil {
				noLinkByDescriptor.Store(true)
			}
		}
	}
	return false, os.Link(src, tmp)
}

// linkDescriptor links the file open as f to dst through its descriptor (see
// linkOpen). ok is false, with no error, when the link was not made for a reason the
// caller can go around: no right to link a descriptor or f without a name (ENOENT,
// EPERM), or a name at dst already (EEXIST).
func linkDescriptor(f *os.File, dst string) (ok bool, err error) {
	switch err = linkat(f, dst); {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.EPERM), errors.Is(err, unix.EEXIST):
		return false, nil
	}
	return false, err
}

// linkat gives the file open as f the name dst through its descriptor: linkat(2) with
// AT_EMPTY_PATH.
func linkat(f *os.File, dst string) error {
	return ignoringEINTR(func() error {
		return unix.Linkat(int(f.Fd()), "", unix.AT_FDCWD, dst, unix.AT_EMPTY_PATH)
	})
}
