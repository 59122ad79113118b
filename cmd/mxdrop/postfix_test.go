package main

// End-to-end tests with a real Postfix (internal/postfixtest) and the real mxdrop
// binary: Postfix in front of mxdrop dropping into its drop folder, Postfix as the relay
// that takes mxdrop's DSNs, and the recipient map mxdrop exports loaded into Postfix.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/bounce"
	"github.com/mxdrop/mxdrop/internal/dovecottest"
	"github.com/mxdrop/mxdrop/internal/postfixtest"
)

// pfWait bounds every wait of these tests: Postfix delivers and mxdrop imports within
// milliseconds, so only a broken test waits this long.
const pfWait = 15 * time.Second

// pfSend submits data over SMTP from sender to rcpts and returns the outcome of each
// RCPT (nil when accepted). DATA follows when at least one recipient was accepted and
// data is not nil; otherwise the transaction is reset. Any other failure is t.Fatal.
func pfSend(t *testing.T, addr, sender string, rcpts []string, data []byte) []error {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	if err := c.Hello("client.remote.test"); err != nil {
		t.Fatalf("EHLO: %v", err)
	}
	if err := c.Mail(sender); err != nil {
		t.Fatalf("MAIL FROM:<%s>: %v", sender, err)
	}
	errs := make([]error, len(rcpts))
	accepted := 0
	for i, r := range rcpts {
		if errs[i] = c.Rcpt(r); errs[i] == nil {
			accepted++
		}
	}
	if accepted > 0 && data != nil {
		w, err := c.Data()
		if err != nil {
			t.Fatalf("DATA: %v", err)
		}
		if _, err := w.Write(bytes.ReplaceAll(data, []byte("\n"), []byte("\r\n"))); err != nil {
			t.Fatalf("write message: %v", err)
		}
		if err := w.Close(); err != nil {
			t.Fatalf("end of DATA: %v", err)
		}
	} else if err := c.Reset(); err != nil {
		t.Fatalf("RSET: %v", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatalf("QUIT: %v", err)
	}
	return errs
}

// pfReadMessage parses the message in path.
func pfReadMessage(t *testing.T, path string) (*mail.Message, []byte) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m, raw
}

// pfMaildirFiles returns the paths of the messages in a Maildir's new/ and cur/.
func pfMaildirFiles(md string) []string {
	var files []string
	for _, sub := range []string{"new", "cur"} {
		entries, _ := os.ReadDir(filepath.Join(md, sub))
		for _, e := range entries {
			if e.Type().IsRegular() {
				files = append(files, filepath.Join(md, sub, e.Name()))
			}
		}
	}
	sort.Strings(files)
	return files
}

// pfNames returns the names in dir, sorted; none when it does not exist.
func pfNames(dir string) []string {
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// pfQuarantined returns the number of files in an ImportFailed folder that are
// complete: the file and its .json record are both there.
func pfQuarantined(dir string) int {
	n := 0
	for _, name := range pfNames(dir) {
		stem, ok := strings.CutSuffix(name, ".json")
		if ok && !strings.HasPrefix(name, ".") {
			if _, err := os.Stat(filepath.Join(dir, stem)); err == nil {
				n++
			}
		}
	}
	return n
}

// pfLogClean fails the test for a warning or worse in a Postfix instance's log, and for
// an event of level error in an mxdrop log ("" for none).
func pfLogClean(t *testing.T, pf *postfixtest.Server, mxdropLog string) {
	t.Helper()
	for _, line := range pf.Problems() {
		t.Errorf("postfix log: %s", line)
	}
	for _, line := range strings.Split(mxdropLog, "\n") {
		if strings.Contains(line, `"level":"error"`) || strings.Contains(line, `"level":"fatal"`) {
			t.Errorf("mxdrop log: %s", line)
		}
	}
}

// pfEvents returns the JSON log events of an mxdrop log whose "message" is msg.
func pfEvents(t *testing.T, log, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(log, "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Errorf("log line is not JSON: %v: %s", err, line)
			continue
		}
		if ev["message"] == msg {
			out = append(out, ev)
		}
	}
	return out
}

