package pollers

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	goimap "github.com/emersion/go-imap/v2"

	"github.com/mxdrop/mxdrop/configs"
)

// tooLargeLimit is max_message_size in the tests of a server that lies about sizes.
const tooLargeLimit = 1 << 20

// sentBound bounds what a server may have sent of a message that the poller stopped
// at tooLargeLimit: the limit, the reader's and spool's buffers, and the socket
// buffers of a loopback connection (the kernel lets them grow to several MB). A
// poller that reads on gets fakeEndlessCap (64 MB).
const sentBound = 2*tooLargeLimit + 12<<20

// padded returns a message with Message-ID id of about size bytes (CRLF lines).
func padded(id string, size int) []byte {
	b := message(id)
	line := strings.Repeat("y", 76) + "\r\n"
	return append(b, bytes.Repeat([]byte(line), size/len(line))...)
}

// checkTooLargeEntry checks that the state records key of scope as too large, with a
// size past the limit (so that later cycles leave it alone).
func checkTooLargeEntry(t *testing.T, e *env, p *Poller, scope, key string) {
	t.Helper()
	s, _, err := OpenState(p.dir, p.name, e.clock.Now(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ss, err := s.Scope(scope)
	if err != nil {
		t.Fatal(err)
	}
	if en := ss.Entries[key]; en.Status != StatusTooLarge || en.Size <= tooLargeLimit {
		t.Errorf("state entry of %s: %+v, want too large with a size past %d", key, en, tooLargeLimit)
	}
}

// checkSpoolEmpty checks that nothing of a refused message is left in the spool.
func checkSpoolEmpty(t *testing.T, p *Poller) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(p.dir, "spool"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Errorf("spool holds %d files", len(ents))
	}
}

// cycleNoErr runs a cycle with a deadline and returns its figures; a cycle error
// fails the test.
func cycleNoErr(t *testing.T, p *Poller) CycleStats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := p.Cycle(ctx)
	if err != nil {
		t.Fatalf("cycle: %v (%+v)", err, st)
	}
	return st
}

// TestPOP3TooLargeUnderstated: a POP3 server lists a message at 100 bytes and sends
// 5 MB of it, past a max_message_size of 1 MB. It must not be delivered nor deleted,
// must be reported too large, and must not be fetched again; the message after it is
// delivered by the next cycle.
func TestPOP3TooLargeUnderstated(t *testing.T) {
	big := fakeMsg{uid: "big", data: padded("big@x", 5<<20), listSize: 100}
	small := fakeMsg{uid: "small", data: message("small@x")}
	srv := newFakePOP3(t, func(int) []fakeMsg { return []fakeMsg{big, small} })
	e := newEnv(t, "alice@example.com")
	pc := srv.config()
	pc.MaxMessageSize = tooLargeLimit
	p := e.poller(pc)

	st := cycleNoErr(t, p)
	if st.TooLarge != 1 || st.Delivered != 0 || st.Pending != 1 || st.Errors != 0 {
		t.Errorf("first cycle %+v, want one too large and one pending", st)
	}
	e.wantDelivered("alice@example.com")
	checkSpoolEmpty(t, p)
	checkTooLargeEntry(t, e, p, "pop3", "big")
	log := e.log.String()
	if !strings.Contains(log, `"reason":"too_large"`) || !strings.Contains(log, `"bytes_received":`) ||
		!strings.Contains(log, `"uid":"big"`) {
		t.Errorf("the refusal is not logged with its reason, uid and bytes received:\n%s", log)
	}

	st = cycleNoErr(t, p)
	if st.TooLarge != 1 || st.Delivered != 1 || st.Errors != 0 {
		t.Errorf("second cycle %+v", st)
	}
	e.wantDelivered("alice@example.com", "<small@x>")
	if s := srv.session(2); strings.Contains(s, "RETR 1;") {
		t.Errorf("the too large message was fetched again: %s", s)
	}
	for n := 1; n <= 2; n++ {
		if s := srv.session(n); strings.Contains(s, "DELE 1;") {
			t.Errorf("session %d deleted the too large message: %s", n, s)
		}
	}
	if got := srv.removedUIDs(); len(got) != 1 || got[0] != "small" {
		t.Errorf("removed %q, want only small", got)
	}
}

// TestPOP3TooLargeEndless: a RETR that never ends (no terminating dot) is stopped
// once past max_message_size: the cycle ends after about the limit's bytes, not
// after the server's idle timeout, and nothing is deleted.
func TestPOP3TooLargeEndless(t *testing.T) {
	srv, e, p := checkEndlessCut(t, tooLargeLimit)
	e.wantDelivered("alice@example.com")
	sent := srv.sent.Load()
	if st := cycleNoErr(t, p); st.TooLarge != 1 || srv.sent.Load() != sent {
		t.Errorf("second cycle %+v fetched the message again", st)
	}
}

