package pollers

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer"
	"github.com/mxdrop/mxdrop/importer/durable"
	"github.com/mxdrop/mxdrop/importer/intake"
)

// Batch limits: one batch is fetched, marked in flight in one transaction, imported,
// marked done in one transaction and acknowledged at the server. Larger batches save
// fsyncs and round trips; smaller ones bound the spool's disk use and the work redone
// after a crash.
const (
	batchMaxMessages = 50
	batchMaxBytes    = 32 << 20
)

// Cycle connects, logs in, and goes once through every configured folder: it forgets
// messages gone from the server, deletes kept messages whose time has come, and
// fetches, imports and acknowledges new messages in batches, oldest first, at most
// max_per_cycle of them. It logs one event per message and one for the cycle, and
// returns the cycle's counts. The error is the login, connection or state failure
// that ended the cycle early, or says how many messages met a transient error; every
// message not handled stays on the server and is retried by the next cycle. Cycle
// works on an inactive poller too.
func (p *Poller) Cycle(ctx context.Context) (CycleStats, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	start := time.Now()
	sess, err := p.connect(ctx)
	if err != nil {
		st := CycleStats{Poller: p.name, Errors: 1, Duration: time.Since(start)}
		p.logCycle(st, err)
		return st, err
	}
	defer sess.close()
	return p.cycleOn(ctx, sess, start)
}

// cycleLocked is Cycle over an open session (an IDLE session's repeated cycles).
func (p *Poller) cycleLocked(ctx context.Context, sess session, start time.Time) (CycleStats, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cycleOn(ctx, sess, start)
}

// cycleOn runs a cycle on sess with p.mu held, and logs it.
func (p *Poller) cycleOn(ctx context.Context, sess session, start time.Time) (st CycleStats, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic in cycle: %v", r)
			st.Errors++
		}
		st.Poller = p.name
		st.Duration = time.Since(start)
		p.logCycle(st, err)
	}()
	state, err := p.openState()
	if err != nil {
		st.Errors++
		return st, err
	}
	defer state.Close()
	state.fault = p.stateFault
	sp, err := newSpool(filepath.Join(p.dir, "spool"), p.maxMessageSize())
	if err == nil {
		err = sp.clean()
	}
	if err != nil {
		st.Errors++
		return st, fmt.Errorf("spool: %w", err)
	}
	budget := -1
	if p.cfg.MaxPerCycle > 0 {
		budget = p.cfg.MaxPerCycle
	}
	var errs, folderErrs []error
	polled := 0 // folders gone through without an error
	for _, name := range sess.folders() {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		f, err := sess.open(ctx, name)
		if err != nil {
			st.Errors++
			folderErrs = append(folderErrs, err)
			continue
		}
		fst, err := p.folderCycle(ctx, state, sp, f, &budget)
		f.done()
		st.add(fst)
		if errors.Is(err, errSessionEnded) {
			// Logged with the message; the folders after this one wait for the next
			// cycle, on a new connection.
			polled++
			break
		}
		if err != nil {
			st.Errors++
			if name != "" {
				err = fmt.Errorf("folder %s: %w", name, err)
			}
			folderErrs = append(folderErrs, err)
			continue
		}
		polled++
	}
	if _, err := state.PruneDups(p.now().Add(-p.cfg.DuplicateWindow.D())); err != nil {
		errs = append(errs, fmt.Errorf("prune duplicate window: %w", err))
	}
	if len(errs) == 0 && len(folderErrs) > 0 && polled > 0 {
		// The connection and the state work: the failing folders are reported, and the
		// schedule does not back off (a folder named wrongly must not delay the rest).
		return st, &FolderErrors{Err: errors.Join(folderErrs...)}
	}
	errs = append(errs, folderErrs...)
	if len(errs) == 0 && st.Errors > 0 {
		errs = append(errs, fmt.Errorf("%d messages met a transient error; they stay on the server and are retried", st.Errors))
	}
	return st, errors.Join(errs...)
}

// FolderErrors is a cycle's error when some of its folders failed while others were
// polled without error. Run does not count it as a failure for its backoff.
type FolderErrors struct {
	Err error
}

func (e *FolderErrors) Error() string { return e.Err.Error() }
func (e *FolderErrors) Unwrap() error { return e.Err }

