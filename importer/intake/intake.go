// Package intake is the one path a message takes once a source (a drop-folder
// connector, a poller, a replay) has found it: import, bounce the failed recipients,
// quarantine what was not delivered, acknowledge the source, log one event, count it.
// The order is the guarantee: the source is acknowledged only after every delivery and
// the DSN are durable, or the message is durably in quarantine; any transient error
// keeps the message at its source (Retry) to be handed over again later.
//
// Sources only find messages and acknowledge them (an Acker). They never import,
// bounce or quarantine themselves.
package intake

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxdrop/mxdrop/importer"
	"github.com/mxdrop/mxdrop/importer/quarantine"
)

// Outcome is what became of one message at its source: the one vocabulary of the
// sources, their counters and the metrics' per-source view.
type Outcome string

const (
	// Delivered: delivered to every (or some) account; failed recipients were bounced;
	// the source was acknowledged.
	Delivered Outcome = "delivered"
	// Quarantined: nothing was delivered; the message is in its source's quarantine
	// folder with its reason (and DSN copy); the source was acknowledged.
	Quarantined Outcome = "quarantined"
	// Duplicate: the source's duplicate filter found every target served already; the
	// source was acknowledged without an import.
	Duplicate Outcome = "duplicate"
	// Retry: transient trouble; the message stays at its source and is handed over
	// again later (as Recovered).
	Retry Outcome = "retry"
	// Skipped: the source did not hand the message over (claimed elsewhere, vanished).
	Skipped Outcome = "skipped"
)

// Kinds of source, the metrics' kind label.
const (
	KindConnector = "connector"
	KindPoller    = "poller"
)

// Bouncer turns a message's failed recipients into a DSN. Bounce must make the DSN
// durable (or decide to suppress it, returning a nil DSN) before it returns: the source
// is acknowledged right after. It returns the DSN it built, which is kept beside a
// quarantined message. An error means the source must keep the message and retry.
// *bounce.Bouncer implements it.
type Bouncer interface {
	Bounce(ctx context.Context, source string, msg importer.Message, res importer.Result) (dsn []byte, err error)
}

// Acker acknowledges a message at its source. Ack is called once, after what became of
// the message (out: Delivered, Quarantined or Duplicate) is durable: the drop file is
// removed or moved to Imported/, a poller marks the server copy for DELE/expunge, a
// replay removes the quarantined copy. It returns the log event's action word
// (removed, kept, deleted ...; "" when there is nothing to say, as for a drop file that
// quarantine moved away already). An error keeps the message at its source: Retry.
type Acker interface {
	Ack(ctx context.Context, out Outcome) (action string, err error)
}

// AckFunc adapts a function to an Acker.
type AckFunc func(ctx context.Context, out Outcome) (string, error)

// Ack calls f.
func (f AckFunc) Ack(ctx context.Context, out Outcome) (string, error) { return f(ctx, out) }

// Event is what Observe is told of one handled message.
type Event struct {
	Source   string // connector or poller name
	Kind     string // KindConnector or KindPoller
	Outcome  Outcome
	Result   importer.Result // what Import returned; zero for a Duplicate or an early Retry
	Duration time.Duration   // from the handover to the acknowledgement
}

// Intake is one source's processing setup. It is immutable and safe for concurrent
// use; a configuration reload builds new ones, and messages in flight finish with the
// one they started with.
type Intake struct {
	// Source names the source: the bounce source (whose smtp settings the DSNs use)
	// and the metrics' source label.
	Source string
	Kind   string
	// Importer imports the messages.
	Importer *importer.Importer
	// Bouncer sends DSNs for failed recipients; nil: they are only logged and
	// recorded in the quarantine reason.
	Bouncer Bouncer
	// Quarantine is where messages that were not delivered go.
	Quarantine quarantine.Folder
	// Log carries the source's fields (component, connector or poller).
	Log zerolog.Logger
	// Observe, when not nil, is called once per handled message: the metrics hook.
	Observe func(Event)
}

