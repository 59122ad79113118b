package pollers

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/mail"
	"strings"
	"time"

	"github.com/mxdrop/mxdrop/importer"
	"github.com/mxdrop/mxdrop/importer/durable"
	"github.com/mxdrop/mxdrop/importer/intake"
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
	kind      intake.Outcome
	messageID string
	dups      []string // dup keys to record
	print     string   // the message's contentPrint, recorded with dups
}

// pendingKey is the key of importBatch's pending map: a dup key and a content print.
func pendingKey(dupKey, content string) string { return dupKey + "\x00" + content }

// deliver hands one spooled message to the poller's intake, which imports it, bounces
// failed recipients, quarantines what cannot be delivered and logs the message's one
// event. Its acknowledgement only names what happens to the server copy: the batch
// marks the message done in the state once the batch's Maildir folders are fsynced,
// and deletes it from the server after that. Duplicate suppression comes first: a
// (Message-ID, account) pair delivered within duplicate_window is not delivered again,
// and a (Message-ID, failed recipient) pair is not bounced again. Providers that keep
// one copy per recipient, each naming every recipient, would otherwise deliver N
// copies to each.
//
// pending holds the dup keys recorded by earlier messages of the batch with the same
// Message-ID, not yet in the state.
func (p *Poller) deliver(ctx context.Context, state *State, f folder, j importJob, pending map[string]bool) delivery {
	start := time.Now()
	g, mid := j.g, j.mid
	l := p.log.With().Str("uid", g.m.Key).Logger()
	h := intake.Handover{
		Msg: importer.Message{
			ID: f.id(g.m), Name: f.label(g.m), Size: g.size, Arrived: g.m.Arrived, Recovered: j.recovered,
			Open: g.open, Header: j.h, Batch: j.batch, Lookup: j.lookup,
		},
		Log: &l,
		Ack: intake.AckFunc(func(context.Context, intake.Outcome) (string, error) { return p.serverAction(f), nil }),
	}
	if h.Msg.Arrived.IsZero() {
		h.Msg.Arrived = arrivedFromHeader(j.h)
	}
	sum := sha256.Sum256([]byte(h.Msg.ID))
	h.QuarantineName = sanitize(h.Msg.Name) + "-" + hex.EncodeToString(sum[:4]) + ".eml"
	if mid != "" {
		env, filtered, all, err := p.filterDups(state, j.h, mid, j.print, pending)
		if err != nil {
			return delivery{kind: p.in.Retry(h, importer.Result{MessageID: mid, Size: g.size}, fmt.Errorf("duplicate check: %w", err), start)}
		}
		if all {
			return delivery{kind: p.in.Duplicate(ctx, h, mid), messageID: mid, print: j.print}
		}
		if filtered {
			h.Msg.Envelope = &env
		}
	}
	out, res := p.in.Handle(ctx, h)
	if out == intake.Retry {
		return delivery{kind: out}
	}
	d := delivery{kind: out, messageID: mid, print: j.print}
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