// openState opens the state file and reports a lost or corrupt one.
func (p *Poller) openState() (*State, error) {
	s, problem, err := OpenState(p.dir, p.name, p.now(), !p.checked)
	if err != nil {
		return nil, err
	}
	p.checked = true
	if problem != nil {
		p.log.Error().Err(problem).Str("reason", "state_"+problem.Kind).Str("state", problem.Path).
			Msg("poller state lost: messages on the server are fetched again and delivered only where the Maildir does not hold them already")
	}
	return s, nil
}

// item is a message chosen for fetching.
type item struct {
	m         remoteMsg
	entry     Entry // the state's entry, if known
	known     bool
	recovered bool // its import may have happened before: look in the Maildir first
}

// folderCycle is one cycle's work on one folder.
func (p *Poller) folderCycle(ctx context.Context, state *State, sp *spool, f folder, budget *int) (st CycleStats, err error) {
	scope := f.scope()
	ss, err := state.Scope(scope)
	if err != nil {
		return st, fmt.Errorf("read state: %w", err)
	}
	msgs, err := f.list(ctx)
	if err != nil {
		return st, fmt.Errorf("list: %w", err)
	}
	no := false
	switch {
	case !ss.Exists:
		if err := state.Apply(scope, Change{Validity: f.validity(), Complete: &no}); err != nil {
			return st, fmt.Errorf("write state: %w", err)
		}
	case ss.Validity != f.validity():
		if ss, err = p.renumber(ctx, state, f, ss, msgs); err != nil {
			return st, err
		}
	}

	// Forget the messages that are gone from the server.
	present := make(map[string]bool, len(msgs))
	for _, m := range msgs {
		present[m.Key] = true
	}
	var gone []string
	for k := range ss.Entries {
		if !present[k] {
			gone = append(gone, k)
		}
	}
	if len(gone) > 0 {
		if err := state.Apply(scope, Change{Delete: gone}); err != nil {
			return st, fmt.Errorf("write state: %w", err)
		}
		for _, k := range gone {
			delete(ss.Entries, k)
		}
	}

	now := p.now()
	var fresh, expired []remoteMsg
	for i := range msgs {
		m := &msgs[i]
		e, ok := ss.Entries[m.Key]
		m.Gen = e.Gen
		switch {
		case !ok || e.Status == StatusInFlight:
			fresh = append(fresh, *m)
		case e.Status == StatusTooLarge:
			if p.tooLarge(e.Size) {
				st.TooLarge++
			} else {
				fresh = append(fresh, *m) // max_message_size was raised
			}
		case e.Status == StatusDone && p.deleteDue(e, now):
			expired = append(expired, *m)
		}
	}
	if len(expired) > 0 {
		var again []remoteMsg
		if expired, again, err = p.verifyExpired(ctx, f, ss.Entries, expired); err != nil {
			return st, fmt.Errorf("verify before delete: %w", err)
		}
		fresh = append(fresh, again...)
	}
	if len(expired) > 0 {
		n, err := f.remove(ctx, expired)
		st.Deleted += n
		if err != nil {
			return st, fmt.Errorf("delete: %w", err)
		}
	}

	var fetch []item
	if len(fresh) > 0 {
		described, err := f.describe(ctx, fresh)
		if err != nil {
			return st, fmt.Errorf("list sizes: %w", err)
		}
		large := map[string]Entry{}
		for _, m := range described {
			e, known := ss.Entries[m.Key]
			if p.tooLarge(m.Size) {
				st.TooLarge++
				if !known || e.Status != StatusTooLarge {
					first := now.Unix()
					if known {
						first = e.First
					}
					large[m.Key] = Entry{Status: StatusTooLarge, First: first, Size: m.Size}
					p.log.Warn().Str("uid", m.Key).Str("file", f.label(m)).Int64("size", m.Size).
						Int64("max_message_size", p.maxMessageSize()).Str("reason", "too_large").
						Msg("message larger than max_message_size left on the server")
				}
				continue
			}
			fetch = append(fetch, item{
				m: m, entry: e, known: known,
				recovered: known && e.Status == StatusInFlight || !known && !ss.Complete,
			})
		}
		if len(large) > 0 {
			if err := state.Apply(scope, Change{Put: large}); err != nil {
				return st, fmt.Errorf("write state: %w", err)
			}
		}
	}
	if *budget >= 0 {
		if len(fetch) > *budget {
			st.Pending = len(fetch) - *budget
			fetch = fetch[:*budget]
		}
		*budget -= len(fetch)
	}
	bst, err := p.batches(ctx, state, sp, f, fetch)
	st.add(bst)
	if d, ok := f.(deferredRemover); ok {
		st.Errors += d.fetchRefused()
	}
	if err != nil {
		return st, err
	}
	n, err := f.commit(ctx)
	st.Deleted += n
	if err != nil {
		return st, fmt.Errorf("delete: %w", err)
	}
	if !ss.Complete && st.Pending == 0 && st.Errors == 0 {
		yes := true
		if err := state.Apply(scope, Change{Complete: &yes}); err != nil {
			return st, fmt.Errorf("write state: %w", err)
		}
	}
	return st, nil
}