// Handover is one message a source hands over.
type Handover struct {
	Msg importer.Message
	// File, when not empty, is the message's own file, on the quarantine folder's file
	// system: quarantine moves it (keeping its inode and mtime). Otherwise quarantine
	// writes Msg.Open's bytes under QuarantineName, once: a Recovered message whose
	// quarantine copy exists already is not written again.
	File           string
	QuarantineName string
	// Ack acknowledges the message at its source.
	Ack Acker
	// Log, when not nil, replaces the Intake's logger for this message's event (a
	// poller adds the uid).
	Log *zerolog.Logger
	// Commit, when not nil, is called after the import and before the DSN and the
	// acknowledgement: it makes durable what the import left to Msg.Batch. An error
	// keeps the message at its source (Retry).
	Commit func() error
}

// Handle runs the intake of one message and returns what became of it with the
// import's result (for a source's own bookkeeping, e.g. a poller's duplicate keys).
// It logs the message's one event and calls Observe.
func (in *Intake) Handle(ctx context.Context, h Handover) (Outcome, importer.Result) {
	start := time.Now()
	res, err := in.Importer.Import(ctx, h.Msg)
	if err != nil {
		return in.Retry(h, res, err, start), res
	}
	if h.Commit != nil {
		if err := h.Commit(); err != nil {
			return in.Retry(h, res, fmt.Errorf("sync deliveries: %w", err), start), res
		}
	}
	var dsn []byte
	if len(res.Failed) > 0 && in.Bouncer != nil {
		// The DSN is durable before the source is acknowledged or the message leaves
		// for the quarantine: a crash in between imports the message again, and the
		// outbox recognises the DSN by the message identity.
		if dsn, err = in.Bouncer.Bounce(ctx, in.Source, h.Msg, res); err != nil {
			return in.Retry(h, res, fmt.Errorf("bounce: %w", err), start), res
		}
	}
	switch res.Outcome {
	case importer.OutcomeDelivered, importer.OutcomePartial:
		action, err := h.Ack.Ack(ctx, Delivered)
		if err != nil {
			return in.Retry(h, res, fmt.Errorf("acknowledge: %w", err), start), res
		}
		importer.LogResult(in.log(h), h.Msg, res, action, nil, start)
		in.observe(Delivered, res, start)
		return Delivered, res
	default:
		if err := in.quarantine(h, res, dsn); err != nil {
			return in.Retry(h, res, fmt.Errorf("quarantine: %w", err), start), res
		}
		action, err := h.Ack.Ack(ctx, Quarantined)
		if err != nil {
			return in.Retry(h, res, fmt.Errorf("acknowledge: %w", err), start), res
		}
		l := in.log(h)
		if action != "" {
			l = l.With().Str("server", action).Logger()
		}
		importer.LogResult(l, h.Msg, res, "quarantined", nil, start)
		in.observe(Quarantined, res, start)
		return Quarantined, res
	}
}

// Reject quarantines a message the source will not let the importer read (a claimed
// entry that is not a regular file) with res as its reason, acknowledges it, and logs
// and counts it as Handle would. h.File must be set: the entry is moved, never opened.
func (in *Intake) Reject(ctx context.Context, h Handover, res importer.Result) Outcome {
	start := time.Now()
	if err := in.quarantine(h, res, nil); err != nil {
		return in.Retry(h, res, fmt.Errorf("quarantine: %w", err), start)
	}
	if _, err := h.Ack.Ack(ctx, Quarantined); err != nil {
		return in.Retry(h, res, fmt.Errorf("acknowledge: %w", err), start)
	}
	importer.LogResult(in.log(h), h.Msg, res, "quarantined", nil, start)
	in.observe(Quarantined, res, start)
	return Quarantined
}

