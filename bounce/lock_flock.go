//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package bounce

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// lockFile opens path and takes an exclusive flock on it, so that one process owns
// the outbox. The lock goes away with the process, so a crash leaves nothing stale.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrOutboxLocked
		}
		return nil, fmt.Errorf("lock: %w", err)
	}
	return f, nil
}
