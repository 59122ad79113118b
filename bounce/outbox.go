package bounce

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxdrop/mxdrop/importer/durable"
)

// States of an outbox entry: the sub-folder its record is in.
const (
	StateQueued = "queue"
	StateSent   = "sent"
	StateFailed = "failed"
)

// Defaults of OutboxOptions.
const (
	DefaultRetryFor      = 120 * time.Hour
	DefaultMinBackoff    = time.Minute
	DefaultMaxBackoff    = time.Hour
	DefaultSentRetention = 7 * 24 * time.Hour
)

// ErrOutboxLocked is returned by OpenOutbox when another process holds the outbox.
var ErrOutboxLocked = errors.New("outbox is in use by another process")

// OutboxOptions configure an Outbox.
type OutboxOptions struct {
	// Dir is the outbox folder (state_dir/outbox); created when missing.
	Dir string
	// Senders maps relay names to the relays that send their DSNs; "" is the default
	// relay and the one used for a name that is not in the map. A DSN whose relay is
	// missing altogether waits, retried like a relay that cannot be reached.
	Senders map[string]Sender
	// RetryFor is how long a DSN is retried before it is given up (default 120h).
	RetryFor time.Duration
	// MinBackoff is the wait after the first failed attempt; it doubles with every
	// further attempt up to MaxBackoff (defaults 1m and 1h).
	MinBackoff, MaxBackoff time.Duration
	// SentRetention is how long the records of sent DSNs are kept (default 7 days):
	// long enough that a message imported again after a crash finds its DSN sent,
	// and at least the rate limit's window.
	SentRetention time.Duration
	// Now is the clock; nil uses time.Now.
	Now func() time.Time
	// Log is the parent logger; the outbox logs with component=bounce, one event per
	// outcome: queued, duplicate, sent, retry, given_up.
	Log zerolog.Logger
}

// Outbox is the durable queue of DSNs waiting for a relay: a folder (see the package
// documentation for its layout), so the queue survives restarts. One process owns an
// outbox at a time (an flock on Dir/lock). Its methods are safe for concurrent use.
type Outbox struct {
	opts    OutboxOptions
	dir     string
	lock    io.Closer
	mu      sync.Mutex // guards entries and every write to the folder
	entries map[string]*entry
	closed  bool
	runMu   sync.Mutex // one ProcessDue at a time
	wake    chan struct{}
	pruned  time.Time
	// sendersMu guards opts.Senders, which a configuration reload replaces.
	sendersMu sync.RWMutex
}

// Record is the metadata of one DSN in the outbox, kept as K.json beside K.eml.
type Record struct {
	// Source is the original message's identity (importer.Message.ID).
	Source       string    `json:"source"`
	MessageID    string    `json:"message_id,omitempty"` // the original's Message-ID
	DSNMessageID string    `json:"dsn_message_id"`
	Sender       string    `json:"sender"` // the DSN's recipient: the original sender
	Failed       []string  `json:"failed"`
	Relay        string    `json:"relay,omitempty"`
	Queued       time.Time `json:"queued"`
	Attempts     int       `json:"attempts"`
	NextAttempt  time.Time `json:"next_attempt,omitzero"`
	LastError    string    `json:"last_error,omitempty"`
	Sent         time.Time `json:"sent,omitzero"`
	GaveUp       time.Time `json:"gave_up,omitzero"`
	Reason       string    `json:"reason,omitempty"` // why it was given up
}

type entry struct {
	Record
	key   string
	state string
}

// Item is a DSN to enqueue.
type Item struct {
	// ID is the original message's identity (importer.Message.ID): the outbox holds
	// at most one DSN per ID.
	ID string
	// MessageID is the original's Message-ID, for logs.
	MessageID string
	// Relay names the relay (see OutboxOptions.Senders).
	Relay string
	DSN   *DSN
}

// outboxKey is the file name stem of a message identity's DSN.
func outboxKey(id string) string {
	s := sha256.Sum256([]byte("mxdrop-outbox\x00" + id))
	return hex.EncodeToString(s[:16])
}