// TestPostfixToMaildirs sends one message through a real Postfix that drops it into
// mxdrop's drop folder (testdata/postfix/master.cf.mxdrop: virtual(8), one file per
// envelope recipient) and checks what the daemon makes of it: one copy per account,
// Bcc private, the unknown recipient quarantined with its reason.
func TestPostfixToMaildirs(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{Domains: []string{"example.com", "example.org"}})
	drop := pf.DropFolder()

	e := newEnv(t, "")
	e.drop = drop
	// No smtp host: a DSN for the unknown recipient is written beside the quarantined
	// file instead of being sent.
	e.writeConfig(fmt.Sprintf(`state_dir: ./state
workers: 4
log:
  level: info
  format: json
smtp:
  reporting_mta: mx.example.com
accounts:
  - address: alice@example.com
    maildir: ./mail/alice
  - address: bob@example.com
    maildir: ./mail/bob
  - address: carol@example.org
    maildir: ./mail/carol
connectors:
  - name: mx
    drop_folder: %s
    subdomains: [example.com, example.org]
    settle: 200ms
`, drop))
	p := e.start("run")
	p.waitLog(t, "mxdrop started", pfWait)

	const id = "issue3.7f3a@remote.test"
	data := []byte("From: Sender <sender@remote.test>\n" +
		"To: Alice <alice@example.com>\n" +
		"Cc: bob@example.com\n" +
		"Subject: one message, three accounts\n" +
		"Date: Sun, 22 Nov 2026 12:00:00 +0000\n" +
		"Message-ID: <" + id + ">\n" +
		"MIME-Version: 1.0\n" +
		"Content-Type: text/plain; charset=us-ascii\n" +
		"\n" +
		"Hello Alice and Bob (and someone you cannot see).\n")
	rcpts := []string{"alice@example.com", "bob@example.com", "carol@example.org", "nobody@example.com"}
	for i, err := range pfSend(t, pf.Addr(), "sender@remote.test", rcpts, data) {
		if err != nil {
			t.Fatalf("Postfix refused RCPT TO:<%s>: %v", rcpts[i], err)
		}
	}

	accounts := map[string]string{
		"alice@example.com": filepath.Join(e.mail, "alice"),
		"bob@example.com":   filepath.Join(e.mail, "bob"),
		"carol@example.org": filepath.Join(e.mail, "carol"),
	}
	failedDir := filepath.Join(drop, "ImportFailed")
	waitUntil(t, "three copies and one quarantined file", pfWait, func() bool {
		for _, md := range accounts {
			if ids, _ := maildirIDs(t, md); ids[id] != 1 {
				return false
			}
		}
		return pfQuarantined(failedDir) == 1
	})
	pf.WaitQueueEmpty(pfWait)
	p.stop(t)

	// Each account has the message exactly once; each copy names only its own
	// recipient in its envelope fields, and nobody learns of carol (Bcc) or of the
	// unknown recipient.
	for addr, md := range accounts {
		ids, tmp := maildirIDs(t, md)
		if len(ids) != 1 || ids[id] != 1 || tmp != 0 {
			t.Errorf("%s: Maildir holds %v and %d tmp files, want %s once", addr, ids, tmp, id)
		}
		for _, f := range pfMaildirFiles(md) {
			m, raw := pfReadMessage(t, f)
			h := m.Header
			for _, field := range []string{"Delivered-To", "X-Original-To"} {
				if got := h[field]; !slices.Equal(got, []string{addr}) {
					t.Errorf("%s: %s %q, want exactly [%s]", addr, field, got, addr)
				}
			}
			for _, field := range []string{"Envelope-To", "X-Envelope-To", "X-Receiver"} {
				if got := h[field]; got != nil {
					t.Errorf("%s: copy has %s %q", addr, field, got)
				}
			}
			if got := h["Return-Path"]; !slices.Equal(got, []string{"<sender@remote.test>"}) {
				t.Errorf("%s: Return-Path %q, want exactly [<sender@remote.test>]", addr, got)
			}
			lower := strings.ToLower(string(raw))
			if addr != "carol@example.org" && strings.Contains(lower, "carol") {
				t.Errorf("%s: the copy reveals the Bcc recipient carol:\n%s", addr, raw)
			}
			if strings.Contains(lower, "nobody@") {
				t.Errorf("%s: the copy names the unknown recipient:\n%s", addr, raw)
			}
			if !bytes.HasSuffix(raw, []byte("(and someone you cannot see).\n")) {
				t.Errorf("%s: the body did not arrive whole: %q", addr, tail(string(raw), 200))
			}
		}
	}

	// The unknown recipient's file is quarantined with its reason (and, with no
	// relay, the DSN beside it).
	names := pfNames(failedDir)
	var base string
	for _, n := range names {
		if !strings.HasSuffix(n, ".json") && !strings.HasSuffix(n, ".dsn.eml") {
			base = n
		}
	}
	if want := []string{base, base + ".dsn.eml", base + ".json"}; base == "" || !slices.Equal(names, want) {
		t.Fatalf("ImportFailed/ holds %q, want one message with .json and .dsn.eml", names)
	}
	rb, err := os.ReadFile(filepath.Join(failedDir, base+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var rec struct {
		Source, File, Outcome, Reason, Sender string
		MessageID                             string `json:"message_id"`
		Recipients                            []struct{ Recipient, Status, Rule string }
	}
	if err := json.Unmarshal(rb, &rec); err != nil {
		t.Fatalf("%s.json: %v\n%s", base, err, rb)
	}
	if rec.Source != "mx" || rec.File != base || rec.Outcome != "failed" || rec.Reason != "no_deliverable_recipient" ||
		rec.Sender != "sender@remote.test" || !strings.Contains(rec.MessageID, id) {
		t.Errorf("quarantine record %+v", rec)
	}
	if len(rec.Recipients) != 1 || rec.Recipients[0].Recipient != "nobody@example.com" || rec.Recipients[0].Status != "5.1.1" {
		t.Errorf("quarantine recipients %+v, want nobody@example.com with 5.1.1", rec.Recipients)
	}
	if m, _ := pfReadMessage(t, filepath.Join(failedDir, base)); !slices.Equal(m.Header["X-Original-To"], []string{"nobody@example.com"}) {
		t.Errorf("the quarantined file is not nobody's copy: X-Original-To %q", m.Header["X-Original-To"])
	}
	if _, raw := pfReadMessage(t, filepath.Join(failedDir, base+".dsn.eml")); !bytes.Contains(raw, []byte("Final-Recipient: rfc822; nobody@example.com")) {
		t.Errorf("DSN copy does not report nobody@example.com:\n%s", raw)
	}

	// Nothing is left in the drop Maildir, and no claim.
	for _, sub := range []string{"new", "tmp", "cur"} {
		if left := pfNames(filepath.Join(drop, sub)); len(left) != 0 {
			t.Errorf("drop folder %s/ still holds %q", sub, left)
		}
	}
	for _, n := range pfNames(drop) {
		if !slices.Contains([]string{"new", "tmp", "cur", "ImportFailed", ".mxdrop"}, n) {
			t.Errorf("drop folder holds %q", n)
		}
	}
	if _, claimed := dropLeft(t, drop); len(claimed) != 0 {
		t.Errorf("claims left: %q", claimed)
	}

	// One event per drop file, the envelope read from Postfix's X-Original-To.
	outcomes := map[string]int{}
	for _, ev := range pfEvents(t, p.Logs(), "message") {
		outcomes[fmt.Sprint(ev["outcome"])]++
		if ev["envelope_source"] != "x-original-to" || ev["from"] != "sender@remote.test" {
			t.Errorf("event %v: want envelope_source x-original-to, from sender@remote.test", ev)
		}
	}
	if outcomes["delivered"] != 3 || outcomes["failed"] != 1 || len(outcomes) != 2 {
		t.Errorf("message outcomes %v, want 3 delivered and 1 failed", outcomes)
	}

	pfLogClean(t, pf, p.Logs())

	// A real IMAP server sees each copy.
	for addr, md := range accounts {
		if got := dovecottest.MessageIDs(t, md, "INBOX"); !slices.Equal(got, []string{"<" + id + ">"}) {
			t.Errorf("%s: Dovecot sees %q in INBOX, want [<%s>]", addr, got, id)
		}
	}
}

// pfOutbox returns the records of the outbox's state folder (bounce.StateQueued, ...)
// by key (file name stem). It may run while mxdrop moves records: one that vanishes
// between listing and reading is left out.
func pfOutbox(t *testing.T, stateDir, state string) map[string]bounce.Record {
	t.Helper()
	out := map[string]bounce.Record{}
	dir := filepath.Join(stateDir, "outbox", state)
	for _, n := range pfNames(dir) {
		key, ok := strings.CutSuffix(n, ".json")
		if !ok {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, n))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var r bounce.Record
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("outbox %s/%s: %v", state, n, err)
		}
		out[key] = r
	}
	return out
}

