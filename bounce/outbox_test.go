package bounce

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxdrop/mxdrop/configs"
)

type outboxFixture struct {
	dir   string
	clock *clock
	log   *logBuffer
}

func newOutboxFixture(t *testing.T) *outboxFixture {
	return &outboxFixture{dir: filepath.Join(t.TempDir(), "outbox"), clock: newClock(t0), log: &logBuffer{}}
}

// open opens the fixture's outbox with sender as the default relay.
func (f *outboxFixture) open(t *testing.T, sender Sender, edit func(*OutboxOptions)) *Outbox {
	t.Helper()
	opts := OutboxOptions{Dir: f.dir, Senders: map[string]Sender{"": sender}, Now: f.clock.Now, Log: f.log.logger()}
	if edit != nil {
		edit(&opts)
	}
	o, err := OpenOutbox(opts)
	if err != nil {
		t.Fatalf("open outbox: %v", err)
	}
	t.Cleanup(func() { o.Close() })
	return o
}

// files lists the files of a state folder.
func (f *outboxFixture) files(t *testing.T, state string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(f.dir, state))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

func (f *outboxFixture) record(t *testing.T, state, id string) Record {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.dir, state, outboxKey(id)+".json"))
	if err != nil {
		t.Fatalf("record: %v", err)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func item(t *testing.T, id string) Item {
	d, err := Build(Report{ID: id, Sender: "alice@sender.example", MessageID: "<" + id + "@sender.example>",
		Recipients: []Recipient{{Address: "nobody@example.com", Status: "5.1.1"}}},
		Options{ReportingMTA: "mx.example.com", Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	return Item{ID: id, MessageID: "<" + id + "@sender.example>", DSN: d}
}

func TestOutboxEnqueueIdempotent(t *testing.T) {
	f := newOutboxFixture(t)
	s := &fakeSender{}
	o := f.open(t, s, nil)
	it := item(t, "msg-1")
	for i, want := range []bool{true, false} {
		queued, err := o.Enqueue(it)
		if err != nil || queued != want {
			t.Fatalf("enqueue %d = %v, %v; want %v", i+1, queued, err, want)
		}
	}
	k := outboxKey("msg-1")
	if got := f.files(t, StateQueued); strings.Join(got, " ") != k+".eml "+k+".json" {
		t.Fatalf("queue holds %v", got)
	}
	data, _ := os.ReadFile(filepath.Join(f.dir, StateQueued, k+".eml"))
	if string(data) != string(it.DSN.Data) {
		t.Error("queued file is not the DSN")
	}
	r := f.record(t, StateQueued, "msg-1")
	if r.Sender != "alice@sender.example" || r.Source != "msg-1" || !r.Queued.Equal(t0) || !r.NextAttempt.Equal(t0) ||
		r.Attempts != 0 || r.DSNMessageID != it.DSN.MessageID || len(r.Failed) != 1 {
		t.Errorf("record %+v", r)
	}
	if st, ok := o.State("msg-1"); !ok || st != StateQueued {
		t.Errorf("State = %s, %v", st, ok)
	}
	if n := len(f.log.events(t, "queued")); n != 1 {
		t.Errorf("%d queued events", n)
	}
	if n := len(f.log.events(t, "duplicate")); n != 1 {
		t.Errorf("%d duplicate events", n)
	}

	o.ProcessDue(context.Background())
	if _, n := s.counts(); n != 1 {
		t.Fatalf("%d DSNs sent, want 1", n)
	}
	// The message imported again after its DSN went out: still nothing new.
	if queued, err := o.Enqueue(it); queued || err != nil {
		t.Errorf("enqueue after sending = %v, %v", queued, err)
	}
	o.ProcessDue(context.Background())
	if calls, n := s.counts(); n != 1 || calls != 1 {
		t.Errorf("%d calls, %d sent, want 1", calls, n)
	}
}

func TestOutboxRetryThenSuccess(t *testing.T) {
	f := newOutboxFixture(t)
	s := &fakeSender{script: []error{errTemp}}
	o := f.open(t, s, nil)
	o.Enqueue(item(t, "msg-1"))
	ctx := context.Background()

	next := o.ProcessDue(ctx)
	if !next.Equal(t0.Add(time.Minute)) {
		t.Errorf("next attempt %v, want %v", next, t0.Add(time.Minute))
	}
	r := f.record(t, StateQueued, "msg-1")
	if r.Attempts != 1 || !r.NextAttempt.Equal(t0.Add(time.Minute)) || !strings.Contains(r.LastError, "451") {
		t.Errorf("record after a 4xx: %+v", r)
	}
	ev := f.log.events(t, "retry")
	if len(ev) != 1 || ev[0]["next_attempt"] == nil || ev[0]["attempts"] != 1.0 || ev[0]["sender"] != "alice@sender.example" {
		t.Errorf("retry events %v", ev)
	}

	f.clock.Advance(30 * time.Second)
	o.ProcessDue(ctx)
	if calls, _ := s.counts(); calls != 1 {
		t.Errorf("attempt before the backoff ended (%d calls)", calls)
	}
	f.clock.Advance(30 * time.Second)
	if next := o.ProcessDue(ctx); !next.IsZero() {
		t.Errorf("next attempt %v with an empty queue", next)
	}
	o.ProcessDue(ctx)
	if calls, n := s.counts(); calls != 2 || n != 1 {
		t.Errorf("%d calls, %d sent; want 2 and 1", calls, n)
	}
	k := outboxKey("msg-1")
	if got := f.files(t, StateQueued); len(got) != 0 {
		t.Errorf("queue still holds %v", got)
	}
	if got := f.files(t, StateSent); strings.Join(got, " ") != k+".eml "+k+".json" {
		t.Errorf("sent holds %v", got)
	}
	if r := f.record(t, StateSent, "msg-1"); r.Attempts != 2 || !r.Sent.Equal(t0.Add(time.Minute)) {
		t.Errorf("sent record %+v", r)
	}
	if ev := f.log.events(t, "sent"); len(ev) != 1 || ev[0]["attempts"] != 2.0 {
		t.Errorf("sent events %v", ev)
	}
}

func TestOutboxBackoff(t *testing.T) {
	o := &Outbox{opts: OutboxOptions{MinBackoff: time.Minute, MaxBackoff: time.Hour}}
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60}
	for i, w := range want {
		if got := o.backoff(i + 1); got != w*time.Minute {
			t.Errorf("backoff after attempt %d = %v, want %v", i+1, got, w*time.Minute)
		}
	}
	if got := o.backoff(1000); got != time.Hour {
		t.Errorf("backoff after many attempts = %v", got)
	}
}

func TestOutboxUnreachableRelay(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	relay := newRelay(t, configs.SMTP{Host: "127.0.0.1", Port: port, Timeout: configs.Duration(time.Second)}, RelayOptions{})

	f := newOutboxFixture(t)
	o := f.open(t, relay, nil)
	o.Enqueue(item(t, "msg-1"))
	k := outboxKey("msg-1")
	for i, wait := range []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute} {
		next := o.ProcessDue(context.Background())
		now := f.clock.Now()
		if !next.Equal(now.Add(wait)) {
			t.Errorf("attempt %d: next %v, want now+%v", i+1, next, wait)
		}
		r := f.record(t, StateQueued, "msg-1")
		if r.Attempts != i+1 || !strings.Contains(r.LastError, "connect") {
			t.Errorf("attempt %d: record %+v", i+1, r)
		}
		if got := f.files(t, StateQueued); strings.Join(got, " ") != k+".eml "+k+".json" {
			t.Fatalf("attempt %d: queue holds %v", i+1, got)
		}
		f.clock.Set(next)
	}
}

func TestOutboxRestart(t *testing.T) {
	f := newOutboxFixture(t)
	down := &fakeSender{always: errNet}
	o := f.open(t, down, nil)
	o.Enqueue(item(t, "msg-1"))
	o.Enqueue(item(t, "msg-2"))
	o.ProcessDue(context.Background())
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}

	// A new process over the same folder continues where the old one stopped.
	up := &fakeSender{}
	o = f.open(t, up, nil)
	if queued, _ := o.Enqueue(item(t, "msg-1")); queued {
		t.Error("a queued DSN was queued again after the restart")
	}
	o.ProcessDue(context.Background())
	if _, n := up.counts(); n != 0 {
		t.Fatalf("sent %d before the backoff ended", n)
	}
	f.clock.Advance(time.Minute)
	o.ProcessDue(context.Background())
	if _, n := up.counts(); n != 2 {
		t.Fatalf("sent %d DSNs after the restart, want 2", n)
	}
	o.Close()

	o = f.open(t, up, nil)
	f.clock.Advance(time.Hour)
	o.ProcessDue(context.Background())
	if queued, _ := o.Enqueue(item(t, "msg-2")); queued {
		t.Error("a sent DSN was queued again")
	}
	o.ProcessDue(context.Background())
	if calls, n := up.counts(); calls != 2 || n != 2 {
		t.Errorf("%d calls and %d sent in all, want 2", calls, n)
	}
}