// OpenOutbox opens (creating) the outbox folder, takes its lock, removes what
// interrupted writes left behind, completes interrupted moves, and loads the queue.
// It fails with ErrOutboxLocked (wrapped) when another process has it open. Close
// releases it.
func OpenOutbox(opts OutboxOptions) (*Outbox, error) {
	if opts.Dir == "" {
		return nil, errors.New("open outbox: no folder")
	}
	if opts.RetryFor <= 0 {
		opts.RetryFor = DefaultRetryFor
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = DefaultMaxBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = opts.MinBackoff
	}
	if opts.SentRetention <= 0 {
		opts.SentRetention = DefaultSentRetention
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	opts.Log = opts.Log.With().Str("component", "bounce").Logger()
	o := &Outbox{opts: opts, dir: opts.Dir, entries: map[string]*entry{}, wake: make(chan struct{}, 1)}
	for _, sub := range []string{"tmp", StateQueued, StateSent, StateFailed} {
		if err := durable.MkdirAll(filepath.Join(o.dir, sub), 0o750); err != nil {
			return nil, fmt.Errorf("open outbox: %w", err)
		}
	}
	lock, err := durable.TryLock(filepath.Join(o.dir, "lock"), 0o640)
	if errors.Is(err, durable.ErrLocked) {
		err = ErrOutboxLocked
	}
	if err != nil {
		return nil, fmt.Errorf("open outbox %s: %w", o.dir, err)
	}
	o.lock = lock
	if err := o.load(); err != nil {
		lock.Close()
		return nil, fmt.Errorf("open outbox %s: %w", o.dir, err)
	}
	o.mu.Lock()
	o.prune()
	o.mu.Unlock()
	return o, nil
}

// Close releases the outbox. It does not wait for a running ProcessDue; cancel Run's
// context first.
func (o *Outbox) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil
	}
	o.closed = true
	return o.lock.Close()
}

func (o *Outbox) path(state, key, ext string) string {
	return filepath.Join(o.dir, state, key+ext)
}

// load reads the records of every state and repairs what a crash left halfway.
func (o *Outbox) load() error {
	tmp := filepath.Join(o.dir, "tmp")
	if names, err := os.ReadDir(tmp); err == nil {
		for _, n := range names {
			os.Remove(filepath.Join(tmp, n.Name()))
		}
	}
	bad := map[string]bool{} // keys whose record cannot be read: never touched
	// Finished states first: a record there wins over a queue record left behind by
	// a move that was interrupted.
	for _, state := range []string{StateSent, StateFailed, StateQueued} {
		names, err := os.ReadDir(filepath.Join(o.dir, state))
		if err != nil {
			return fmt.Errorf("read %s: %w", state, err)
		}
		for _, n := range names {
			key, ok := strings.CutSuffix(n.Name(), ".json")
			if !ok {
				continue
			}
			if prev, dup := o.entries[key]; dup {
				// state is queue here: finish the move to prev.state.
				o.finishMove(key, prev.state)
				continue
			}
			b, err := os.ReadFile(filepath.Join(o.dir, state, n.Name()))
			if err != nil {
				return fmt.Errorf("read record: %w", err)
			}
			e := &entry{key: key, state: state}
			if err := json.Unmarshal(b, &e.Record); err != nil {
				o.opts.Log.Error().Err(err).Str("file", filepath.Join(o.dir, state, n.Name())).
					Msg("outbox record unreadable; it and its dsn are left in place for an administrator")
				bad[key] = true
				continue
			}
			o.entries[key] = e
		}
	}
	// A DSN without its record is an enqueue that never returned: its caller kept
	// the original and will enqueue it again.
	names, err := os.ReadDir(filepath.Join(o.dir, StateQueued))
	if err != nil {
		return fmt.Errorf("read queue: %w", err)
	}
	for _, n := range names {
		key, ok := strings.CutSuffix(n.Name(), ".eml")
		if !ok {
			continue
		}
		if e, known := o.entries[key]; bad[key] || known && e.state == StateQueued {
			continue
		}
		os.Remove(filepath.Join(o.dir, StateQueued, n.Name()))
	}
	return durable.SyncDir(filepath.Join(o.dir, StateQueued))
}

// finishMove completes a move from the queue to state whose record was written.
func (o *Outbox) finishMove(key, state string) {
	src, dst := o.path(StateQueued, key, ".eml"), o.path(state, key, ".eml")
	if _, err := os.Lstat(dst); errors.Is(err, os.ErrNotExist) {
		os.Rename(src, dst)
	} else {
		os.Remove(src)
	}
	os.Remove(o.path(StateQueued, key, ".json"))
}

// State returns the state of the DSN of message identity id, false when the outbox
// holds none (never queued, or its sent record expired).
func (o *Outbox) State(id string) (string, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if e, ok := o.entries[outboxKey(id)]; ok {
		return e.state, true
	}
	return "", false
}

// Each calls fn with every record in the outbox queued at or after since, in no
// particular order. fn must not call the Outbox.
func (o *Outbox) Each(since time.Time, fn func(state string, r Record)) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, e := range o.entries {
		if !e.Queued.Before(since) {
			fn(e.state, e.Record)
		}
	}
}

