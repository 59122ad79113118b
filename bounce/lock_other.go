//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package bounce

import (
	"fmt"
	"os"
)

// lockFile opens path. Without flock on this platform the outbox is not protected
// against a second process; do not point two instances at one state_dir.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	return f, nil
}