func (p *Poller) tooLarge(size int64) bool {
	return size > p.maxMessageSize()
}

// messageCeiling is configs.PollerMessageCeiling (tests lower it).
var messageCeiling int64 = configs.PollerMessageCeiling

// maxMessageSize is the poller's max_message_size, or the ceiling when it is 0.
func (p *Poller) maxMessageSize() int64 {
	if m := p.cfg.MaxMessageSize; m > 0 {
		return m
	}
	return messageCeiling
}

// deleteDue reports whether a handled message is to be deleted from the server now.
func (p *Poller) deleteDue(e Entry, now time.Time) bool {
	switch p.keep {
	case KeepForever:
		return false
	case KeepDays:
		return now.Unix()-e.First >= int64(p.cfg.KeepDays)*86400
	}
	return true
}

// verifyExpired splits expired, handled messages due for deletion, into those whose
// server copy is still the one delivered (del) and those to fetch again (again), whose
// entries it replaces in entries. A POP3 server may list a new message under the UIDL
// of one delivered before (RFC 1939 section 7 forbids it; some servers reuse a slot's
// id): deleting on the state's word would delete it unfetched. So the copy on the
// server is deleted only when the size LIST gives and the headerPrint of TOP n 0 both
// match what was recorded at delivery. On a mismatch the message is new: it gets a new
// generation, part of its identity, so its deliveries do not take the old one's file
// names, and the mismatch is logged at warn. An entry without a header print (written
// before it was recorded), or a server that refuses TOP, cannot be verified: unless its
// size already tells it apart, the message is fetched again as Recovered under its old
// identity, so that a copy already in the Maildir is found and not delivered twice.
// IMAP folders are not checked: a UID is never reused within one UIDVALIDITY (RFC 3501
// section 2.3.1.1).
func (p *Poller) verifyExpired(ctx context.Context, f folder, entries map[string]Entry, expired []remoteMsg) (del, again []remoteMsg, err error) {
	hp, ok := f.(headerPrinter)
	if !ok {
		return expired, nil, nil
	}
	now := p.now().Unix()
	for _, m := range expired {
		e := entries[m.Key]
		got := ""
		sameSize := e.Size <= 0 || m.Size < 0 || e.Size == m.Size
		if sameSize {
			if got, err = hp.headerPrint(ctx, m); err != nil {
				return nil, nil, err
			}
			if got == "" || e.Header == "" {
				p.log.Info().Str("uid", m.Key).Str("file", f.label(m)).
					Msg("cannot verify that the server copy is the message delivered; fetched again, delivered only where the Maildir does not hold it")
				entries[m.Key] = Entry{Status: StatusInFlight, First: e.First, Size: e.Size, Gen: e.Gen}
				again = append(again, m)
				continue
			}
			if got == e.Header {
				del = append(del, m)
				continue
			}
		}
		gen := strconv.FormatInt(now, 36) + "-" + strconv.FormatInt(int64(m.Size), 36)
		if got != "" {
			gen = strconv.FormatInt(now, 36) + "-" + got[:12]
		}
		p.log.Warn().Str("uid", m.Key).Str("file", f.label(m)).Int64("recorded_size", e.Size).Int64("size", m.Size).
			Bool("header_differs", sameSize).Str("reason", "uid_reused").
			Msg("the server lists a message under the id of one delivered before, but it is another message: fetched as new, not deleted")
		entries[m.Key] = Entry{First: now, Gen: gen}
		m.Gen = gen
		again = append(again, m)
	}
	return del, again, nil
}