// Enqueue stores it.DSN durably (the file and its record are fsynced, and so are the
// folders) and returns true; Run sends it. When the outbox already holds a DSN for
// it.ID, queued, sent or given up, it stores nothing and returns false: a message
// imported twice is bounced once. An error means nothing was queued; the caller
// keeps the original and tries again.
func (o *Outbox) Enqueue(it Item) (bool, error) {
	if it.DSN == nil || it.ID == "" {
		return false, errors.New("enqueue: no DSN or no message identity")
	}
	key := outboxKey(it.ID)
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return false, errors.New("enqueue: outbox closed")
	}
	log := o.opts.Log.With().Str("message_id", it.MessageID).Str("dsn_message_id", it.DSN.MessageID).
		Str("sender", it.DSN.Sender).Strs("failed", it.DSN.Failed).Logger()
	if e, ok := o.entries[key]; ok {
		log.Info().Str("outcome", "duplicate").Str("state", e.state).Msg("dsn already in the outbox")
		return false, nil
	}
	now := o.opts.Now()
	e := &entry{key: key, state: StateQueued, Record: Record{
		Source: it.ID, MessageID: it.MessageID, DSNMessageID: it.DSN.MessageID,
		Sender: it.DSN.Sender, Failed: it.DSN.Failed, Relay: it.Relay,
		Queued: now, NextAttempt: now,
	}}
	tmp := filepath.Join(o.dir, "tmp")
	dir := filepath.Join(o.dir, StateQueued)
	err := durable.WriteFile(tmp, key+".eml", dir, key+".eml", 0o640, func(w io.Writer) error {
		_, err := w.Write(it.DSN.Data)
		return err
	})
	if err == nil {
		err = o.writeRecord(e, StateQueued)
	}
	if err != nil {
		os.Remove(filepath.Join(dir, key+".eml"))
		return false, fmt.Errorf("enqueue: %w", err)
	}
	o.entries[key] = e
	log.Info().Str("outcome", "queued").Str("relay", it.Relay).Msg("dsn queued")
	select {
	case o.wake <- struct{}{}:
	default:
	}
	return true, nil
}

func (o *Outbox) writeRecord(e *entry, state string) error {
	b, err := json.MarshalIndent(e.Record, "", "  ")
	if err != nil {
		return fmt.Errorf("encode record: %w", err)
	}
	b = append(b, '\n')
	return durable.WriteFile(filepath.Join(o.dir, "tmp"), e.key+".json", filepath.Join(o.dir, state), e.key+".json", 0o640,
		func(w io.Writer) error {
			_, err := w.Write(b)
			return err
		})
}

