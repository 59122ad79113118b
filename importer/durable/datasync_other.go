//go:build !linux

package durable

import (
	"fmt"
	"os"
)

// datasync is fsync where fdatasync(2) is not at hand.
func datasync(f *os.File) error { return f.Sync() }

func syncFolder(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open folder for fsync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync folder %s: %w", dir, err)
	}
	return nil
}

// linkOpen links by name: src may have been replaced since f was opened.
func linkOpen(f *os.File, src, tmp string) (byDescriptor bool, err error) {
	return false, os.Link(src, tmp)
}

// linkDescriptor is not available: the caller links by name.
func linkDescriptor(f *os.File, dst string) (ok bool, err error) { return false, nil }