// batchLen is how many of items go into the next batch: at most batchMaxMessages and
// batchMaxBytes, at least one.
func batchLen(items []item) int {
	var bytes int64
	for i, it := range items {
		if i == batchMaxMessages || i > 0 && bytes+it.m.Size > batchMaxBytes {
			return i
		}
		bytes += max(it.m.Size, 0)
	}
	return len(items)
}

// batches fetches, imports and acknowledges items in batches. The order is what makes
// a crash at any point harmless:
//
//  1. fetch a batch into the spool (a crash: nothing happened yet);
//  2. mark the batch's messages in flight, one transaction (for every batch but a
//     cycle's first, the transaction of the previous batch's step 4; a crash from
//     here to 4: they are imported again as Recovered, and the importer skips every
//     delivery already in the Maildir);
//  3. import each; DSNs and quarantine copies are durable when this returns;
//  4. mark them done with their Message-ID keys, one transaction (a crash from here:
//     they are never fetched again, and deleted by the next cycle as keep says);
//  5. delete the server copies that keep does not keep.
//
// Steps 3 and 4 of one batch run while the next batch is fetched, so that the
// connection and the disk work at the same time; step 4 also marks that next batch in
// flight, in the same transaction, and the next batch is imported only once it has
// committed. The connection is used by this goroutine only. A connection lost in step 1
// still imports the messages that arrived complete; after a failed fetch the connection
// is not used again.
func (p *Poller) batches(ctx context.Context, state *State, sp *spool, f folder, items []item) (st CycleStats, err error) {
	var prev *batchRun // being imported
	defer func() {
		if prev != nil { // an early return: let the import finish, as a shutdown would
			prev.wait()
			st.add(prev.st)
			prev.release(sp)
		}
	}()
	// marked says that the next batch's items are marked in flight already: step 2 of
	// a batch rides on step 4 of the one before, one transaction instead of two.
	marked := false
	for len(items) > 0 || prev != nil {
		var next *batchRun
		var ferr error
		var large *item // refused too large by the fetch, which ended the session
		markedByPrev := false
		if len(items) > 0 {
			if ferr = ctx.Err(); ferr == nil {
				n := batchLen(items)
				markedByPrev = marked
				batch := items[:n]
				next, ferr = p.fetchBatch(ctx, state, sp, f, batch, !marked)
				items = items[n:]
				if large = tooLargeItem(batch, ferr); large != nil {
					// Neither the rest of this batch nor the batches after it can be
					// fetched on this connection.
					st.Pending += len(items) + n - 1
					if next != nil {
						st.Pending -= len(next.got)
					}
					items = nil
				}
			}
		}
		if prev != nil {
			perr := prev.wait()
			st.add(prev.st)
			if perr == nil && ferr == nil {
				perr = p.ack(ctx, f, prev, &st)
			}
			prev.release(sp)
			prev = nil
			if perr != nil {
				ferr = errors.Join(perr, ferr)
				if next != nil && markedByPrev && !committed(perr) {
					// Its in-flight marks may have failed with the done transaction
					// they rode on: it must not be imported. It stays on the server.
					next.release(sp)
					next = nil
				}
			}
		}
		if large != nil {
			// Recorded only now: the previous batch's done transaction, just
			// committed, may have carried an in-flight mark of the same message.
			st.TooLarge++
			if err := p.noteTooLarge(state, f, large, asTooLarge(ferr)); err != nil {
				ferr = errors.Join(err, ferr)
			} else if onlyTooLarge(ferr) {
				ferr = errSessionEnded
			}
		}
		if next == nil {
			if ferr != nil {
				return st, ferr
			}
			marked = false
			continue
		}
		// Mark the batch after this one in flight with this one's done transaction.
		var ahead map[string]Entry
		if ferr == nil && len(items) > 0 {
			following := items[:batchLen(items)]
			ptrs := make([]*item, len(following))
			for i := range following {
				ptrs[i] = &following[i]
			}
			ahead = p.inflight(ptrs)
		}
		next.start(p, state, f, ahead)
		marked = ahead != nil
		if ferr != nil {
			// The connection is most likely gone: import what arrived, and let the
			// next cycle delete what is due.
			next.wait()
			st.add(next.st)
			next.release(sp)
			return st, ferr
		}
		prev = next
	}
	return st, nil
}

// errSessionEnded is a batch's fetch that closed the connection on purpose: a message
// was too large (see noteTooLarge). It ends the cycle without an error; the messages
// not fetched yet are left for the next cycle (Pending).
var errSessionEnded = errors.New("session closed after a message too large")

