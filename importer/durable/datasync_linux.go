package durable

import (
	"fmt"
	"os"
	"syscall"
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
