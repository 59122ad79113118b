package intake

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer"
	"github.com/mxdrop/mxdrop/importer/quarantine"
)

// steps records the order of what the intake does at its edges.
type steps struct {
	mu  sync.Mutex
	log []string
}

func (s *steps) add(step string) {
	s.mu.Lock()
	s.log = append(s.log, step)
	s.mu.Unlock()
}

func (s *steps) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.log)
}

type fakeBouncer struct {
	s   *steps
	err error
	ids []string
}

func (b *fakeBouncer) Bounce(_ context.Context, source string, msg importer.Message, res importer.Result) ([]byte, error) {
	b.s.add("bounce")
	b.ids = append(b.ids, msg.ID)
	if b.err != nil {
		return nil, b.err
	}
	return []byte("DSN for " + msg.ID), nil
}

type fixture struct {
	dir    string
	in     *Intake
	s      *steps
	b      *fakeBouncer
	events []Event
	logs   *bytes.Buffer
}

func newFixture(t *testing.T, accounts ...string) *fixture {
	t.Helper()
	dir := t.TempDir()
	var accs []configs.Account
	for _, a := range accounts {
		accs = append(accs, configs.Account{Address: a, Maildir: filepath.Join(dir, "mail", a)})
	}
	im, err := importer.New(importer.Options{Accounts: accs, Domains: []string{"example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{dir: dir, s: &steps{}, logs: &bytes.Buffer{}}
	f.b = &fakeBouncer{s: f.s}
	f.in = &Intake{
		Source: "src", Kind: KindPoller, Importer: im, Bouncer: f.b,
		Quarantine: quarantine.Folder(filepath.Join(dir, "ImportFailed", "src")),
		Log:        zerolog.New(f.logs),
		Observe:    func(ev Event) { f.events = append(f.events, ev) },
	}
	return f
}

func (f *fixture) handover(id string, raw string) Handover {
	return Handover{
		Msg: importer.Message{
			ID: id, Name: "uid-" + id, Size: int64(len(raw)), Arrived: time.Unix(1772596800, 0),
			Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(raw)), nil },
		},
		QuarantineName: "uid-" + id + ".eml",
		Ack: AckFunc(func(_ context.Context, out Outcome) (string, error) {
			f.s.add("ack " + string(out))
			return "deleted", nil
		}),
	}
}

func mail(id string, rcpts ...string) string {
	return "Return-Path: <sender@remote.test>\nEnvelope-to: " + strings.Join(rcpts, ", ") +
		"\nFrom: sender@remote.test\nSubject: x\nMessage-ID: <" + id + ">\n\nbody\n"
}

func (f *fixture) messageEvents(t *testing.T) int {
	t.Helper()
	return strings.Count(f.logs.String(), `"message":"message"`)
}

// A partly delivered message: deliveries, then the DSN, then the acknowledgement; one
// log event, one observation.
func TestHandleDeliveredOrder(t *testing.T) {
	f := newFixture(t, "alice@example.com")
	out, res := f.in.Handle(context.Background(), f.handover("1", mail("1@test", "alice@example.com", "nobody@example.com")))
	if out != Delivered || res.Outcome != importer.OutcomePartial {
		t.Fatalf("outcome %s, result %s", out, res.Outcome)
	}
	if got := f.s.list(); !slices.Equal(got, []string{"bounce", "ack delivered"}) {
		t.Errorf("steps %v", got)
	}
	if n := f.messageEvents(t); n != 1 || !strings.Contains(f.logs.String(), `"action":"deleted"`) {
		t.Errorf("%d message events:\n%s", n, f.logs)
	}
	if len(f.events) != 1 || f.events[0].Outcome != Delivered || f.events[0].Kind != KindPoller || len(f.events[0].Result.Delivered) != 1 {
		t.Errorf("observed %+v", f.events)
	}
	if f.in.Quarantine.Count() != 0 {
		t.Error("a delivered message was quarantined")
	}
}

// Transient trouble at any step keeps the message at its source: no acknowledgement,
// nothing in quarantine, one retry event.
func TestHandleRetry(t *testing.T) {
	for _, tc := range []struct {
		name   string
		bounce error
		ack    error
		rcpts  []string
	}{
		{"bounce fails", errors.New("disk full"), nil, []string{"nobody@example.com"}},
		{"ack fails", nil, errors.New("connection lost"), []string{"alice@example.com"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, "alice@example.com")
			f.b.err = tc.bounce
			h := f.handover("1", mail("1@test", tc.rcpts...))
			acked := false
			h.Ack = AckFunc(func(context.Context, Outcome) (string, error) { acked = true; return "deleted", tc.ack })
			out, _ := f.in.Handle(context.Background(), h)
			if out != Retry {
				t.Fatalf("outcome %s", out)
			}
			if acked && tc.ack == nil {
				t.Error("acknowledged after a failed bounce")
			}
			if f.in.Quarantine.Count() != 0 {
				t.Error("quarantined after a failed bounce")
			}
			if len(f.events) != 1 || f.events[0].Outcome != Retry || !strings.Contains(f.logs.String(), `"outcome":"retry"`) {
				t.Errorf("observed %+v, log:\n%s", f.events, f.logs)
			}
		})
	}
}

