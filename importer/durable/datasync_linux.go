package durable

import (
	"fmt"
	"os"
	"syscall"
)

// datasync makes f's data durable with what is needed to read it back (size, block
// map), not its timestamps: fdatasync(2).
func datasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}

// syncFolder opens, fsyncs and closes the folder dir with the system calls alone:
// os.Open registers every descriptor with the runtime's poller, which refuses a folder
// after three calls (fcntl twice, epoll_ctl), and a folder sync follows most
// deliveries.
func syncFolder(dir string) error {
	var fd int
	var err error
	for {
		fd, err = syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("open folder for fsync: %w", &os.PathError{Op: "open", Path: dir, Err: err})
	}
	defer syscall.Close(fd)
	for {
		err = syscall.Fsync(fd)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("fsync folder %s: %w", dir, &os.PathError{Op: "sync", Path: dir, Err: err})
	}
	return nil
}
