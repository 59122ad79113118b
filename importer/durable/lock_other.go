//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package durable

import (
	"context"
	"fmt"
	"os"
)

// TryLock opens (creating) the lock file path. Without flock on this platform nothing
// is locked: do not point two instances at one state_dir or drop folder there.
func TryLock(path string, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, perm)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	return f, nil
}

// Lock is TryLock.
func Lock(ctx context.Context, path string, perm os.FileMode) (*os.File, error) {
	return TryLock(path, perm)
}

// LockOpen does nothing without flock.
func LockOpen(f *os.File) error { return nil }
