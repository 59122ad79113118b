package watcher

import (
	"os"
	"path/filepath"
	"sync"
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

// freshStat returns path's attributes as the file server has them now. A listing's or
// lstat's attributes on NFS may come from the client's attribute cache (up to acregmax,
// 60s by default) and show a file another host is still writing as unchanged; open(2)
// revalidates them with the server (close-to-open consistency, nfs(5) "Data and metadata
// coherence"). O_NOFOLLOW: a symbolic link is never a message.
func freshStat(path string) (os.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Stat()
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
