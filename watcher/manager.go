package watcher

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxdrop/mxdrop/importer/intake"
)

// Manager runs the watchers of all connectors and one worker pool that imports for all
// of them. Configuration reloads replace the connectors without stopping the pool.
type Manager struct {
	id      string
	workers int
	log     zerolog.Logger
	jobs    chan *job
	counts  Counts
	left    leftLog // drop-folder entries reported as not taken
	// leaseWarned holds the drop folders whose write-lease refusal was reported.
	leaseWarned sync.Map

	retryFirst time.Duration // the first retry's delay (5s; tests shorten it)

	// syncing holds a place for each job that detached from the pool to wait for
	// the disk (runJob).
	syncing chan struct{}

	mu     sync.Mutex
	claims map[string]*claims // drop folder -> this instance's claims folder
	cancel map[string]context.CancelFunc
	gen    map[string]*Connector
	runs   sync.WaitGroup

	intake context.Context // done when intake stops (shutdown)
	quit   chan struct{}   // closed when every producer has stopped

	healthMu sync.Mutex
	health   map[string]WatchHealth // by connector name
}

// WatchHealth is the state of one connector's watcher, for /readyz and status.
type WatchHealth struct {
	Connector  string    `json:"connector"`
	DropFolder string    `json:"drop_folder"`
	Running    bool      `json:"running"`
	Since      time.Time `json:"since"`
	LastError  string    `json:"last_error,omitempty"`
	// Watch is how new files are found (events or poll) and WatchReason why (the file
	// system type): set once the watcher has looked at the folder.
	Watch       string `json:"watch,omitempty"`
	WatchReason string `json:"watch_reason,omitempty"`
}

// Health returns the state of every connector's watcher.
func (m *Manager) Health() []WatchHealth {
	m.healthMu.Lock()
	defer m.healthMu.Unlock()
	out := make([]WatchHealth, 0, len(m.health))
	for _, h := range m.health {
		out = append(out, h)
	}
	return out
}

func (m *Manager) setHealth(c *Connector, running bool, err error) {
	m.healthMu.Lock()
	defer m.healthMu.Unlock()
	if m.health == nil {
		m.health = map[string]WatchHealth{}
	}
	h := WatchHealth{Connector: c.Name, DropFolder: c.DropFolder, Running: running, Since: time.Now()}
	if prev, ok := m.health[c.Name]; ok {
		if prev.Running == running {
			h.Since = prev.Since
		}
		h.Watch, h.WatchReason = prev.Watch, prev.WatchReason
	}
	if err != nil {
		h.LastError = err.Error()
	}
	m.health[c.Name] = h
}

// setMode records the watch mode chosen for c.
func (m *Manager) setMode(c *Connector, mode ModeChoice) {
	m.healthMu.Lock()
	defer m.healthMu.Unlock()
	if m.health == nil {
		m.health = map[string]WatchHealth{}
	}
	h := m.health[c.Name]
	h.Connector, h.DropFolder = c.Name, c.DropFolder
	h.Watch, h.WatchReason = mode.Mode, mode.Reason
	m.health[c.Name] = h
}

// NewManager returns a Manager with workers concurrent imports. The instance id names
// this process's claims folders; it must be unique among live instances sharing a drop
// folder (NewInstanceID gives one).
func NewManager(id string, workers int, log zerolog.Logger) *Manager {
	if workers < 1 {
		workers = 1
	}
	return &Manager{
		id: id, workers: workers, log: log, retryFirst: 5 * time.Second,
		jobs:    make(chan *job, workers*4),
		syncing: make(chan struct{}, workers*maxSyncingPerWorker),
		quit:    make(chan struct{}),
		intake:  context.Background(),
		claims:  map[string]*claims{}, cancel: map[string]context.CancelFunc{}, gen: map[string]*Connector{},
	}
}

// NewInstanceID returns an id unique to this process: host name, process id and start time.
func NewInstanceID() string {
	h, _ := os.Hostname()
	if h == "" {
		h = "localhost"
	}
	return h + "-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
}

// Counts returns the outcome counters since the Manager was made.
func (m *Manager) Counts() *Counts { return &m.counts }

func (m *Manager) claimsFor(c *Connector) (*claims, error) {
	drop := c.DropFolder
	m.mu.Lock()
	defer m.mu.Unlock()
	if cl, ok := m.claims[drop]; ok {
		if _, err := os.Stat(filepath.Join(cl.dir, ".lock")); err == nil {
			return cl, nil
		}
		// The drop folder was removed and made again: a new claims folder. Files
		// claimed into the old one went with it.
		cl.close()
	}
	cl, err := openClaims(drop, m.id, c.ClaimLease, func(err error) {
		c.Log.Warn().Err(err).Msg("claim lease not renewed: after claim_lease another host may adopt this instance's claims")
	})
	if err != nil {
		return nil, err
	}
	m.claims[drop] = cl
	return cl, nil
}

