package main

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxdrop/mxdrop/importer"
	"github.com/mxdrop/mxdrop/importer/quarantine"
	"github.com/mxdrop/mxdrop/watcher"
)

// sink is a recording SMTP relay on loopback: it accepts everything and keeps it.
type sink struct {
	mu   sync.Mutex
	msgs []sinkMsg
	port int
}

type sinkMsg struct {
	from string
	to   []string
	data []byte
}

type sinkSession struct {
	s   *sink
	cur sinkMsg
}

func (ss *sinkSession) AuthPlain(string, string) error { return nil }
func (ss *sinkSession) Mail(from string, _ *smtp.MailOptions) error {
	ss.cur = sinkMsg{from: from}
	return nil
}
func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.cur.to = append(ss.cur.to, to)
	return nil
}
func (ss *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ss.cur.data = b
	ss.s.mu.Lock()
	ss.s.msgs = append(ss.s.msgs, ss.cur)
	ss.s.mu.Unlock()
	return nil
}
func (ss *sinkSession) Reset()        {}
func (ss *sinkSession) Logout() error { return nil }

func startSink(t *testing.T) *sink {
	t.Helper()
	s := &sink{}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &sinkSession{s: s}, nil }))
	srv.Domain = "relay.test"
	srv.ErrorLog = log.New(io.Discard, "", 0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.port = ln.Addr().(*net.TCPAddr).Port
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s
}

func (s *sink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs)
}

