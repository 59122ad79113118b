package pollers

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mxdrop/mxdrop/importer"
	"github.com/mxdrop/mxdrop/importer/durable"
)

// What became of one fetched message.
const (
	kindDelivered   = "delivered"
	kindQuarantined = "quarantined"
	kindDuplicate   = "duplicate"
	kindRetry       = "retry"
)

// importJob is one fetched message, ready for import.
type importJob struct {
	g spooled
	// h is the message's parsed header block, nil when it has none (the importer then
	// rejects it with its reason); mid its Message-ID.
	h         *importer.Header
	mid       string
	print     string // contentPrint, compared with the dup keys' prints
	recovered bool
	// batch collects the Maildir folders to fsync before the batch is marked done.
	batch *durable.Batch
	// lookup shares the listings of cur/ among the batch's recovered messages.
	lookup *importer.Lookup
}

type delivery struct {
	kind      string
	messageID string
	dups      []string // dup keys to record
	print     string   // the message's contentPrint, recorded with dups
}

// pendingKey is the key of importBatch's pending map: a dup key and a content print.
func pendingKey(dupKey, content string) string { return dupKey + "\x00" + content }

// deliver imports one spooled message and acts on the result as the drop-folder
// watcher does: bounce failed recipients, quarantine what cannot be delivered. It logs
// the message's one event. Duplicate suppression comes first: a (Message-ID, account)
// pair delivered within duplicate_window is not delivered again, and a (Message-ID,
// failed recipient) pair is not bounced again. Providers that keep one copy per
// recipient, each naming every recipient, would otherwise deliver N copies to each.
//
// pending holds the dup keys recorded by earlier messages of the batch with the same
// Message-ID, not yet in the state.
func (p *Poller) deliver(ctx context.Context, state *State, f folder, j importJob, pending map[string]bool) delivery {
	start := time.Now()
	g, h, mid, recovered := j.g, j.h, j.mid, j.recovered
	l := p.log.With().Str("uid", g.m.Key).Logger()
	msg := importer.Message{
		ID: f.id(g.m), Name: f.label(g.m), Size: g.size, Arrived: g.m.Arrived, Recovered: recovered,
		Open: g.open, Header: h, Batch: j.batch, Lookup: j.lookup,
	}
	if msg.Arrived.IsZero() {
		msg.Arrived = arrivedFromHeader(h)
	}
	if mid != "" {
		env, filtered, all, err := p.filterDups(state, h, mid, j.print, pending)
		if err != nil {
			importer.LogResult(l, msg, importer.Result{MessageID: mid, Size: g.size}, kindRetry, fmt.Errorf("duplicate check: %w", err), start)
			return delivery{kind: kindRetry}
		}
		if all {
			l.Info().Str("file", msg.Name).Str("message_id", mid).Str("outcome", kindDuplicate).
				Int64("size", g.size).Str("action", p.serverAction(f)).
				Int64("duration_ms", time.Since(start).Milliseconds()).Msg("message")
			return delivery{kind: kindDuplicate, messageID: mid, print: j.print}
		}
		if filtered {
			msg.Envelope = &env
		}
	}

	res, err := p.im.Import(ctx, msg)
	if err != nil {
		importer.LogResult(l, msg, res, kindRetry, err, start)
		return delivery{kind: kindRetry}
	}
	var dsn []byte
	if len(res.Failed) > 0 && p.deps.Bouncer != nil {
		if dsn, err = p.deps.Bouncer.Bounce(ctx, p.name, msg, res); err != nil {
			importer.LogResult(l, msg, res, kindRetry, fmt.Errorf("bounce: %w", err), start)
			return delivery{kind: kindRetry}
		}
	}
	d := delivery{messageID: mid, print: j.print}
	if mid != "" {
		for _, dl := range res.Delivered {
			d.dups = append(d.dups, DupKey(mid, dl.Account))
		}
		for _, fl := range res.Failed {
			if n, ok := importer.NormalizeAddress(fl.Recipient); ok {
				d.dups = append(d.dups, DupKey(mid, "rcpt:"+n))
			}
		}
	}
	switch res.Outcome {
	case importer.OutcomeDelivered, importer.OutcomePartial:
		d.kind = kindDelivered
		importer.LogResult(l, msg, res, p.serverAction(f), nil, start)
	default:
		if err := p.quarantine(f, g, msg, res, dsn, recovered); err != nil {
			importer.LogResult(l, msg, res, kindRetry, fmt.Errorf("quarantine: %w", err), start)
			return delivery{kind: kindRetry}
		}
		d.kind = kindQuarantined
		importer.LogResult(l.With().Str("server", p.serverAction(f)).Logger(), msg, res, "quarantined", nil, start)
	}
	return d
}

// serverAction says what happens to a handled message's server copy now: "kept", or
// "deleted", or "delete_pending" where the deletion takes effect only when the
// session ends (POP3, RFC 1939 section 6), which logs it once the server confirmed it.
func (p *Poller) serverAction(f folder) string {
	switch {
	case p.keep != KeepDelete:
		return "kept"
	case isDeferredRemover(f):
		return "delete_pending"
	}
	return "deleted"
}

