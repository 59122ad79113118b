//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package durable

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// TryLock opens (creating) the lock file path and takes an exclusive flock on it
// without waiting. It returns ErrLocked when another open file holds it (another
// process, or another TryLock in this one). The lock lasts until the returned file is
// closed, and goes away with the process, so a crash leaves nothing stale.
func TryLock(path string, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, perm)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrLocked
		}
		return nil, fmt.Errorf("lock: %w", err)
	}
	return f, nil
}

// LockOpen takes an exclusive flock on the open file f, waiting as long as it takes:
// for a lock held only for a short append (a Maildir's maildirsize).
func LockOpen(f *os.File) error {
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock: %w", err)
	}
	return nil
}

// Lock is TryLock waiting, by polling, until the lock is free or ctx is done.
func Lock(ctx context.Context, path string, perm os.FileMode) (*os.File, error) {
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, 250*time.Millisecond) {
		f, err := TryLock(path, perm)
		if !errors.Is(err, ErrLocked) {
			return f, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for the lock: %w", ctx.Err())
		case <-time.After(wait):
		}
	}
}