// work runs the pool until quit is closed, then finishes the jobs still queued. Jobs
// not yet claimed are dropped once intake has stopped: their files are still in the
// drop folder. Claimed jobs always finish. The jobs channel is never closed, so a late
// producer (a retry timer) cannot panic; what it queues after the pool has gone stays
// claimed and is recovered at the next start. A worker whose job detached (runJob)
// ends with that job: another one has taken its place.
func (m *Manager) work(wg *sync.WaitGroup) {
	defer wg.Done()
	for {
		select {
		case j := <-m.jobs:
			if m.runJob(j, wg) {
				return
			}
		case <-m.quit:
			for {
				select {
				case j := <-m.jobs:
					if m.runJob(j, wg) {
						return
					}
				default:
					return
				}
			}
		}
	}
}

// maxSyncingPerWorker bounds the jobs waiting for the disk off the pool: as many per
// worker (memory, open files), past which a job keeps its worker while it waits.
const maxSyncingPerWorker = 16

// runJob runs j on the worker's goroutine. Once a file's copies are in place in the
// Maildirs (visible to readers), what is left is waiting for fsyncs shared with other
// files in flight, then the DSN and the acknowledgement: the job detaches there, a new
// worker (counted in pool) takes this one's place for the next file, and this goroutine
// ends with the job (detached is true). A new message then never waits behind the disk
// work of the ones before it; the disk work itself is the same, and a file is still
// acknowledged only once its copies are durable.
func (m *Manager) runJob(j *job, pool *sync.WaitGroup) (detached bool) {
	detach := func() { // at most once, on this goroutine
		select {
		case m.syncing <- struct{}{}:
			detached = true
			pool.Add(1)
			go m.work(pool)
			// The new worker waits in this P's next slot, and this goroutine is about
			// to block in fdatasync and fsync while holding the P: Go takes a P back
			// from a system call only at sysmon's next tick (20 µs, up to 10 ms when
			// it has been idle), so the next file waited behind the disk after all
			// (175 µs median in a runtime trace at 2,000 files/s, 5 ms at worst).
			// Yielding lets the new worker start first; 1 µs median then.
			runtime.Gosched()
		default: // too many waiting already: this one keeps its worker
		}
	}
	out := m.doJob(j, detach)
	m.counts.add(out)
	if j.done != nil {
		j.done()
	}
	if j.wg != nil {
		j.wg.Done()
	}
	if detached {
		<-m.syncing
	}
	return detached
}

func (m *Manager) doJob(j *job, detach func()) intake.Outcome {
	path := j.path
	stagePath(path, stageWorker)
	if !j.claimed {
		if m.intake.Err() != nil {
			return intake.Skipped
		}
		// Whatever offered the path, only a regular file is claimed: the event loop
		// has just looked (checked), anything else is looked at here. An entry swapped
		// in after the look is claimed but never followed nor read (see process): it
		// is quarantined unread.
		if !j.checked {
			fi, err := os.Lstat(path)
			if err != nil || !m.regular(j.conn, path, fi.Mode()) {
				return intake.Skipped
			}
		}
		p, ok, err := j.cl.claim(path)
		if err != nil {
			j.conn.Log.Warn().Err(err).Str("file", filepath.Base(path)).Msg("claim failed")
			return intake.Skipped
		}
		if !ok {
			return intake.Skipped
		}
		path = p
		stagePath(path, stageClaimed)
	}
	// In-flight messages finish even when shutdown has begun.
	out, last := j.conn.process(context.Background(), path, j.recovered, j.last, detach)
	if out == intake.Retry && j.wg == nil && m.intake.Err() == nil {
		m.retryLater(&job{conn: j.conn, cl: j.cl, path: path, claimed: true, recovered: true, attempt: j.attempt + 1, last: last})
	}
	return out
}

// retryLater queues a claimed file again after an exponential backoff (retryFirst
// doubling, capped at 5 minutes). A file still waiting at shutdown stays claimed and is
// recovered at the next start.
func (m *Manager) retryLater(j *job) {
	d := m.retryFirst << min(j.attempt-1, 6)
	if d > 5*time.Minute {
		d = 5 * time.Minute
	}
	time.AfterFunc(d, func() {
		if m.intake.Err() != nil {
			return
		}
		select {
		case m.jobs <- j:
		case <-m.intake.Done():
		}
	})
}