// pfOutboxConsistent asserts, while no mxdrop runs, that every DSN in the outbox has
// its record beside it and the other way round, and that no temporary file is left.
func pfOutboxConsistent(t *testing.T, stateDir string) {
	t.Helper()
	for _, state := range []string{bounce.StateQueued, bounce.StateSent, bounce.StateFailed} {
		names := pfNames(filepath.Join(stateDir, "outbox", state))
		for _, n := range names {
			stem, ext := strings.TrimSuffix(n, filepath.Ext(n)), filepath.Ext(n)
			other := map[string]string{".json": ".eml", ".eml": ".json"}[ext]
			if other == "" || !slices.Contains(names, stem+other) {
				t.Errorf("outbox %s/%s has no %s beside it", state, n, other)
			}
		}
	}
	if left := pfNames(filepath.Join(stateDir, "outbox", "tmp")); len(left) != 0 {
		t.Errorf("outbox tmp/ holds %q", left)
	}
}

// pfCheckDSN asserts that the sink's file is the DSN mxdrop sends for origID, whose
// only failed recipient is nobody@example.com, received with MAIL FROM:<>.
func pfCheckDSN(t *testing.T, path, origID string) {
	t.Helper()
	m, raw := pfReadMessage(t, path)
	// The sink's pipe(8) writes the envelope on top: Return-Path <> is MAIL FROM:<>.
	if first, _, _ := bytes.Cut(raw, []byte("\n")); string(first) != "Return-Path: <>" {
		t.Errorf("DSN arrived with %q on top, want Return-Path: <> (null envelope sender)", first)
	}
	if got := m.Header["X-Original-To"]; !slices.Equal(got, []string{"sender@remote.test"}) {
		t.Errorf("DSN envelope recipient %q, want sender@remote.test", got)
	}
	if from, err := mail.ParseAddress(m.Header.Get("From")); err != nil || from.Address != "MAILER-DAEMON@mx.example.com" {
		t.Errorf("DSN From %q (%v), want MAILER-DAEMON@mx.example.com", m.Header.Get("From"), err)
	}
	if got := m.Header.Get("In-Reply-To"); got != "<"+origID+">" {
		t.Errorf("DSN In-Reply-To %q, want <%s>", got, origID)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("DSN Content-Type %q (%v), want multipart/report; report-type=delivery-status", m.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	var status string
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("DSN MIME structure: %v", err)
		}
		if ct, _, _ := mime.ParseMediaType(part.Header.Get("Content-Type")); ct == "message/delivery-status" {
			b, _ := io.ReadAll(part)
			status = string(b)
		}
	}
	// RFC 3464 section 2.1: per-message fields, a blank line, per-recipient fields.
	for _, want := range []string{"Reporting-MTA: dns; mx.example.com", "Final-Recipient: rfc822; nobody@example.com", "Action: failed", "Status: 5.1.1"} {
		if !strings.Contains(strings.ReplaceAll(status, "\r\n", "\n"), want+"\n") {
			t.Errorf("delivery-status part lacks %q:\n%s", want, status)
		}
	}
	if n := strings.Count(status, "Final-Recipient:"); n != 1 {
		t.Errorf("delivery-status part names %d recipients, want 1:\n%s", n, status)
	}
}