// checkEndlessCut runs a cycle against a server whose RETR never ends, with the
// poller's max_message_size set to max, and checks that the transfer was cut off near
// tooLargeLimit: recorded as too large, nothing in the spool, no DELE.
func checkEndlessCut(t *testing.T, max int64) (*fakePOP3, *env, *Poller) {
	t.Helper()
	endless := fakeMsg{uid: "endless", data: message("endless@x"), listSize: 100, endless: true}
	srv := newFakePOP3(t, func(int) []fakeMsg { return []fakeMsg{endless} })
	e := newEnv(t, "alice@example.com")
	pc := srv.config()
	pc.MaxMessageSize = max
	pc.Timeout = configs.Duration(2 * time.Second) // before the fix: fails in seconds
	p := e.poller(pc)

	st := cycleNoErr(t, p)
	if st.TooLarge != 1 || st.Fetched != 0 {
		t.Errorf("cycle %+v, want one too large", st)
	}
	if n := srv.sent.Load(); n >= sentBound {
		t.Errorf("the server sent %d bytes of the message, want < %d for a limit of %d", n, sentBound, tooLargeLimit)
	} else {
		t.Logf("server sent %d bytes for a limit of %d", n, tooLargeLimit)
	}
	checkSpoolEmpty(t, p)
	checkTooLargeEntry(t, e, p, "pop3", "endless")
	if s := srv.session(1); strings.Contains(s, "DELE") {
		t.Errorf("session deleted: %s", s)
	}
	return srv, e, p
}

// With max_message_size not set, a message is still refused past mxdrop's ceiling
// (configs.PollerMessageCeiling, 1 GiB, lowered here to the tests' limit): an endless
// RETR cannot fill the disk through the spool.
func TestPOP3EndlessWithoutLimit(t *testing.T) {
	old := messageCeiling
	messageCeiling = tooLargeLimit
	t.Cleanup(func() { messageCeiling = old })
	checkEndlessCut(t, 0)
}

// imapFlags returns the flags of the message uid in INBOX, as another client sees them.
func imapFlags(t *testing.T, m *memIMAP, uid goimap.UID) []goimap.Flag {
	t.Helper()
	c := m.client(t)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	msgs, err := c.Fetch(goimap.UIDSetNum(uid), &goimap.FetchOptions{Flags: true}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("fetch flags of %d: %v, %d messages", uid, err, len(msgs))
	}
	return msgs[0].Flags
}

// checkIMAPLeft checks that the message uid is still on the server, not flagged
// \Deleted, and that no expunge was sent.
func checkIMAPLeft(t *testing.T, m *memIMAP, uid goimap.UID) {
	t.Helper()
	for _, f := range imapFlags(t, m, uid) {
		if f == goimap.FlagDeleted {
			t.Errorf("message %d flagged \\Deleted", uid)
		}
	}
}

// testIMAPTooLarge runs two cycles on a server whose first message (UID 1) is liar, a
// second one normal: the liar must be refused before its body is read, left on the
// server unflagged, recorded too large and not fetched again; the other is delivered.
func testIMAPTooLarge(t *testing.T, liar imapLiar, body []byte) {
	srv := newMemIMAP(t, nil)
	e := newEnv(t, "alice@example.com")
	srv.append(t, "INBOX", body)
	srv.append(t, "INBOX", message("small@x"))
	liar.uid = 1
	srv.liar.Store(&liar)
	p := e.poller(srv.pollerConfig(func(pc *configs.Poller) {
		pc.MaxMessageSize = tooLargeLimit
		pc.Timeout = configs.Duration(2 * time.Second) // before the fix: fails in seconds
	}))

	st := cycleNoErr(t, p)
	if st.TooLarge != 1 || st.Delivered != 0 || st.Errors != 0 {
		t.Errorf("first cycle %+v, want one too large", st)
	}
	e.wantDelivered("alice@example.com")
	checkSpoolEmpty(t, p)
	checkTooLargeEntry(t, e, p, "imap:INBOX", "1")
	log := e.log.String()
	if !strings.Contains(log, `"reason":"too_large"`) || !strings.Contains(log, `"bytes_received":0`) {
		t.Errorf("the refusal is not logged as too large before any byte was read:\n%s", log)
	}
	if n := srv.sent.Load(); n >= sentBound {
		t.Errorf("the server sent %d bytes of the body, want < %d", n, sentBound)
	} else {
		t.Logf("server sent %d bytes of the body", n)
	}

	sent := srv.sent.Load()
	st = cycleNoErr(t, p)
	if st.TooLarge != 1 || st.Delivered != 1 || srv.sent.Load() != sent {
		t.Errorf("second cycle %+v (sent %d more bytes of the too large message)", st, srv.sent.Load()-sent)
	}
	e.wantDelivered("alice@example.com", "<small@x>")
	if n := strings.Count(e.log.String(), `"reason":"too_large"`); n != 1 {
		t.Errorf("too large reported %d times, want once", n)
	}
	if n := srv.count(t, "INBOX"); n != 1 {
		t.Errorf("server holds %d, want the too large message", n)
	}
	checkIMAPLeft(t, srv, 1)
	if n := srv.expunges.Load(); n != 1 {
		t.Errorf("%d expunges, want one (for the small message)", n)
	}
}

// TestIMAPTooLargeHugeLiteral: BODY[] announced as {99999999999}, its RFC822.SIZE
// 100: refused before a byte of it is read.
func TestIMAPTooLargeHugeLiteral(t *testing.T) {
	testIMAPTooLarge(t, imapLiar{size: 100, literal: 99999999999}, message("huge@x"))
}

// TestIMAPTooLargeUnderstated: RFC822.SIZE 100, the body a true literal of 5 MB.
func TestIMAPTooLargeUnderstated(t *testing.T) {
	testIMAPTooLarge(t, imapLiar{size: 100}, padded("big@x", 5<<20))
}