func TestOutboxGiveUp(t *testing.T) {
	f := newOutboxFixture(t)
	s := &fakeSender{always: errTemp}
	o := f.open(t, s, func(o *OutboxOptions) { o.RetryFor = 3 * time.Hour })
	o.Enqueue(item(t, "msg-1"))
	var attempts []time.Duration
	for i := 0; i < 100; i++ {
		next := o.ProcessDue(context.Background())
		attempts = append(attempts, f.clock.Now().Sub(t0))
		if next.IsZero() {
			break
		}
		f.clock.Set(next)
	}
	// 0, 1m, 3m, 7m, 15m, 31m, 63m, 123m (backoff capped at 1h), and a last one when
	// retry_for ends at 3h.
	last := attempts[len(attempts)-1]
	if last != 3*time.Hour {
		t.Errorf("last attempt at +%v, want +3h (attempts %v)", last, attempts)
	}
	if len(attempts) != 9 {
		t.Errorf("%d attempts: %v", len(attempts), attempts)
	}
	k := outboxKey("msg-1")
	if got := f.files(t, StateFailed); strings.Join(got, " ") != k+".eml "+k+".json" {
		t.Fatalf("failed holds %v; the DSN must be kept", got)
	}
	if got := f.files(t, StateQueued); len(got) != 0 {
		t.Errorf("queue still holds %v", got)
	}
	r := f.record(t, StateFailed, "msg-1")
	if !strings.Contains(r.Reason, "retry_for") || r.Attempts != 9 || r.GaveUp.IsZero() {
		t.Errorf("failed record %+v", r)
	}
	ev := f.log.events(t, "given_up")
	if len(ev) != 1 || ev[0]["level"] != "error" || !strings.Contains(ev[0]["reason"].(string), "retry_for") {
		t.Errorf("given_up events %v", ev)
	}
	// A given-up DSN stays given up, and is not queued again.
	o.Close()
	o = f.open(t, s, nil)
	if queued, _ := o.Enqueue(item(t, "msg-1")); queued {
		t.Error("a given-up DSN was queued again")
	}
	if st, _ := o.State("msg-1"); st != StateFailed {
		t.Errorf("state %s", st)
	}
}

