package watcher

import (
	"context"
	"path/filepath"
	"sync"
	"time"
)

// onceWait is how long run --once watches the files too young to take when it starts:
// a file that has not settled by then (still changing, or open by a local writer) is
// left for the next run. At least ten settle times, at least 5s.
func (c *Connector) onceWait() time.Duration {
	return max(10*c.Settle, 5*time.Second)
}

// settleOnce watches the young files of one drop folder until each has been left alone
// for the settle time, offers it as a job tracked by wg, and gives up on the rest after
// onceWait: they are logged and counted as Waiting.
func (m *Manager) settleOnce(ctx context.Context, c *Connector, cl *claims, dir string, names []string, wg *sync.WaitGroup, fs *folderState) {
	pending := make(map[string]*pendingFile, len(names))
	now := time.Now()
	for _, n := range names {
		pending[n] = &pendingFile{changed: now}
	}
	tick := max(c.Settle/4, 10*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	giveUp := time.NewTimer(c.onceWait())
	defer giveUp.Stop()
	for len(pending) > 0 {
		select {
		case <-ctx.Done():
			return
		case <-giveUp.C:
			for name, p := range pending {
				why := "still changing"
				if free, ok, _ := noWriter(filepath.Join(dir, name)); ok && !free {
					why = "open by a writer"
				}
				c.Log.Warn().Str("file", name).Str("reason", why).Int64("size", p.size).
					Dur("watched", c.onceWait()).Msg("file still being written: left for the next run")
				m.counts.Waiting.Add(1)
			}
			return
		case now := <-t.C:
			ok := takeSettled(dir, pending, now, c.Settle, fs, func(path string) bool {
				if !fs.in.add(path) {
					return true
				}
				wg.Add(1)
				select {
				case m.jobs <- &job{conn: c, cl: cl, path: path, wg: wg, done: func() { fs.in.done(path) }}:
					return true
				case <-ctx.Done():
					wg.Done()
					return false
				}
			})
			if !ok {
				return
			}
		}
	}
}
