package bounce

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer"
	"github.com/mxdrop/mxdrop/importer/quarantine"
	"github.com/mxdrop/mxdrop/internal/testenv"
)

// The watcher's consumer interface (watcher.Bouncer), restated so a change of either
// side shows here.
var _ interface {
	Bounce(ctx context.Context, source string, msg importer.Message, res importer.Result) ([]byte, error)
} = (*Bouncer)(nil)

const plainHeader = "From: alice@sender.example\nSubject: hi\nMessage-ID: <m@sender.example>\n\n"

func newBouncer(t *testing.T, f *outboxFixture, s Sender, edit func(*Config)) *Bouncer {
	t.Helper()
	cfg := Config{
		Outbox:  f.open(t, s, nil),
		Default: Source{ReportingMTA: "mx.example.com"},
		Log:     f.log.logger(),
		Now:     f.clock.Now,
	}
	if edit != nil {
		edit(&cfg)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatalf("new bouncer: %v", err)
	}
	return b
}

func TestProcessQueuesOnce(t *testing.T) {
	f := newOutboxFixture(t)
	s := &fakeSender{}
	b := newBouncer(t, f, s, nil)
	msg, res := fixture(t)
	ctx := context.Background()

	out, err := b.Process(ctx, "mx", msg, res)
	if err != nil || out.Action != ActionQueued || out.DSN == nil {
		t.Fatalf("Process = %+v, %v", out, err)
	}
	// A crash before the source was acknowledged: the same message again.
	msg.Recovered = true
	out2, err := b.Process(ctx, "mx", msg, res)
	if err != nil || out2.Action != ActionDuplicate || out2.DSN.MessageID != out.DSN.MessageID {
		t.Fatalf("second Process = %+v, %v", out2, err)
	}
	data, err := b.Bounce(ctx, "mx", msg, res)
	if err != nil || len(data) == 0 {
		t.Fatalf("Bounce = %d bytes, %v", len(data), err)
	}
	b.Outbox().ProcessDue(ctx)
	if calls, n := s.counts(); calls != 1 || n != 1 || s.accepted[0].rcpt != "alice@sender.example" {
		t.Errorf("%d calls, %d sent, want one DSN to the sender", calls, n)
	}
	ev := f.log.events(t, "queued")
	if len(ev) != 1 {
		t.Fatalf("%d queued events", len(ev))
	}
	for k, want := range map[string]any{
		"component": "bounce", "message_id": "<20260304045958.123@sender.example>",
		"sender": "alice@sender.example", "outcome": "queued",
	} {
		if ev[0][k] != want {
			t.Errorf("queued event %s = %v, want %v", k, ev[0][k], want)
		}
	}
	if failed, _ := ev[0]["failed"].([]any); len(failed) != 2 {
		t.Errorf("queued event failed = %v", ev[0]["failed"])
	}
	if ev := f.log.events(t, "sent"); len(ev) != 1 || ev[0]["component"] != "bounce" {
		t.Errorf("sent events %v", ev)
	}
}

func TestProcessSuppressed(t *testing.T) {
	f := newOutboxFixture(t)
	b := newBouncer(t, f, &fakeSender{}, nil)
	for _, tc := range []struct {
		name, sender, header, rule string
	}{
		{"null sender", "", plainHeader, RuleNullSender},
		{"auto-submitted", "alice@sender.example", "Auto-Submitted: auto-generated\n" + plainHeader, RuleAutoSubmitted},
		{"report", "alice@sender.example", "Content-Type: multipart/report; report-type=delivery-status; boundary=x\n\n", RuleDeliveryReport},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg, res := testMessage(t, tc.name, tc.sender, tc.header)
			out, err := b.Process(context.Background(), "mx", msg, res)
			if err != nil || out.Action != ActionSuppressed || out.Rule != tc.rule || out.DSN != nil {
				t.Fatalf("Process = %+v, %v", out, err)
			}
			if data, err := b.Bounce(context.Background(), "mx", msg, res); data != nil || err != nil {
				t.Errorf("Bounce = %q, %v", data, err)
			}
		})
	}
	if got := f.files(t, StateQueued); len(got) != 0 {
		t.Errorf("suppressed DSNs queued: %v", got)
	}
	ev := f.log.events(t, "suppressed")
	if len(ev) != 6 || ev[0]["rule"] != RuleNullSender || ev[0]["component"] != "bounce" {
		t.Errorf("suppressed events %v", ev)
	}
}

func TestProcessOnlyPermanentFailures(t *testing.T) {
	f := newOutboxFixture(t)
	b := newBouncer(t, f, &fakeSender{}, nil)
	msg, res := testMessage(t, "m", "alice@sender.example", plainHeader)
	res.Failed = []importer.Failure{{Recipient: "full@example.com", Status: "4.2.2"}}
	if out, err := b.Process(context.Background(), "mx", msg, res); err != nil || out.Action != ActionNone {
		t.Errorf("Process of a temporary failure = %+v, %v", out, err)
	}
	res.Failed = append(res.Failed, importer.Failure{Recipient: "nobody@example.com", Status: "5.1.1"})
	out, err := b.Process(context.Background(), "mx", msg, res)
	if err != nil || out.Action != ActionQueued || len(out.DSN.Failed) != 1 || out.DSN.Failed[0] != "nobody@example.com" {
		t.Errorf("Process = %+v, %v", out, err)
	}
}