// tooLargeItem returns the item of batch that err, a batch's fetch error, refused as
// too large; nil when err is no such refusal or names no message of batch.
func tooLargeItem(batch []item, err error) *item {
	tl := asTooLarge(err)
	if tl == nil {
		return nil
	}
	for i := range batch {
		if batch[i].m.Key == tl.Key {
			return &batch[i]
		}
	}
	return nil
}

// onlyTooLarge reports whether err is a *tooLargeError, wrapped but not joined with
// another error.
func onlyTooLarge(err error) bool {
	for ; err != nil; err = errors.Unwrap(err) {
		if _, ok := err.(*tooLargeError); ok {
			return true
		}
	}
	return false
}

// noteTooLarge records it, refused by its fetch as larger than max_message_size,
// as too large: like a message whose advertised size is over the limit, it stays on the
// server, is never deleted, and is not fetched again unless the limit is raised above
// the size recorded (at least the bytes received, past the limit). It logs the
// refusal at warn.
func (p *Poller) noteTooLarge(state *State, f folder, it *item, tl *tooLargeError) error {
	first := p.now().Unix()
	if it.entry.First != 0 { // known, or marked in flight
		first = it.entry.First
	}
	size := max(tl.Announced, tl.Received, it.m.Size)
	p.log.Warn().Str("uid", it.m.Key).Str("file", f.label(it.m)).Int64("size", it.m.Size).
		Int64("announced", tl.Announced).Int64("bytes_received", tl.Received).
		Int64("max_message_size", tl.Limit).Str("reason", "too_large").
		Msg("message larger than max_message_size although the server listed it smaller: " +
			"transfer stopped, connection closed, message left on the server")
	e := Entry{Status: StatusTooLarge, First: first, Size: size, Gen: it.m.Gen}
	if err := state.Apply(f.scope(), Change{Put: map[string]Entry{it.m.Key: e}}); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}

// committed reports whether err, a finished batch's error, came after its done
// transaction (and the in-flight marks that rode on it) had committed.
func committed(err error) bool {
	var d *deleteError
	return errors.As(err, &d)
}

// deleteError is a failure of step 5, after the batch's transaction committed.
type deleteError struct{ err error }

func (e *deleteError) Error() string { return "delete: " + e.err.Error() }
func (e *deleteError) Unwrap() error { return e.err }

// inflight returns the in-flight entries of items, and notes them in the items.
func (p *Poller) inflight(items []*item) map[string]Entry {
	now := p.now().Unix()
	out := make(map[string]Entry, len(items))
	for _, it := range items {
		e := it.entry
		if !it.known {
			e = Entry{First: now}
		}
		e.Status, e.Size = StatusInFlight, it.m.Size
		out[it.m.Key], it.entry = e, e
	}
	return out
}

// batchRun is one batch between its fetch and its acknowledgement.
type batchRun struct {
	got   []spooled
	byKey map[string]*item
	now   int64
	st    CycleStats
	del   []remoteMsg // handled messages to delete from the server
	err   error
	done  chan struct{}
}

// fetchBatch is steps 1 and 2: it fetches items and, when mark is true, marks what
// arrived in flight (otherwise the items were marked before). It returns nil when
// nothing arrived; the error is the fetch's or the state's. A batch whose in-flight
// mark failed is not returned: it must not be imported.
func (p *Poller) fetchBatch(ctx context.Context, state *State, sp *spool, f folder, items []item, mark bool) (*batchRun, error) {
	msgs := make([]remoteMsg, len(items))
	b := &batchRun{byKey: make(map[string]*item, len(items)), now: p.now().Unix()}
	for i := range items {
		msgs[i] = items[i].m
		b.byKey[items[i].m.Key] = &items[i]
	}
	got, ferr := f.fetch(ctx, msgs, sp)
	if ferr != nil {
		ferr = fmt.Errorf("fetch: %w", ferr)
	}
	if len(got) == 0 {
		return nil, ferr
	}
	b.got, b.st.Fetched = got, len(got)
	if !mark {
		return b, ferr
	}
	arrived := make([]*item, len(got))
	for i, g := range got {
		arrived[i] = b.byKey[g.m.Key]
	}
	inflight := p.inflight(arrived)
	if err := state.Apply(f.scope(), Change{Put: inflight}); err != nil {
		b.release(sp)
		// The fetch counts: the messages stay on the server and are fetched again.
		return nil, errors.Join(fmt.Errorf("mark in flight: %w", err), ferr)
	}
	return b, ferr
}