// Run watches the given connectors and imports until ctx is done, then lets the
// in-flight messages finish and returns. Update replaces the connectors while it runs.
func (m *Manager) Run(ctx context.Context, conns []*Connector) error {
	m.intake = ctx
	var wg sync.WaitGroup
	for i := 0; i < m.workers; i++ {
		wg.Add(1)
		go m.work(&wg)
	}
	m.Update(conns)
	<-ctx.Done()
	m.runs.Wait() // watchers have stopped offering
	close(m.quit)
	wg.Wait()
	writeStages()
	m.mu.Lock()
	for _, cl := range m.claims {
		cl.release()
	}
	m.mu.Unlock()
	return nil
}

// Update makes conns the running set: watchers of connectors that are gone stop, new
// ones start, changed ones restart with their new setup. Files in flight finish with
// the setup they started with; nothing is lost or repeated, because the claims folder
// of a drop folder stays the same.
func (m *Manager) Update(conns []*Connector) {
	m.mu.Lock()
	defer m.mu.Unlock()
	want := map[string]*Connector{}
	for _, c := range conns {
		want[c.DropFolder] = c
	}
	for drop, cancel := range m.cancel {
		if _, ok := want[drop]; !ok {
			cancel()
			m.healthMu.Lock()
			delete(m.health, m.gen[drop].Name)
			m.healthMu.Unlock()
			delete(m.cancel, drop)
			delete(m.gen, drop)
		}
	}
	for drop, c := range want {
		if cancel, ok := m.cancel[drop]; ok {
			cancel()
		}
		ctx, cancel := context.WithCancel(m.intake)
		m.cancel[drop] = cancel
		m.gen[drop] = c
		m.runs.Add(1)
		go m.superviseWatch(ctx, c)
	}
}

// superviseWatch runs a connector's watcher and restarts it with backoff (1s doubling,
// capped at 1 minute) when its folder fails; other connectors go on.
func (m *Manager) superviseWatch(ctx context.Context, c *Connector) {
	defer m.runs.Done()
	backoff := time.Second
	for {
		started := time.Now()
		err := m.watchOnce(ctx, c)
		if ctx.Err() != nil {
			return
		}
		m.setHealth(c, false, err)
		if errors.Is(err, errBecameMaildir) {
			c.Log.Info().Str("drop_folder", c.DropFolder).Msg("drop folder is a Maildir now: watching its new/")
			continue
		}
		if time.Since(started) > time.Minute {
			backoff = time.Second
		}
		c.Log.Error().Err(err).Str("drop_folder", c.DropFolder).Dur("retry_in", backoff).Msg("watcher stopped; retrying")
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, time.Minute)
	}
}

func (m *Manager) watchOnce(ctx context.Context, c *Connector) error {
	if fi, err := os.Stat(c.DropFolder); err != nil || !fi.IsDir() {
		return fmt.Errorf("drop folder %s is missing", c.DropFolder)
	}
	cl, err := m.claimsFor(c)
	if err != nil {
		return err
	}
	return m.watch(ctx, c, cl)
}

// Once imports every file now present in each connector's drop folder (and claims left
// by dead instances), waits for all of them, and returns. A file written less than the
// settle time ago is watched until it has been unchanged for settle, then taken; one
// still being written after OnceWait is left in place, logged and counted as Waiting.
// Files that met a transient error stay claimed; the next run or the daemon recovers
// them.
func (m *Manager) Once(ctx context.Context, conns []*Connector) error {
	var wg, pool, settling sync.WaitGroup
	for i := 0; i < m.workers; i++ {
		pool.Add(1)
		go m.work(&pool)
	}
	var firstErr error
	for _, c := range conns {
		cl, err := m.claimsFor(c)
		if err != nil {
			c.Log.Error().Err(err).Msg("cannot claim in drop folder")
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		paths, err := cl.adopt()
		if err != nil {
			c.Log.Warn().Err(err).Msg("adopting claims")
		}
		for _, p := range paths {
			wg.Add(1)
			m.jobs <- &job{conn: c, cl: cl, path: p, claimed: true, recovered: true, wg: &wg}
		}
		dir := c.watchDir()
		fs := newFolderState(ChooseMode(dir, c.Watch), cl)
		var young []string
		addYoung := func(name string) bool { young = append(young, name); return true }
		if err := m.scan(ctx, c, cl, dir, c.isMaildir(dir), addYoung, &wg, fs); err != nil {
			c.Log.Error().Err(err).Msg("scan failed")
			if firstErr == nil {
				firstErr = err
			}
		}
		if len(young) > 0 {
			settling.Add(1)
			go func() {
				defer settling.Done()
				m.settleOnce(ctx, c, cl, dir, young, &wg, fs)
			}()
		}
	}
	settling.Wait()
	wg.Wait()
	close(m.quit)
	pool.Wait()
	m.mu.Lock()
	for _, cl := range m.claims {
		cl.release()
	}
	m.mu.Unlock()
	return firstErr
}