// A message without a file is written into quarantine with its identity, reason and DSN
// copy, before its source is acknowledged; a recovered one is not written twice.
func TestHandleQuarantineStream(t *testing.T) {
	f := newFixture(t, "alice@example.com")
	h := f.handover("7", mail("7@test", "nobody@example.com"))
	out, _ := f.in.Handle(context.Background(), h)
	if out != Quarantined {
		t.Fatalf("outcome %s", out)
	}
	if got := f.s.list(); !slices.Equal(got, []string{"bounce", "ack quarantined"}) {
		t.Errorf("steps %v", got)
	}
	l, err := f.in.Quarantine.List()
	if err != nil || len(l) != 1 {
		t.Fatalf("List = %v, %v", l, err)
	}
	e := l[0]
	if e.Name != "uid-7.eml" || !e.DSN || e.Record == nil || e.Record.ID != "7" || !e.Record.Arrived.Equal(h.Msg.Arrived) ||
		e.Record.File != "uid-7" || e.Record.Reason != "no_deliverable_recipient" {
		t.Errorf("entry %+v record %+v", e, e.Record)
	}
	if b, _ := os.ReadFile(e.Path + ".dsn.eml"); string(b) != "DSN for 7" {
		t.Errorf("DSN copy %q", b)
	}
	if !strings.Contains(f.logs.String(), `"action":"quarantined"`) || !strings.Contains(f.logs.String(), `"server":"deleted"`) {
		t.Errorf("log:\n%s", f.logs)
	}
	h.Msg.Recovered = true
	if out, _ := f.in.Handle(context.Background(), h); out != Quarantined || f.in.Quarantine.Count() != 1 {
		t.Errorf("recovered: %s, %d quarantined", out, f.in.Quarantine.Count())
	}
}

// Replay hands a quarantined message over under its first identity: delivered, it
// leaves the quarantine; failing again, it stays with its new reason.
func TestReplay(t *testing.T) {
	f := newFixture(t, "alice@example.com")
	if out, _ := f.in.Handle(context.Background(), f.handover("9", mail("9@test", "dave@example.com", "nobody@example.com"))); out != Quarantined {
		t.Fatalf("outcome %s", out)
	}
	l, _ := f.in.Quarantine.List()
	if out := f.in.Replay(context.Background(), l[0]); out != Quarantined || f.in.Quarantine.Count() != 1 {
		t.Fatalf("replay before the fix: %s, %d quarantined", out, f.in.Quarantine.Count())
	}
	// dave is added.
	fixed := newFixture(t, "alice@example.com", "dave@example.com")
	fixed.in.Quarantine, fixed.b = f.in.Quarantine, f.b
	fixed.in.Bouncer = f.b
	l, _ = fixed.in.Quarantine.List()
	if out := fixed.in.Replay(context.Background(), l[0]); out != Delivered {
		t.Fatalf("replay after the fix: %s\n%s", out, fixed.logs)
	}
	if n := fixed.in.Quarantine.Count(); n != 0 {
		t.Errorf("%d still quarantined", n)
	}
	if es, _ := os.ReadDir(fixed.in.Quarantine.Path()); len(es) != 0 {
		t.Errorf("left %d files", len(es))
	}
	if !slices.Equal(f.b.ids, []string{"9", "9", "9"}) {
		t.Errorf("bounced under identities %v, want the first one each time", f.b.ids)
	}
	md, _ := os.ReadDir(filepath.Join(fixed.dir, "mail", "dave@example.com", "new"))
	if len(md) != 1 {
		t.Errorf("dave holds %d messages", len(md))
	}
}