// Run sends queued DSNs as they fall due until ctx is cancelled, then returns nil.
// Enqueue wakes it. Errors of single DSNs are logged, not returned.
func (o *Outbox) Run(ctx context.Context) error {
	for {
		next := o.ProcessDue(ctx)
		if ctx.Err() != nil {
			return nil
		}
		wait := time.Hour // also the pace of pruning sent records
		if !next.IsZero() {
			if d := next.Sub(o.opts.Now()); d < wait {
				wait = max(d, 0)
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-o.wake:
			t.Stop()
		case <-t.C:
		}
	}
}

// ProcessDue makes one attempt at every queued DSN whose next attempt is due, one
// after the other, and returns when the next one falls due (zero when the queue is
// empty). Run calls it; tests call it with their own clock.
func (o *Outbox) ProcessDue(ctx context.Context) time.Time {
	o.runMu.Lock()
	defer o.runMu.Unlock()
	now := o.opts.Now()
	o.mu.Lock()
	if now.Sub(o.pruned) >= time.Hour {
		o.prune()
	}
	var due []*entry
	for _, e := range o.entries {
		if e.state == StateQueued && !e.NextAttempt.After(now) {
			due = append(due, e)
		}
	}
	o.mu.Unlock()
	sort.Slice(due, func(i, j int) bool {
		if !due[i].NextAttempt.Equal(due[j].NextAttempt) {
			return due[i].NextAttempt.Before(due[j].NextAttempt)
		}
		return due[i].key < due[j].key
	})
	for _, e := range due {
		if ctx.Err() != nil {
			break
		}
		o.attempt(ctx, e)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	var next time.Time
	for _, e := range o.entries {
		if e.state == StateQueued && (next.IsZero() || e.NextAttempt.Before(next)) {
			next = e.NextAttempt
		}
	}
	return next
}

// errNoRelay is the temporary failure of a DSN whose relay is not configured.
var errNoRelay = errors.New("no relay configured for this dsn")

func (o *Outbox) sender(relay string) Sender {
	o.sendersMu.RLock()
	defer o.sendersMu.RUnlock()
	if s, ok := o.opts.Senders[relay]; ok && s != nil {
		return s
	}
	return o.opts.Senders[""]
}

// setSenders replaces the relays (a configuration reload); attempts under way finish
// with the relay they started with.
func (o *Outbox) setSenders(m map[string]Sender) {
	o.sendersMu.Lock()
	o.opts.Senders = m
	o.sendersMu.Unlock()
}

// attempt sends one DSN and records the outcome.
func (o *Outbox) attempt(ctx context.Context, e *entry) {
	log := o.opts.Log.With().Str("message_id", e.MessageID).Str("dsn_message_id", e.DSNMessageID).
		Str("sender", e.Sender).Strs("failed", e.Failed).Str("relay", e.Relay).Logger()
	data, err := os.ReadFile(o.path(StateQueued, e.key, ".eml"))
	if err != nil {
		o.mu.Lock()
		defer o.mu.Unlock()
		e.Attempts++
		o.finish(log, e, StateFailed, "dsn file unreadable: "+err.Error())
		return
	}
	start := time.Now()
	if s := o.sender(e.Relay); s == nil {
		err = errNoRelay
	} else {
		err = s.Send(ctx, e.Sender, data)
	}
	if err != nil && ctx.Err() != nil {
		return // shutting down: not the DSN's fault, not an attempt
	}
	now := o.opts.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	e.Attempts++
	switch {
	case err == nil:
		e.Sent, e.LastError = now, ""
		log.Info().Str("outcome", "sent").Int("attempts", e.Attempts).
			Int64("duration_ms", time.Since(start).Milliseconds()).Msg("dsn sent")
		o.move(log, e, StateSent)
	case IsPermanent(err):
		e.LastError = err.Error()
		o.finish(log, e, StateFailed, "relay refused the dsn: "+err.Error())
	case now.Sub(e.Queued) >= o.opts.RetryFor:
		e.LastError = err.Error()
		o.finish(log, e, StateFailed, "retry_for exceeded; last error: "+err.Error())
	default:
		e.LastError = err.Error()
		next := now.Add(o.backoff(e.Attempts))
		if deadline := e.Queued.Add(o.opts.RetryFor); next.After(deadline) {
			next = deadline // one last attempt when retry_for ends
		}
		e.NextAttempt = next
		log.Warn().Err(err).Str("outcome", "retry").Int("attempts", e.Attempts).
			Time("next_attempt", next).Msg("dsn not sent; will retry")
		if werr := o.writeRecord(e, StateQueued); werr != nil {
			log.Error().Err(werr).Msg("could not update the outbox record")
		}
	}
}

// backoff is the wait after the n-th failed attempt: MinBackoff doubled n-1 times,
// at most MaxBackoff.
func (o *Outbox) backoff(n int) time.Duration {
	d := o.opts.MinBackoff
	for i := 1; i < n && d < o.opts.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, o.opts.MaxBackoff)
}

// finish gives a DSN up: it moves to failed/, never deleted. o.mu is held.
func (o *Outbox) finish(log zerolog.Logger, e *entry, state, reason string) {
	e.GaveUp, e.Reason = o.opts.Now(), reason
	log.Error().Str("outcome", "given_up").Int("attempts", e.Attempts).Str("reason", reason).
		Str("file", o.path(state, e.key, ".eml")).Msg("dsn given up")
	o.move(log, e, state)
}

// move writes e's record into state (the commit point) and then moves the DSN file
// there. o.mu is held. A failure is logged: the in-memory state is already final,
// so this process does not send the DSN again; after a restart it might.
func (o *Outbox) move(log zerolog.Logger, e *entry, state string) {
	e.state = state
	e.NextAttempt = time.Time{}
	if err := o.writeRecord(e, state); err != nil {
		log.Error().Err(err).Msg("could not record the dsn outcome in the outbox")
		return
	}
	o.finishMove(e.key, state)
	for _, d := range []string{state, StateQueued} {
		if err := durable.SyncDir(filepath.Join(o.dir, d)); err != nil {
			log.Error().Err(err).Msg("could not sync the outbox")
		}
	}
}

// prune removes the records of DSNs sent longer than SentRetention ago. o.mu is held.
func (o *Outbox) prune() {
	now := o.opts.Now()
	o.pruned = now
	for key, e := range o.entries {
		if e.state == StateSent && now.Sub(e.Sent) > o.opts.SentRetention {
			os.Remove(o.path(StateSent, key, ".eml"))
			if err := os.Remove(o.path(StateSent, key, ".json")); err == nil || errors.Is(err, os.ErrNotExist) {
				delete(o.entries, key)
			}
		}
	}
}
