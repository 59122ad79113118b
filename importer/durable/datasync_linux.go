package durable

import (
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