// start runs steps 3 and 4 in the background. The imports are local work: they finish
// even when the cycle's context is cancelled, so that a shutdown does not leave a
// batch half done.
//
// ahead, when not nil, are the in-flight marks of the next batch, committed in the
// same transaction as this batch's done marks.
func (b *batchRun) start(p *Poller, state *State, f folder, ahead map[string]Entry) {
	b.done = make(chan struct{})
	go func() {
		defer close(b.done)
		defer func() {
			if r := recover(); r != nil {
				b.err = fmt.Errorf("panic in batch import: %v", r)
				b.st.Errors++
			}
		}()
		b.err = p.importAndMark(state, f, b, ahead)
	}()
}

// wait waits for start's work and returns its error.
func (b *batchRun) wait() error {
	<-b.done
	return b.err
}

// release gives back the spool's memory and files.
func (b *batchRun) release(sp *spool) {
	for _, g := range b.got {
		sp.release(g)
	}
	b.got = nil
}

// importAndMark is steps 3 and 4, and step 2 of the next batch (ahead).
func (p *Poller) importAndMark(state *State, f folder, b *batchRun, ahead map[string]Entry) error {
	done := make(map[string]Entry, len(b.got))
	dups, prints := map[string]int64{}, map[string]string{}
	// The deliveries' Maildir folders are fsynced once for the batch, below, rather
	// than once per message.
	dirs := &durable.Batch{}
	defer dirs.Close() // after a failed Sync: the folders' syncers no longer wait for it
	results := p.importBatch(context.Background(), state, f, b.got, b.byKey, dirs)
	if err := dirs.Sync(); err != nil {
		// Not marked done: the messages stay in flight and are imported again as
		// Recovered, which fsyncs the folders where their copies are found.
		b.st.Errors += len(b.got)
		return fmt.Errorf("sync maildir folders: %w", err)
	}
	for i, d := range results {
		g := b.got[i]
		switch d.kind {
		case intake.Retry:
			b.st.Errors++
			continue
		case intake.Delivered:
			b.st.Delivered++
		case intake.Quarantined:
			b.st.Quarantined++
		case intake.Duplicate:
			b.st.Duplicates++
		}
		e := b.byKey[g.m.Key].entry
		e.Status, e.Done, e.MessageID, e.Gen = StatusDone, b.now, d.messageID, g.m.Gen
		e.Header = spoolHeaderPrint(g)
		done[g.m.Key] = e
		for _, k := range d.dups {
			dups[k], prints[k] = b.now, d.print
		}
		if p.deleteDue(e, p.now()) {
			b.del = append(b.del, g.m)
		} else {
			b.st.Kept++
		}
	}
	for k, e := range ahead {
		done[k] = e
	}
	if len(done) > 0 {
		if err := state.Apply(f.scope(), Change{Put: done, Dups: dups, DupPrints: prints}); err != nil {
			b.del = nil
			return fmt.Errorf("mark done: %w", err)
		}
	}
	return nil
}

// ack is step 5.
func (p *Poller) ack(ctx context.Context, f folder, b *batchRun, st *CycleStats) error {
	if len(b.del) == 0 {
		return nil
	}
	n, err := f.remove(ctx, b.del)
	st.Deleted += n
	if err != nil {
		return &deleteError{err}
	}
	return nil
}