func TestOutboxPermanentFailure(t *testing.T) {
	f := newOutboxFixture(t)
	s := &fakeSender{script: []error{errPerm}}
	o := f.open(t, s, nil)
	o.Enqueue(item(t, "msg-1"))
	if next := o.ProcessDue(context.Background()); !next.IsZero() {
		t.Errorf("a refused DSN is retried at %v", next)
	}
	r := f.record(t, StateFailed, "msg-1")
	if !strings.Contains(r.Reason, "550") || r.Attempts != 1 {
		t.Errorf("failed record %+v", r)
	}
}

func TestOutboxMissingRelay(t *testing.T) {
	f := newOutboxFixture(t)
	conn := &fakeSender{}
	o := f.open(t, nil, func(o *OutboxOptions) { o.Senders = map[string]Sender{"mx2": conn} })
	a, b := item(t, "msg-1"), item(t, "msg-2")
	b.Relay = "mx2"
	o.Enqueue(a)
	o.Enqueue(b)
	o.ProcessDue(context.Background())
	if _, n := conn.counts(); n != 1 {
		t.Errorf("connector relay sent %d", n)
	}
	if r := f.record(t, StateQueued, "msg-1"); r.Attempts != 1 || !strings.Contains(r.LastError, "no relay") {
		t.Errorf("DSN without a relay: %+v", r)
	}
}