func TestRateLimitAcrossRestart(t *testing.T) {
	f := newOutboxFixture(t)
	edit := func(c *Config) { c.RateLimit, c.RateWindow = 2, time.Hour }
	b := newBouncer(t, f, &fakeSender{}, edit)
	ctx := context.Background()
	process := func(b *Bouncer, id, sender string) Outcome {
		t.Helper()
		msg, res := testMessage(t, id, sender, plainHeader)
		out, err := b.Process(ctx, "mx", msg, res)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	for i, want := range []string{ActionQueued, ActionQueued, ActionSuppressed} {
		if out := process(b, "m"+string(rune('1'+i)), "alice@sender.example"); out.Action != want {
			t.Errorf("message %d: %s, want %s", i+1, out.Action, want)
		}
	}
	if out := process(b, "other", "bob@sender.example"); out.Action != ActionQueued {
		t.Errorf("another sender: %s", out.Action)
	}
	// The re-import of a queued message is a duplicate, not a rate-limit victim.
	if out := process(b, "m1", "alice@sender.example"); out.Action != ActionDuplicate {
		t.Errorf("re-import: %s", out.Action)
	}
	if ev := f.log.events(t, "suppressed"); len(ev) != 1 || ev[0]["rule"] != RuleRateLimit {
		t.Errorf("suppressed events %v", ev)
	}
	b.Close()

	f.clock.Advance(30 * time.Minute)
	b = newBouncer(t, f, &fakeSender{}, edit)
	if out := process(b, "m4", "Alice@Sender.example"); out.Action != ActionSuppressed || out.Rule != RuleRateLimit {
		t.Errorf("after a restart within the window: %+v", out)
	}
	f.clock.Advance(31 * time.Minute)
	if out := process(b, "m5", "alice@sender.example"); out.Action != ActionQueued {
		t.Errorf("after the window: %s", out.Action)
	}
}

func TestProcessNoRelay(t *testing.T) {
	dir := t.TempDir()
	folder := filepath.Join(dir, "drop", quarantine.FolderName)
	log := &logBuffer{}
	b, err := New(Config{
		Default: Source{ReportingMTA: "mx.example.com", NoRelay: true},
		Sources: map[string]Source{
			"mx":  {ReportingMTA: "mx.example.com", NoRelay: true, Folder: folder},
			"off": {Disabled: true},
		},
		Language: "de",
		Log:      log.logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	msg, res := fixture(t)
	out, err := b.Process(context.Background(), "mx", msg, res)
	if err != nil || out.Action != ActionUnsent {
		t.Fatalf("Process = %+v, %v", out, err)
	}
	want := filepath.Join(folder, unsentName(msg)+".dsn.eml")
	if out.Path != want || !strings.HasPrefix(filepath.Base(want), msg.Name+".") {
		t.Errorf("path %s, want %s", out.Path, want)
	}
	data, err := os.ReadFile(want)
	if err != nil || string(data) != string(out.DSN.Data) || !strings.Contains(string(data), "Content-Language: de") {
		t.Errorf("copy: %v", err)
	}
	if ev := log.events(t, ActionUnsent); len(ev) != 1 || ev[0]["path"] != want {
		t.Errorf("unsent events %v", ev)
	}
	// A poller without a folder: built, returned, kept nowhere.
	out, err = b.Process(context.Background(), "alice-gmail", msg, res)
	if err != nil || out.Action != ActionUnsent || out.Path != "" || out.DSN == nil {
		t.Errorf("Process without folder = %+v, %v", out, err)
	}
	if out, _ := b.Process(context.Background(), "off", msg, res); out.Action != ActionDisabled {
		t.Errorf("disabled source: %s", out.Action)
	}
	if err := b.Run(canceled()); err != nil {
		t.Errorf("Run without outbox = %v", err)
	}
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

func TestNewErrors(t *testing.T) {
	for _, cfg := range []Config{
		{Language: "fr", Default: Source{ReportingMTA: "mx.example.com", NoRelay: true}},
		{Default: Source{ReportingMTA: "not a host", NoRelay: true}},
		{Default: Source{ReportingMTA: "mx.example.com"}}, // a relay but no outbox
		{Default: Source{ReportingMTA: "mx.example.com", NoRelay: true}, Sources: map[string]Source{"x": {NoRelay: true}}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

func TestOpen(t *testing.T) {
	cert, caFile := testCert(t)
	rs := startServer(t, startTLSServer, cert, func(rs *recServer) { rs.user, rs.pass = "u", "topsecret" })
	dir := t.TempDir()
	no := false
	relay := rs.relayConfig()
	relay.TLS, relay.CAFile = "starttls", caFile
	relay.Auth = configs.SMTPAuth{Method: "plain", Username: "u", Password: "topsecret"}
	cfg := &configs.Config{
		StateDir: filepath.Join(dir, "state"),
		SMTP:     configs.SMTP{ReportingMTA: "mx.example.com"}, // no top-level relay
		Bounce:   configs.Bounce{Language: "en", RetryFor: configs.Duration(time.Hour)},
		Connectors: []configs.Connector{
			{Name: "mx", DropFolder: filepath.Join(dir, "drop")},
			{Name: "relayed", DropFolder: filepath.Join(dir, "drop2"), SMTP: &relay},
			{Name: "quiet", DropFolder: filepath.Join(dir, "drop3"), Bounce: &no},
			{Name: "empty-override", DropFolder: filepath.Join(dir, "drop4"), SMTP: &configs.SMTP{}},
		},
	}
	log := &logBuffer{}
	b, err := Open(cfg, OpenOptions{Log: log.logger(), UnsentFolder: filepath.Join(dir, "unsent")})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer b.Close()
	if b.Outbox() == nil {
		t.Fatal("no outbox for a connector relay")
	}
	if _, err := os.Stat(filepath.Join(dir, "state", "outbox", StateQueued)); err != nil {
		t.Errorf("outbox folder: %v", err)
	}
	ctx := context.Background()
	for _, tc := range []struct{ source, action, path string }{
		{"mx", ActionUnsent, filepath.Join(dir, "drop", quarantine.FolderName)},
		{"empty-override", ActionUnsent, filepath.Join(dir, "drop4", quarantine.FolderName)},
		{"a-poller", ActionUnsent, filepath.Join(dir, "unsent")},
		{"quiet", ActionDisabled, ""},
		{"relayed", ActionQueued, ""},
	} {
		msg, res := testMessage(t, "id-"+tc.source, "alice@sender.example", plainHeader)
		res.Outcome = importer.OutcomePartial // kept as an unsent DSN (a failed message's goes beside it in quarantine)
		out, err := b.Process(ctx, tc.source, msg, res)
		if err != nil || out.Action != tc.action || (tc.path != "" && filepath.Dir(out.Path) != tc.path) {
			t.Errorf("%s: %+v, %v; want %s in %s", tc.source, out, err, tc.action, tc.path)
		}
	}
	b.Outbox().ProcessDue(ctx)
	if msgs := rs.messages(); len(msgs) != 1 || msgs[0].mech != "PLAIN" || !msgs[0].tls {
		t.Errorf("relay got %+v", msgs)
	}
	if strings.Contains(log.String(), "topsecret") {
		t.Error("the relay password is in the log")
	}

	// xoauth2 needs a token source.
	relay.Auth = configs.SMTPAuth{Method: "xoauth2", Username: "u"}
	b.Close()
	if _, err := Open(cfg, OpenOptions{}); err == nil {
		t.Error("Open accepted xoauth2 without an OAuth hook")
	}
}

// TestUnsentNames: without a relay, the DSNs of messages that had one name (a writer
// that reuses names) are kept side by side, the same message imported again replaces
// its own, a long name still fits with its temporary name, and a message that goes to
// the quarantine gets no copy here (the intake keeps it beside the message).
func TestUnsentNames(t *testing.T) {
	folder := filepath.Join(t.TempDir(), quarantine.FolderName)
	b, err := New(Config{
		Default: Source{ReportingMTA: "mx.example.com", NoRelay: true, Folder: folder},
		Log:     (&logBuffer{}).logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	process := func(id, name string, outcome importer.Outcome) Outcome {
		t.Helper()
		msg, res := testMessage(t, id, "alice@sender.example", plainHeader)
		msg.Name, res.Outcome = name, outcome
		out, err := b.Process(ctx, "mx", msg, res)
		if err != nil || out.Action != ActionUnsent || out.DSN == nil {
			t.Fatalf("Process(%s) = %+v, %v", id, out, err)
		}
		return out
	}
	first := process("id-1", "m.eml", importer.OutcomePartial)
	second := process("id-2", "m.eml", importer.OutcomePartial)
	again := process("id-1", "m.eml", importer.OutcomePartial)
	if first.Path == second.Path || again.Path != first.Path {
		t.Errorf("paths %s, %s, again %s", first.Path, second.Path, again.Path)
	}
	long := process("id-3", strings.Repeat("x", 255), importer.OutcomePartial)
	if n := len(filepath.Base(long.Path)); n+len(".")+len(".tmp") > 255 {
		t.Errorf("unsent DSN name of %d bytes: no room for its temporary name", n)
	}
	if failed := process("id-4", "f.eml", importer.OutcomeFailed); failed.Path != "" {
		t.Errorf("a quarantined message's DSN kept here too: %s", failed.Path)
	}
	if got := testenv.ListDir(t, folder); len(got) != 3 {
		t.Errorf("folder holds %v; want 3 unsent DSNs", got)
	}
}