// filterDups removes from the message's envelope the recipients whose target (an
// account, or a failed recipient) already had this Message-ID, with the same content
// print, within the window. It
// returns the reduced envelope and whether anything was removed (filtered) or nothing
// is left to do (all).
func (p *Poller) filterDups(state *State, h *importer.Header, mid, content string, pending map[string]bool) (env importer.Envelope, filtered, all bool, err error) {
	since := p.now().Add(-p.cfg.DuplicateWindow.D())
	seen := func(target string) (bool, error) {
		k := DupKey(mid, target)
		if pending[pendingKey(k, content)] {
			return true, nil
		}
		return state.Seen(k, content, since)
	}
	env = importer.ExtractEnvelope(h, nil)
	if len(env.Recipients) == 0 {
		if p.deliverTo == "" {
			return env, false, false, nil
		}
		s, err := seen(p.deliverTo)
		return env, false, s, err
	}
	router := p.im.Router()
	var keep []string
	routed, dropped := 0, 0
	for _, rcpt := range env.Recipients {
		rt := router.Route(rcpt, env.Guessed)
		var target string
		switch {
		case rt.Account != "":
			target = rt.Account
		case !rt.Ignored:
			if n, ok := importer.NormalizeAddress(rcpt); ok {
				target = "rcpt:" + n
			}
		}
		if target != "" {
			s, err := seen(target)
			if err != nil {
				return env, false, false, err
			}
			if s {
				dropped++
				continue
			}
			routed++
		}
		keep = append(keep, rcpt)
	}
	switch {
	case dropped == 0:
		return env, false, false, nil
	case routed == 0:
		return env, true, true, nil
	}
	env.Recipients = keep
	return env, true, false, nil
}

// quarantine writes the message into state_dir/ImportFailed/<poller>/ with its reason,
// and the DSN beside it. A recovered message whose quarantine copy exists already is
// not written twice.
func (p *Poller) quarantine(f folder, g spooled, msg importer.Message, res importer.Result, dsn []byte, recovered bool) error {
	sum := sha256.Sum256([]byte(msg.ID))
	name := sanitize(f.label(g.m)) + "-" + hex.EncodeToString(sum[:4]) + ".eml"
	if recovered {
		if _, err := os.Lstat(filepath.Join(p.failedDir, name)); err == nil {
			return nil
		}
	}
	r, err := g.open()
	if err != nil {
		return err
	}
	defer r.Close()
	q, err := importer.QuarantineStream(p.failedDir, name, r, importer.NewRecord(p.name, msg.Name, res))
	if err != nil {
		return err
	}
	if dsn != nil {
		dn := filepath.Base(q) + ".dsn.eml"
		err := durable.WriteFile(p.failedDir, "."+dn+".tmp", p.failedDir, dn, 0o640, func(w io.Writer) error {
			_, err := w.Write(dsn)
			return err
		})
		if err != nil {
			p.log.Warn().Err(err).Str("file", msg.Name).Msg("could not keep a copy of the DSN beside the quarantined message")
		}
	}
	return nil
}

// sanitize makes a label usable as a file name.
func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.' && i > 0:
		default:
			b[i] = '_'
		}
	}
	if len(b) > 100 {
		b = b[:100]
	}
	return string(b)
}

// spoolHeader parses a spooled message's header block and returns it with its
// Message-ID; nil when it is not one (the importer then rejects the message with its
// reason).
func spoolHeader(g spooled) (*importer.Header, string) {
	r, err := g.open()
	if err != nil {
		return nil, ""
	}
	defer r.Close()
	// The importer reads through 64 KiB; a buffer that holds a smaller message whole
	// parses it the same way.
	size := 64 << 10
	if g.path == "" {
		size = min(size, max(len(g.data), 16))
	}
	h, err := importer.ReadHeader(bufio.NewReaderSize(r, size))
	if err != nil {
		return nil, ""
	}
	mid, _ := h.Get("message-id")
	return h, strings.TrimSpace(mid)
}

// arrivedFromHeader returns when the provider received a message that its protocol
// gives no date for (POP3): the date of the topmost Received field, else the Date
// field, else the Unix epoch. It depends on the message only, so the delivery file
// names derived from it come out the same on every fetch.
func arrivedFromHeader(h *importer.Header) time.Time {
	if h != nil {
		for _, f := range h.Fields {
			if f.Name != "received" {
				continue
			}
			if i := strings.LastIndexByte(f.Value, ';'); i >= 0 {
				if t, err := mail.ParseDate(strings.Join(strings.Fields(f.Value[i+1:]), " ")); err == nil {
					return t
				}
			}
			break
		}
		if v, ok := h.Get("date"); ok {
			if t, err := mail.ParseDate(strings.Join(strings.Fields(v), " ")); err == nil {
				return t
			}
		}
	}
	return time.Unix(0, 0)
}