// Duplicate acknowledges a message that the source's duplicate filter found served
// already (every target had its Message-ID), and logs and counts it.
func (in *Intake) Duplicate(ctx context.Context, h Handover, messageID string) Outcome {
	start := time.Now()
	action, err := h.Ack.Ack(ctx, Duplicate)
	if err != nil {
		return in.Retry(h, importer.Result{MessageID: messageID, Size: h.Msg.Size}, fmt.Errorf("acknowledge: %w", err), start)
	}
	l := in.log(h)
	l.Info().Str("file", h.Msg.Name).Str("message_id", messageID).Str("outcome", string(Duplicate)).
		Int64("size", h.Msg.Size).Str("action", action).
		Int64("duration_ms", time.Since(start).Milliseconds()).Msg("message")
	in.observe(Duplicate, importer.Result{}, start)
	return Duplicate
}

// Retry logs the one event of a message that meets transient trouble (err) before or
// during its intake, counts it, and returns Retry: the source keeps the message.
func (in *Intake) Retry(h Handover, res importer.Result, err error, start time.Time) Outcome {
	importer.LogResult(in.log(h), h.Msg, res, string(Retry), err, start)
	in.observe(Retry, res, start)
	return Retry
}

// quarantine puts the message into the quarantine folder with its reason, and the DSN
// copy beside it.
func (in *Intake) quarantine(h Handover, res importer.Result, dsn []byte) error {
	rec := quarantine.NewRecord(in.Source, h.Msg.Name, res)
	rec.ID, rec.Arrived = h.Msg.ID, h.Msg.Arrived
	var q string
	if h.File != "" {
		p, err := in.Quarantine.Move(h.File, h.Msg.Name, rec)
		if err != nil {
			return err
		}
		q = p
	} else {
		if h.Msg.Recovered && in.Quarantine.Has(h.QuarantineName) {
			return nil
		}
		r, err := h.Msg.Open()
		if err != nil {
			return err
		}
		defer r.Close()
		if q, err = in.Quarantine.Write(h.QuarantineName, r, rec); err != nil {
			return err
		}
	}
	if dsn != nil {
		if _, err := in.Quarantine.WriteDSN(filepath.Base(q), dsn); err != nil {
			l := in.log(h)
			l.Warn().Err(err).Str("file", h.Msg.Name).Msg("could not keep a copy of the DSN beside the quarantined message")
		}
	}
	return nil
}

func (in *Intake) log(h Handover) zerolog.Logger {
	if h.Log != nil {
		return *h.Log
	}
	return in.Log
}

func (in *Intake) observe(out Outcome, res importer.Result, start time.Time) {
	if in.Observe != nil {
		in.Observe(Event{Source: in.Source, Kind: in.Kind, Outcome: out, Result: res, Duration: time.Since(start)})
	}
}

// Replay hands a message of the intake's own quarantine folder over again, under the
// identity recorded when it was quarantined (so its delivery names and its DSN's outbox
// entry are those of the first attempt, and a recipient is not bounced twice) and as
// Recovered (so a replay interrupted after a delivery does not deliver twice). A
// delivered message leaves the quarantine with its reason and DSN copy; one that fails
// again stays where it is with its new reason. No server is involved.
func (in *Intake) Replay(ctx context.Context, e quarantine.Entry) Outcome {
	msg := importer.Message{
		ID: e.Name, Name: e.Name, Size: -1, Arrived: e.ModTime, Recovered: true,
		Open: func() (io.ReadCloser, error) { return os.Open(e.Path) },
	}
	if fi, err := os.Lstat(e.Path); err == nil {
		msg.Size = fi.Size()
	}
	if r := e.Record; r != nil {
		if r.ID != "" {
			msg.ID, msg.Arrived = r.ID, r.Arrived
		}
		if r.File != "" {
			msg.Name = r.File
		}
	}
	h := Handover{Msg: msg, File: e.Path, Ack: AckFunc(func(_ context.Context, out Outcome) (string, error) {
		if out == Quarantined {
			return "", nil // stays, with its new reason
		}
		return "removed", in.Quarantine.Remove(e.Name)
	})}
	out, _ := in.Handle(ctx, h)
	return out
}