// importBatch imports a batch's messages and returns what became of each, in the order
// of got. Each header is parsed once. Messages that share a Message-ID are imported in
// their order by one worker, since each one's duplicate check depends on the ones
// before; the rest are imported side by side by up to p.workers workers, so that their
// fsyncs overlap. The Maildir folders are left for the caller to fsync through batch.
func (p *Poller) importBatch(ctx context.Context, state *State, f folder, got []spooled, byKey map[string]*item, batch *durable.Batch) []delivery {
	jobs := make([]importJob, len(got))
	var groups [][]int
	byMID := map[string]int{}
	lookup := &importer.Lookup{}
	for i, g := range got {
		h, mid := spoolHeader(g)
		jobs[i] = importJob{g: g, h: h, mid: mid, recovered: byKey[g.m.Key].recovered, batch: batch, lookup: lookup}
		if mid != "" {
			jobs[i].print = contentPrint(g, h)
		}
		if gi, ok := byMID[mid]; ok && mid != "" {
			groups[gi] = append(groups[gi], i)
			continue
		}
		byMID[mid] = len(groups)
		groups = append(groups, []int{i})
	}
	out := make([]delivery, len(got))
	work := make(chan []int)
	var wg sync.WaitGroup
	for range min(p.workers, len(groups)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for grp := range work {
				pending := map[string]bool{}
				for _, i := range grp {
					out[i] = p.deliverSafe(ctx, state, f, jobs[i], pending)
					for _, k := range out[i].dups {
						pending[pendingKey(k, out[i].print)] = true
					}
				}
			}
		}()
	}
	for _, grp := range groups {
		work <- grp
	}
	close(work)
	wg.Wait()
	return out
}

// deliverSafe is deliver in an import worker: a panic fails the one message (it stays
// on the server and is retried) rather than the process.
func (p *Poller) deliverSafe(ctx context.Context, state *State, f folder, j importJob, pending map[string]bool) (d delivery) {
	defer func() {
		if r := recover(); r != nil {
			p.log.Error().Str("uid", j.g.m.Key).Str("file", f.label(j.g.m)).Str("outcome", string(intake.Retry)).
				Str("error", fmt.Sprintf("panic in import: %v", r)).Msg("message")
			d = delivery{kind: intake.Retry}
		}
	}()
	return p.deliver(ctx, state, f, j, pending)
}

// renumber carries a folder's state across a change of UIDVALIDITY (the server
// renumbered the folder, RFC 3501 section 2.3.1.1): handled messages are recognised by
// their Message-ID and keep their entries under the new UIDs; the rest are new. Without
// this, a renumbered folder kept on the server would be fetched again whole.
func (p *Poller) renumber(ctx context.Context, state *State, f folder, old ScopeState, msgs []remoteMsg) (ScopeState, error) {
	byMID := map[string][]Entry{}
	for _, e := range old.Entries {
		if e.Status == StatusDone && e.MessageID != "" {
			byMID[e.MessageID] = append(byMID[e.MessageID], e)
		}
	}
	adopted := map[string]Entry{}
	if r, ok := f.(renumberer); ok && len(byMID) > 0 && len(msgs) > 0 {
		ids, err := r.messageIDs(ctx, msgs)
		if err != nil {
			return old, fmt.Errorf("read message-ids after UIDVALIDITY change: %w", err)
		}
		// An adopted entry lets a later cycle delete the message unfetched, so a
		// Message-ID alone (which anyone can reuse) is not enough: the size must
		// match too. What is not adopted is fetched as new and its deliveries are
		// looked up in the Maildir first.
		described, err := f.describe(ctx, msgs)
		if err != nil {
			return old, fmt.Errorf("read sizes after UIDVALIDITY change: %w", err)
		}
		size := make(map[string]int64, len(described))
		for _, m := range described {
			size[m.Key] = m.Size
		}
		for _, m := range msgs {
			if l := byMID[ids[m.Key]]; len(l) > 0 && (l[0].Size <= 0 || l[0].Size == size[m.Key]) {
				adopted[m.Key] = l[0]
				byMID[ids[m.Key]] = l[1:]
			}
		}
	}
	no := false
	if err := state.Apply(f.scope(), Change{Reset: true, Validity: f.validity(), Put: adopted, Complete: &no}); err != nil {
		return old, fmt.Errorf("write state: %w", err)
	}
	p.log.Warn().Str("scope", f.scope()).Uint32("old_uidvalidity", old.Validity).Uint32("uidvalidity", f.validity()).
		Int("known", len(old.Entries)).Int("recognised", len(adopted)).
		Msg("the server renumbered the folder (UIDVALIDITY changed); known messages recognised by Message-ID")
	return ScopeState{Exists: true, Validity: f.validity(), Entries: adopted}, nil
}

// spoolHeaderPrint is the headerPrint of a spooled message; empty when it cannot be
// read (the entry then counts as unverified, see verifyExpired).
func spoolHeaderPrint(g spooled) string {
	r, err := g.open()
	if err != nil {
		return ""
	}
	defer r.Close()
	hp, err := headerPrint(r)
	if err != nil {
		return ""
	}
	return hp
}
