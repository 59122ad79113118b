//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package oauth

import (
	"context"
	"io/fs"
)

// lockAccount does nothing on platforms without flock: refreshes are serialised
// within the process only, so do not share a state_dir between instances there.
func lockAccount(ctx context.Context, lockPath string) (func(), error) { return func() {}, nil }

func inode(fs.FileInfo) uint64 { return 0 }
