package watcher

import (
	"io/fs"
	"path/filepath"
	"sync"
)

// fileKind names what a drop-folder entry that is not a regular file is, for logs.
func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m&fs.ModeNamedPipe != 0:
		return "fifo"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	case m.IsDir():
		return "directory"
	}
	return "special file"
}

// leftMax bounds the entries remembered as reported: past it the memory starts over
// (and an entry still there is reported once more).
const leftMax = 4096

// leftLog remembers which drop-folder entries were reported as left alone, so that the
// events, the scans (every rescan lists them again) and the workers report each once.
type leftLog struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (l *leftLog) first(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen[key] {
		return false
	}
	if l.seen == nil || len(l.seen) >= leftMax {
		l.seen = map[string]bool{}
	}
	l.seen[key] = true
	return true
}

// regular reports whether a drop-folder entry of type mode may be taken: only regular
// files are. Anything else is left where it is, never claimed nor read, and reported
// once at warn level with its name and type.
func (m *Manager) regular(c *Connector, path string, mode fs.FileMode) bool {
	if mode.IsRegular() {
		return true
	}
	kind := fileKind(mode)
	if m.left.first(path + "\x00" + kind) {
		c.Log.Warn().Str("file", filepath.Base(path)).Str("folder", filepath.Dir(path)).Str("type", kind).
			Msg("left in the drop folder: not a regular file (links, FIFOs, folders and sockets are never read)")
	}
	return false
}