// TestReplayAfterFix: mail for an account that does not exist yet (and for one that
// never will) is quarantined and bounced; the account is added; mxdrop replay brings
// the message back and it is delivered, and the sender is not bounced a second time.
func TestReplayAfterFix(t *testing.T) {
	relay := startSink(t)
	smtpBlock := fmt.Sprintf("smtp:\n  host: 127.0.0.1\n  port: %d\n  tls: none\n  reporting_mta: mx.example.com\n", relay.port)
	e := newEnv(t, "")
	cfg, _ := os.ReadFile(e.cfgPath)
	base := strings.Replace(string(cfg), "    bounce: false\n", "    bounce: true\n", 1) + smtpBlock
	e.writeConfig(base)
	dropFile(t, e.drop, "m1", msg("replay@test", "Envelope-to", "dave@example.com", "nobody@example.com"))
	old := time.Now().Add(-time.Minute)
	os.Chtimes(filepath.Join(e.drop, "m1"), old, old)

	var out, errb bytes.Buffer
	if err := execMxdrop(e, &out, &errb, "run", "--once").Run(); err != nil {
		t.Fatalf("run --once: %v\n%s", err, errb.String())
	}
	if _, err := os.Stat(filepath.Join(e.drop, "ImportFailed", "m1.json")); err != nil {
		t.Fatalf("not quarantined: %v\n%s", err, errb.String())
	}
	waitUntil(t, "the first DSN", 10*time.Second, func() bool { return relay.count() == 1 })

	// Fix the configuration: dave exists now.
	e.writeConfig(strings.Replace(base, "connectors:", "  - address: dave@example.com\n    maildir: ./mail/dave\nconnectors:", 1))
	out.Reset()
	errb.Reset()
	if err := execMxdrop(e, &out, &errb, "replay").Run(); err != nil {
		t.Fatalf("replay: %v\n%s%s", err, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "replayed 1, failed 0") {
		t.Errorf("replay said %q", out.String())
	}
	if _, err := os.Stat(filepath.Join(e.drop, "ImportFailed", "m1.json")); !os.IsNotExist(err) {
		t.Errorf("reason file not removed: %v", err)
	}
	out.Reset()
	errb.Reset()
	if err := execMxdrop(e, &out, &errb, "run", "--once").Run(); err != nil {
		t.Fatalf("run --once after replay: %v\n%s", err, errb.String())
	}
	ids, _ := maildirIDs(t, filepath.Join(e.mail, "dave"))
	if ids["replay@test"] != 1 {
		t.Errorf("dave got the replayed message %d times\n%s", ids["replay@test"], errb.String())
	}
	time.Sleep(500 * time.Millisecond)
	if n := relay.count(); n != 1 {
		t.Errorf("the sender got %d DSNs, want 1 (nobody@ was already bounced)", n)
	}
	relay.mu.Lock()
	defer relay.mu.Unlock()
	if len(relay.msgs) > 0 {
		m := relay.msgs[0]
		if m.from != "" || len(m.to) != 1 || m.to[0] != "sender@remote.test" || !bytes.Contains(m.data, []byte("nobody@example.com")) {
			t.Errorf("DSN from <%s> to %v:\n%s", m.from, m.to, m.data)
		}
	}
}

// TestStatus: after a run that quarantined a message and could not reach its relay,
// mxdrop status shows the quarantine with its reason and the DSN waiting in the outbox.
func TestStatus(t *testing.T) {
	e := newEnv(t, fmt.Sprintf("smtp:\n  host: 127.0.0.1\n  port: %d\n  tls: none\n  reporting_mta: mx.example.com\n", freePort(t)))
	cfg, _ := os.ReadFile(e.cfgPath)
	conf := strings.Replace(string(cfg), "    bounce: false\n", "    bounce: true\n", 1)
	e.writeConfig(strings.Replace(conf, "    maildir: ./mail/bob\n", "    maildir: ./mail/bob\n    quota: 1M\n    quota_messages: 10\n", 1))
	dropFile(t, e.drop, "lost", msg("status@test", "X-Original-To", "nobody@example.com"))
	dropFile(t, e.drop, "kept", msg("kept@test", "X-Original-To", "bob@example.com"))
	old := time.Now().Add(-time.Minute)
	os.Chtimes(filepath.Join(e.drop, "lost"), old, old)
	os.Chtimes(filepath.Join(e.drop, "kept"), old, old)
	var out, errb bytes.Buffer
	if err := execMxdrop(e, &out, &errb, "run", "--once").Run(); err != nil {
		t.Fatalf("run --once: %v\n%s", err, errb.String())
	}
	// A file an instance that stopped left claimed (a transient error) waits for the
	// next start: status counts it in the backlog and says it is claimed.
	if err := os.WriteFile(filepath.Join(e.drop, ".mxdrop-claim.0123456789abcdef.0.left"), msg("left@test", "X-Original-To", "bob@example.com"), 0o640); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := execMxdrop(e, &out, &errb, "status").Run(); err != nil {
		t.Fatalf("status: %v\n%s", err, errb.String())
	}
	for _, want := range []string{"mx (active)", "backlog         1 files", "claimed         1 files", "ImportFailed    1 messages", "lost  no_deliverable_recipient  sender@remote.test nobody@example.com 5.1.1", "queued            1 DSNs", "Quotas", "bob@example.com  "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}
	// bob's use is the one delivered copy, against 1 MiB and 10 messages.
	ents, _ := os.ReadDir(filepath.Join(e.mail, "bob", "new"))
	if len(ents) != 1 {
		t.Fatalf("bob has %d messages", len(ents))
	}
	fi, _ := ents[0].Info()
	if want := fmt.Sprintf("bob@example.com  %d of 1048576 bytes (0%%), 1 of 10 messages (10%%)", fi.Size()); !strings.Contains(out.String(), want) {
		t.Errorf("status lacks %q:\n%s", want, out.String())
	}
}

// TestStatusQuarantineNames: status names each quarantined message as replay takes it,
// with the source's own name beside it where a name taken before made them differ.
func TestStatusQuarantineNames(t *testing.T) {
	q := quarantine.Folder(filepath.Join(t.TempDir(), quarantine.FolderName))
	for i := range 2 {
		rec := quarantine.Record{Time: time.Now(), File: "same", Reason: "no_deliverable_recipient", Sender: "s@remote.test", ID: strconv.Itoa(i)}
		if _, err := q.Write("same", strings.NewReader("x"), rec); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	printQuarantine(&out, q, 10)
	for _, want := range []string{"ImportFailed    2 messages", "  same.1 (same)  no_deliverable_recipient", "  same  no_deliverable_recipient"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}
}

// quarantineForReplay quarantines, in e's connector, m1: a message to alice and bob that
// changed after alice got her copy (changed_after_delivery; her copy is in place under
// the first identity), and m2, quarantined as m2.1 behind another m2. It returns m2's
// identity.
func quarantineForReplay(t *testing.T, e *env) string {
	t.Helper()
	q := quarantine.ForConnector(e.drop)
	first, arrived := "m1|100|1764000000000000000|12345", time.Unix(1764000000, 0)
	changed := msg("changed@test", "Envelope-to", "alice@example.com", "bob@example.com")
	rec := quarantine.Record{Time: time.Now(), Source: "mx", File: "m1", ID: first, Arrived: arrived, Reason: "changed_after_delivery"}
	if _, err := q.Write("m1", bytes.NewReader(changed), rec); err != nil {
		t.Fatal(err)
	}
	// alice's copy from the first attempt, under the first identity's delivery name.
	alice := filepath.Join(e.mail, "alice")
	for _, sub := range []string{"tmp", "new", "cur"} {
		os.MkdirAll(filepath.Join(alice, sub), 0o700)
	}
	name := importer.DeliveryName(importer.Message{ID: first, Arrived: arrived}, "alice@example.com")
	if err := os.WriteFile(filepath.Join(alice, "new", name), changed, 0o600); err != nil {
		t.Fatal(err)
	}
	// m2: another message of that name was quarantined before it, so it is m2.1 there.
	if _, err := q.Write("m2", strings.NewReader("the other m2"), quarantine.Record{File: "m2", ID: "other", Reason: "no_header"}); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(e.root, "m2")
	if err := os.WriteFile(src, msg("m2@test", "Envelope-to", "carol@example.org"), 0o640); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(src)
	if err != nil {
		t.Fatal(err)
	}
	id := watcher.Identity("m2", fi)
	if p, err := q.Move(src, "m2", quarantine.Record{File: "m2", ID: id, Reason: "no_deliverable_recipient"}); err != nil || filepath.Base(p) != "m2.1" {
		t.Fatalf("Move = %s, %v", p, err)
	}
	return id
}

// TestReplayKeepsIdentity: a connector's quarantined message goes back into the drop
// folder under its own name (m2, quarantined as m2.1), where its identity is the one
// recorded; one that changed after a delivery to some of its accounts
// (changed_after_delivery) cannot get that identity back from its file and is imported
// by replay itself under the recorded one: the account that had its copy keeps one,
// the other gets its own.
func TestReplayKeepsIdentity(t *testing.T) {
	e := newEnv(t, "")
	q := quarantine.ForConnector(e.drop)
	id := quarantineForReplay(t, e)
	var out, errb bytes.Buffer
	if err := execMxdrop(e, &out, &errb, "replay", "m1", "m2.1").Run(); err != nil {
		t.Fatalf("replay: %v\n%s%s", err, out.String(), errb.String())
	}
	for _, want := range []string{"mx: m1 delivered", "mx: m2.1 back in " + filepath.Join(e.drop, "m2"), "replayed 2, failed 0"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("replay said %q, want %q\n%s", out.String(), want, errb.String())
		}
	}
	for acct, want := range map[string]int{"alice": 1, "bob": 1} {
		if ids, _ := maildirIDs(t, filepath.Join(e.mail, acct)); ids["changed@test"] != want {
			t.Errorf("%s has %d copies of the changed message, want %d", acct, ids["changed@test"], want)
		}
	}
	fi2, err := os.Lstat(filepath.Join(e.drop, "m2"))
	if err != nil {
		t.Fatalf("m2 not back in the drop folder: %v", err)
	}
	if got := watcher.Identity("m2", fi2); got != id {
		t.Errorf("m2 came back as %s, quarantined as %s", got, id)
	}
	if q.Has("m1") || q.Has("m2.1") || !q.Has("m2") {
		t.Error("quarantine after the replay: want only the other m2")
	}
}

// TestReplayChangedWhileDaemonRuns: with the daemon running (it holds the bounce outbox),
// replay still puts back what can go back, and refuses the changed message with a
// message that names it, leaving it quarantined and nobody a second copy.
func TestReplayChangedWhileDaemonRuns(t *testing.T) {
	e := newEnv(t, fmt.Sprintf("smtp:\n  host: 127.0.0.1\n  port: %d\n  tls: none\n  reporting_mta: mx.example.com\n", freePort(t)))
	cfg, _ := os.ReadFile(e.cfgPath)
	e.writeConfig(strings.Replace(string(cfg), "    bounce: false\n", "    bounce: true\n", 1))
	q := quarantine.ForConnector(e.drop)
	quarantineForReplay(t, e)
	p := e.start("run")
	p.waitLog(t, "mxdrop started", 10*time.Second)
	var out, errb bytes.Buffer
	err := execMxdrop(e, &out, &errb, "replay", "m1", "m2.1").Run()
	if err == nil {
		t.Fatalf("replay succeeded with the daemon holding the outbox:\n%s", out.String())
	}
	if !strings.Contains(errb.String(), "a running mxdrop holds the bounce outbox: stop it to replay mx: m1 (") {
		t.Errorf("replay's error does not name m1:\n%s", errb.String())
	}
	if !strings.Contains(out.String(), "mx: m2.1 back in "+filepath.Join(e.drop, "m2")) {
		t.Errorf("m2.1 not put back:\n%s", out.String())
	}
	if !q.Has("m1") {
		t.Error("m1 left the quarantine")
	}
	waitUntil(t, "m2 imported by the daemon", 10*time.Second, func() bool {
		ids, _ := maildirIDs(t, filepath.Join(e.mail, "carol"))
		return ids["m2@test"] == 1
	})
	if ids, _ := maildirIDs(t, filepath.Join(e.mail, "bob")); ids["changed@test"] != 0 {
		t.Errorf("bob got the changed message %d times", ids["changed@test"])
	}
}