func TestOutboxRecovery(t *testing.T) {
	f := newOutboxFixture(t)
	s := &fakeSender{}
	o := f.open(t, s, nil)
	o.Enqueue(item(t, "sent-then-crash"))
	o.ProcessDue(context.Background())
	o.Enqueue(item(t, "queued"))
	o.Close()

	k := outboxKey("sent-then-crash")
	q := filepath.Join(f.dir, StateQueued)
	// A crash right after the sent record was written: the queue files are back.
	data, _ := os.ReadFile(filepath.Join(f.dir, StateSent, k+".eml"))
	os.Rename(filepath.Join(f.dir, StateSent, k+".eml"), filepath.Join(q, k+".eml"))
	os.WriteFile(filepath.Join(q, k+".json"), []byte(`{"sender":"alice@sender.example"}`), 0o640)
	// A crash inside Enqueue: the DSN without its record.
	orphan := outboxKey("interrupted")
	os.WriteFile(filepath.Join(q, orphan+".eml"), data, 0o640)
	// A leftover temporary file.
	os.WriteFile(filepath.Join(f.dir, "tmp", "x.json"), nil, 0o640)
	// A damaged record: it and its DSN stay for an administrator.
	broken := outboxKey("broken")
	os.WriteFile(filepath.Join(q, broken+".json"), []byte("{not json"), 0o640)
	os.WriteFile(filepath.Join(q, broken+".eml"), data, 0o640)

	o = f.open(t, s, nil)
	o.ProcessDue(context.Background())
	if _, n := s.counts(); n != 2 {
		t.Errorf("sent %d in all, want 2 (no resend of the sent one)", n)
	}
	if got := f.files(t, StateSent); len(got) != 4 {
		t.Errorf("sent holds %v", got)
	}
	if got := f.files(t, StateQueued); strings.Join(got, " ") != broken+".eml "+broken+".json" {
		t.Errorf("queue holds %v, want only the damaged entry", got)
	}
	if ev := f.log.events(t, ""); !strings.Contains(f.log.String(), "unreadable") || len(ev) == 0 {
		t.Error("damaged record not logged")
	}
	if got := f.files(t, "tmp"); len(got) != 0 {
		t.Errorf("tmp holds %v", got)
	}
	if _, ok := o.State("interrupted"); ok {
		t.Error("an interrupted enqueue counts as queued")
	}
}

func TestOutboxLocked(t *testing.T) {
	f := newOutboxFixture(t)
	f.open(t, &fakeSender{}, nil)
	_, err := OpenOutbox(OutboxOptions{Dir: f.dir})
	if !errors.Is(err, ErrOutboxLocked) {
		t.Errorf("second open = %v, want ErrOutboxLocked", err)
	}
}

func TestOutboxPrune(t *testing.T) {
	f := newOutboxFixture(t)
	s := &fakeSender{}
	o := f.open(t, s, func(o *OutboxOptions) { o.SentRetention = 24 * time.Hour })
	o.Enqueue(item(t, "msg-1"))
	o.ProcessDue(context.Background())
	f.clock.Advance(23 * time.Hour)
	o.ProcessDue(context.Background())
	if len(f.files(t, StateSent)) != 2 {
		t.Fatal("sent record pruned too early")
	}
	f.clock.Advance(2 * time.Hour)
	o.ProcessDue(context.Background())
	if got := f.files(t, StateSent); len(got) != 0 {
		t.Errorf("sent holds %v after the retention", got)
	}
	if _, ok := o.State("msg-1"); ok {
		t.Error("pruned record still known")
	}
}

// TestOutboxRunSMTP runs the outbox against the recording server: a 4xx first, then
// acceptance; the DSN arrives exactly once.
func TestOutboxRunSMTP(t *testing.T) {
	cert, _ := testCert(t)
	rs := startServer(t, plainServer, cert, nil)
	rs.reply(StageRcpt, &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "greylisted"})
	relay := newRelay(t, rs.relayConfig(), RelayOptions{})

	f := newOutboxFixture(t)
	o := f.open(t, relay, func(o *OutboxOptions) {
		o.Now = nil
		o.MinBackoff = 20 * time.Millisecond
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx) }()

	it := item(t, "msg-1")
	if queued, err := o.Enqueue(it); !queued || err != nil {
		t.Fatalf("enqueue = %v, %v", queued, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if st, _ := o.State("msg-1"); st == StateSent {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("DSN not sent within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // room for a wrong second delivery
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
	checkDelivered(t, rs, it.DSN, false)
	if ev := f.log.events(t, "retry"); len(ev) != 1 {
		t.Errorf("%d retry events", len(ev))
	}
}
