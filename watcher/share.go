package watcher

import (
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// inflight is the set of files offered to the pool whose job has not ended: a polled
// listing offers a file once, not once per listing. Its size is bounded by the ready
// queue, the jobs queue and the workers.
type inflight struct {
	mu sync.Mutex
	m  map[string]struct{}
}

// add marks path offered; false when it already is.
func (s *inflight) add(path string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]struct{}{}
	}
	if _, ok := s.m[path]; ok {
		return false
	}
	s.m[path] = struct{}{}
	return true
}

func (s *inflight) done(path string) {
	s.mu.Lock()
	delete(s.m, path)
	s.mu.Unlock()
}

func (s *inflight) has(path string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.m[path]
	return ok
}

// freshStat returns path's size, mtime and type as the file server has them now. A
// listing's or lstat's attributes on a share come from the client's attribute cache:
// NFS keeps them up to acregmax (60s by default, nfs(5) "ac/noac"), FUSE for attr_timeout
// (1s by default; sshfs caches 20s), and a file another host is still writing looks
// unchanged meanwhile. statx(2) with AT_STATX_FORCE_SYNC makes the NFS, CIFS and FUSE
// clients ask the server ("Force the attributes to be synchronized with the server").
// A symbolic link is never followed.
func freshStat(path string) (os.FileInfo, error) {
	var sx unix.Statx_t
	err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_FORCE_SYNC,
		unix.STATX_TYPE|unix.STATX_SIZE|unix.STATX_MTIME, &sx)
	if err != nil {
		return nil, &os.PathError{Op: "statx", Path: path, Err: err}
	}
	return statxInfo{name: filepath.Base(path), sx: sx}, nil
}

// statxInfo is an os.FileInfo of a statx result.
type statxInfo struct {
	name string
	sx   unix.Statx_t
}

func (s statxInfo) Name() string { return s.name }
func (s statxInfo) Size() int64  { return int64(s.sx.Size) }
func (s statxInfo) ModTime() time.Time {
	return time.Unix(s.sx.Mtime.Sec, int64(s.sx.Mtime.Nsec))
}
func (s statxInfo) IsDir() bool { return s.Mode().IsDir() }
func (s statxInfo) Sys() any    { return &s.sx }
func (s statxInfo) Mode() os.FileMode {
	m := os.FileMode(s.sx.Mode & 0o777)
	switch s.sx.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		m |= os.ModeDir
	case unix.S_IFLNK:
		m |= os.ModeSymlink
	case unix.S_IFREG:
	default:
		m |= os.ModeIrregular
	}
	return m
}

// serverClock estimates how far the file server's clock (which stamps the mtime of
// files written on a share, by any host) is ahead of this host's. It writes a probe in
// dir and compares its mtime with the time around the write. The low end of the
// interval is returned, less a second when the file system keeps whole seconds only:
// files then look younger than they are, never older, so a file another host is still
// writing is never taken for settled because of skewed clocks.
func serverClock(dir string) (ahead time.Duration, err error) {
	p := filepath.Join(dir, ".clock")
	if err := os.WriteFile(p, []byte("mxdrop clock probe\n"), 0o640); err != nil {
		return 0, err
	}
	fi, err := os.Stat(p)
	after := time.Now()
	os.Remove(p)
	if err != nil {
		return 0, err
	}
	mt := fi.ModTime()
	ahead = mt.Sub(after)
	if mt.Nanosecond() == 0 {
		ahead -= 2 * time.Second // FAT-like two-second stamps at worst
	}
	return ahead, nil
}

// folderState is what one watch (or one run --once) of a drop folder keeps: the files
// on offer, and for a share the file server's clock.
type folderState struct {
	in       inflight
	shared   bool   // network or FUSE: attributes are revalidated, mtimes read on the server's clock
	clockDir string // where the clock probe is written (the claims folder)
	ahead    atomic.Int64
}

func newFolderState(mode ModeChoice, cl *claims) *folderState {
	fs := &folderState{shared: mode.Shared, clockDir: cl.dir}
	fs.measureClock()
	return fs
}

// measureClock refreshes the estimate of the file server's clock (shares only).
func (fs *folderState) measureClock() {
	if !fs.shared {
		return
	}
	if ahead, err := serverClock(fs.clockDir); err == nil {
		fs.ahead.Store(int64(ahead))
	}
}

// age is how long ago mtime was, on the clock that stamped it.
func (fs *folderState) age(mtime time.Time) time.Duration {
	return time.Since(mtime) + time.Duration(fs.ahead.Load())
}

// stat returns path's attributes, from the file server itself on a share.
func (fs *folderState) stat(path string) (os.FileInfo, error) {
	if fs.shared {
		return freshStat(path)
	}
	return os.Lstat(path)
}

// settled records fi and reports whether the file has been left alone for settle: the
// same size and mtime as at the last look, and either unchanged for settle since this
// host saw it change, or last modified settle ago on the file server's clock. The
// second rule lets a file another host renamed in be taken at the first look after it
// is settle old, though no event announced it.
func (p *pendingFile) settled(fi os.FileInfo, now time.Time, settle time.Duration, fs *folderState) bool {
	if fi.Size() != p.size || !fi.ModTime().Equal(p.mtime) {
		p.size, p.mtime, p.changed = fi.Size(), fi.ModTime(), now
		return false
	}
	return now.Sub(p.changed) >= settle || fs.age(fi.ModTime()) >= settle
}

// takeSettled looks at every pending file of dir and hands to take those that have
// been left alone for settle and that no local process has open for writing; files
// gone (claimed elsewhere, removed) are forgotten. It stops early, returning false,
// when take does.
func takeSettled(dir string, pending map[string]*pendingFile, now time.Time, settle time.Duration, fs *folderState, take func(path string) bool) bool {
	for name, p := range pending {
		path := filepath.Join(dir, name)
		fi, err := fs.stat(path)
		if err != nil {
			delete(pending, name)
			continue
		}
		if !p.settled(fi, now, settle, fs) {
			continue
		}
		if free, ok, _ := noWriter(path); ok && !free {
			continue
		}
		delete(pending, name)
		if !take(path) {
			return false
		}
	}
	return true
}

// pollInterval is PollInterval, 1s when unset.
func (c *Connector) pollInterval() time.Duration {
	if c.PollInterval > 0 {
		return c.PollInterval
	}
	return time.Second
}