// TestBounceThroughPostfixRelay has mxdrop send its DSNs through a real Postfix relay:
// one while the relay is up, and one that waits in the outbox while the relay is down,
// across a restart of mxdrop, and is sent once the relay is back; the first is not
// sent again.
func TestBounceThroughPostfixRelay(t *testing.T) {
	sink := postfixtest.Start(t, postfixtest.Options{Mode: postfixtest.ModeSink, Domains: []string{"remote.test"}})
	e := newEnv(t, "")
	// min_backoff/max_backoff: the outbox retries within a second, not a minute.
	e.writeConfig(fmt.Sprintf(`state_dir: ./state
workers: 4
log:
  level: info
  format: json
smtp:
  host: 127.0.0.1
  port: %d
  tls: none
  timeout: 5s
  reporting_mta: mx.example.com
bounce:
  min_backoff: 100ms
  max_backoff: 500ms
accounts:
  - address: alice@example.com
    maildir: ./mail/alice
connectors:
  - name: mx
    drop_folder: ./drop
    subdomains: [example.com]
    settle: 100ms
`, sink.Port()))
	state := filepath.Join(e.root, "state")
	inbox := sink.Maildir("sender@remote.test")
	received := func() []string { return pfMaildirFiles(inbox) }

	// 1. The relay is up: the DSN arrives once, with a null envelope sender.
	p := e.start("run")
	p.waitLog(t, "mxdrop started", pfWait)
	dropFile(t, e.drop, "first.eml", msg("bounce-1@remote.test", "X-Original-To", "nobody@example.com"))
	sink.WaitMessages(inbox, 1, pfWait)
	waitUntil(t, "the first DSN recorded as sent", pfWait, func() bool {
		return len(pfOutbox(t, state, bounce.StateSent)) == 1
	})
	sink.WaitQueueEmpty(pfWait)
	first := received()
	if len(first) != 1 {
		t.Fatalf("sink holds %d messages after the first bounce, want 1", len(first))
	}
	pfCheckDSN(t, first[0], "bounce-1@remote.test")

	// 2. The relay is down: the second DSN waits in the outbox, also after mxdrop
	// stops.
	sink.Stop()
	dropFile(t, e.drop, "second.eml", msg("bounce-2@remote.test", "X-Original-To", "nobody@example.com"))
	waitUntil(t, "a failed attempt at the second DSN", pfWait, func() bool {
		for _, r := range pfOutbox(t, state, bounce.StateQueued) {
			if r.Attempts > 0 {
				return true
			}
		}
		return false
	})
	waitUntil(t, "the second message quarantined", pfWait, func() bool {
		return pfQuarantined(filepath.Join(e.drop, "ImportFailed")) == 2
	})
	p.stop(t)
	pfOutboxConsistent(t, state)
	queued := pfOutbox(t, state, bounce.StateQueued)
	if len(queued) != 1 {
		t.Fatalf("outbox queue holds %d DSNs after the stop, want 1: %+v", len(queued), queued)
	}
	for _, r := range queued {
		if r.MessageID != "<bounce-2@remote.test>" && r.MessageID != "bounce-2@remote.test" ||
			r.Sender != "sender@remote.test" || !slices.Equal(r.Failed, []string{"nobody@example.com"}) || r.LastError == "" {
			t.Errorf("queued record %+v, want the second DSN with its last error", r)
		}
	}
	if n := len(pfOutbox(t, state, bounce.StateSent)); n != 1 {
		t.Errorf("outbox sent/ holds %d records, want 1", n)
	}
	if n := len(received()); n != 1 {
		t.Errorf("sink holds %d messages while it was down, want 1", n)
	}

	// 3. mxdrop starts again while the relay is still down, then the relay comes
	// back: the second DSN is sent once, the first not again.
	p2 := e.start("run")
	p2.waitLog(t, "mxdrop started", pfWait)
	// The reloaded outbox tries the DSN again (and fails) before the relay is back.
	p2.waitLog(t, "dsn not sent; will retry", pfWait)
	sink.Start()
	sink.WaitMessages(inbox, 2, pfWait)
	waitUntil(t, "the outbox queue empty", pfWait, func() bool {
		return len(pfOutbox(t, state, bounce.StateQueued)) == 0
	})
	sink.WaitQueueEmpty(pfWait)
	p2.stop(t)
	pfOutboxConsistent(t, state)

	all := received()
	if len(all) != 2 {
		t.Fatalf("sink holds %d messages, want 2 (each DSN once)", len(all))
	}
	var second string
	for _, f := range all {
		if f != first[0] {
			second = f
		}
	}
	pfCheckDSN(t, second, "bounce-2@remote.test")
	if n := len(pfOutbox(t, state, bounce.StateSent)); n != 2 {
		t.Errorf("outbox sent/ holds %d records, want 2", n)
	}
	if n := len(pfOutbox(t, state, bounce.StateFailed)); n != 0 {
		t.Errorf("outbox failed/ holds %d records, want 0", n)
	}
	sent := pfEvents(t, p2.Logs(), "dsn sent")
	if len(sent) != 1 || !strings.Contains(fmt.Sprint(sent[0]["message_id"]), "bounce-2@remote.test") {
		t.Errorf("after the restart mxdrop logged %d dsn sent events, want one for bounce-2: %v", len(sent), sent)
	}
	pfLogClean(t, sink, p.Logs()+p2.Logs())
}

// TestExportRecipientsPostfixMap loads the map of `mxdrop export-recipients --format
// postfix` into a real Postfix as relay_recipient_maps (testdata/postfix/
// main.cf.recipients) and checks which recipients Postfix then takes at RCPT time.
func TestExportRecipientsPostfixMap(t *testing.T) {
	postfixtest.Require(t)
	e := newEnv(t, "")
	e.writeConfig(`state_dir: ./state
accounts:
  - address: alice@example.com
    aliases: [a.smith@example.com]
    maildir: ./mail/alice
  - address: bob@example.com
    maildir: ./mail/bob
  - address: postmaster@catchall.example.org
    catch_all: true
    maildir: ./mail/catchall
connectors:
  - name: mx
    drop_folder: ./drop
    subdomains: [example.com, catchall.example.org]
`)
	var out, errb bytes.Buffer
	if err := execMxdrop(e, &out, &errb, "export-recipients", "--format", "postfix").Run(); err != nil {
		t.Fatalf("export-recipients: %v\n%s", err, errb.String())
	}
	want := "@catchall.example.org OK\n" +
		"a.smith@example.com OK\n" +
		"alice@example.com OK\n" +
		"bob@example.com OK\n" +
		"postmaster@catchall.example.org OK\n"
	if out.String() != want {
		t.Errorf("export-recipients printed\n%s\nwant\n%s", out.String(), want)
	}
	mapFile := filepath.Join(e.root, "mxdrop-recipients")
	if err := os.WriteFile(mapFile, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	// Start runs postmap on a copy of the map and fails the test if postmap does.
	pf := postfixtest.Start(t, postfixtest.Options{
		Domains:           []string{"example.com", "catchall.example.org"},
		RelayRecipientMap: mapFile,
	})

	// postmap parsed every line: it warns (and still succeeds) for a line it cannot
	// read, and its table holds exactly the exported entries.
	postmap, err := exec.LookPath("postmap")
	if err != nil {
		postmap = "/usr/sbin/postmap"
	}
	again := filepath.Join(t.TempDir(), "recipients")
	if err := os.WriteFile(again, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command(postmap, "-c", pf.ConfigDir(), "hash:"+again).CombinedOutput(); err != nil || len(b) != 0 {
		t.Errorf("postmap hash:%s: %v, output %q (want none)", again, err, b)
	}
	table := filepath.Join(pf.ConfigDir(), "mxdrop-recipients")
	b, err := exec.Command(postmap, "-c", pf.ConfigDir(), "-s", "hash:"+table).CombinedOutput()
	if err != nil {
		t.Fatalf("postmap -s hash:%s: %v: %s", table, err, b)
	}
	var dumped []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		dumped = append(dumped, strings.Join(strings.Fields(line), " "))
	}
	sort.Strings(dumped)
	if got := strings.Join(dumped, "\n") + "\n"; got != want {
		t.Errorf("Postfix's table holds\n%s\nwant\n%s", got, want)
	}

	rcpts := []struct {
		addr string
		ok   bool
	}{
		{"alice@example.com", true},
		{"a.smith@example.com", true},             // alias
		{"Bob@Example.COM", true},                 // lookups ignore case
		{"alice+tag@example.com", true},           // recipient_delimiter = +
		{"a.smith+news@example.com", true},        // an alias with a tag
		{"whoever@catchall.example.org", true},    // catch-all domain
		{"postmaster@catchall.example.org", true}, // the catch-all account itself
		{"nobody@example.com", false},             // not listed, domain without catch-all
		{"carol@example.com", false},
		{"alice.smith@example.com", false},
	}
	addrs := make([]string, len(rcpts))
	for i, r := range rcpts {
		addrs[i] = r.addr
	}
	errs := pfSend(t, pf.Addr(), "sender@remote.test", addrs, nil)
	for i, r := range rcpts {
		err := errs[i]
		if r.ok {
			if err != nil {
				t.Errorf("RCPT TO:<%s>: %v, want 250", r.addr, err)
			}
			continue
		}
		var te *textproto.Error
		if !errors.As(err, &te) || te.Code != 550 || !strings.HasPrefix(te.Msg, "5.1.1 ") ||
			!strings.Contains(te.Msg, "User unknown in relay recipient table") {
			t.Errorf("RCPT TO:<%s>: %v, want 550 5.1.1 ... User unknown in relay recipient table", r.addr, err)
		}
	}
	// No DATA was sent: the queue file smtpd opened at the first accepted RCPT is
	// discarded after RSET (asynchronously, by cleanup).
	pf.WaitQueueEmpty(pfWait)
	pfLogClean(t, pf, "")
}
