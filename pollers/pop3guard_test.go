package pollers

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mxdrop/mxdrop/pollers/pop3"
)

// TestPOP3ReusedUIDL: a server that lists its one message as "1 u1" every session,
// each time a new message (another size and Message-ID). With keep: delete, every one
// must be fetched and delivered before it is deleted; none deleted on the state's word.
func TestPOP3ReusedUIDL(t *testing.T) {
	e := newEnv(t, "alice@example.com")
	srv := newFakePOP3(t, func(n int) []fakeMsg {
		return []fakeMsg{{uid: "u1", data: message(fmt.Sprintf("reused-%d%s@x", n, strings.Repeat("x", n)))}}
	})
	p := e.poller(srv.config())
	for range 3 {
		e.cycle(p)
	}
	e.wantDelivered("alice@example.com", "<reused-1x@x>", "<reused-2xx@x>", "<reused-3xxx@x>")
	for n := 1; n <= 3; n++ {
		if s := srv.session(n); !strings.Contains(s, "RETR 1;") {
			t.Errorf("session %d did not fetch its message before deleting it: %s", n, s)
		}
	}
	if !strings.Contains(e.log.String(), `"reason":"uid_reused"`) {
		t.Errorf("the reused UIDL is not logged")
	}
}

// TestPOP3ReusedUIDLSameMessage: the message a state says is delivered, still on the
// server (its DELE was lost with the session), is verified (size and TOP header) and
// deleted without being fetched again.
func TestPOP3ReusedUIDLSameMessage(t *testing.T) {
	e := newEnv(t, "alice@example.com")
	srv := newFakePOP3(t, func(n int) []fakeMsg {
		return []fakeMsg{{uid: "u1", data: message("same@x")}}
	})
	srv.closeAfterRetr.Store(true)
	p := e.poller(srv.config())
	st, _ := p.Cycle(t.Context())
	if st.Delivered != 1 {
		t.Fatalf("first cycle %+v", st)
	}
	srv.closeAfterRetr.Store(false)
	st = e.cycle(p)
	if st.Fetched != 0 || st.Deleted != 1 {
		t.Fatalf("second cycle %+v, want the verified copy deleted unfetched", st)
	}
	if s := srv.session(2); strings.Contains(s, "RETR") || !strings.Contains(s, "TOP 1 0;DELE 1;") {
		t.Fatalf("second session %s", s)
	}
	e.wantDelivered("alice@example.com", "<same@x>")
}

// TestPOP3EndlessTop: verifying a delivered message still on the server, mxdrop asks
// TOP n 0; a server answering with the header and then data without end gets the
// session closed after a bounded read, and nothing is deleted on its word.
func TestPOP3EndlessTop(t *testing.T) {
	e := newEnv(t, "alice@example.com")
	srv := newFakePOP3(t, func(n int) []fakeMsg {
		return []fakeMsg{{uid: "u1", data: message("same@x")}}
	})
	srv.closeAfterRetr.Store(true)
	p := e.poller(srv.config())
	if st, _ := p.Cycle(t.Context()); st.Delivered != 1 {
		t.Fatalf("first cycle %+v", st)
	}
	srv.closeAfterRetr.Store(false)
	srv.endlessTop.Store(true)
	srv.sent.Store(0)
	st, err := p.Cycle(t.Context())
	if err == nil || !strings.Contains(err.Error(), "past the header block") || !errors.Is(err, pop3.ErrReplyTooLong) {
		t.Fatalf("second cycle %+v, %v: want the session ended over the TOP reply", st, err)
	}
	if s := srv.session(2); strings.Contains(s, "DELE") {
		t.Fatalf("second session %s: deleted on an unverified TOP", s)
	}
	if log := e.log.String(); !strings.Contains(log, `"reason":"server_reply_too_large"`) {
		t.Errorf("the cycle's failure does not say server_reply_too_large:\n%s", log)
	}
	// headerPrintMax of header, topSlack after it, and the socket buffers between.
	if sent := srv.sent.Load(); sent > 40<<20 {
		t.Errorf("the server sent %d bytes of its TOP reply before mxdrop stopped reading", sent)
	}
	e.wantDelivered("alice@example.com", "<same@x>")
}

// TestPOP3SameMessageIDOtherContent: a forged message takes a Message-ID; the genuine
// message with that Message-ID (another sender, another body) arrives later, in the
// same session and in a later one. Each must be delivered, not suppressed as a
// duplicate and deleted; a true copy (other trace fields only) is still a duplicate.
func TestPOP3SameMessageIDOtherContent(t *testing.T) {
	forged := []byte("From: forger@evil.example\r\nSubject: hi\r\nMessage-ID: <shared@x>\r\n\r\nforged body\r\n")
	genuine := func(to string) []byte {
		return []byte("Received: by mx for " + to + "\r\nDelivered-To: " + to + "\r\nFrom: friend@good.example\r\nSubject: hi\r\nMessage-ID: <shared@x>\r\n\r\ngenuine body\r\n")
	}
	e := newEnv(t, "alice@example.com")
	srv := newFakePOP3(t, func(n int) []fakeMsg {
		switch n {
		case 1: // one batch: the forgery, then the genuine message
			return []fakeMsg{{uid: "f1", data: forged}, {uid: "g1", data: genuine("a@example.com")}}
		case 2: // a later cycle: the genuine message again, from another forgery's slot
			return []fakeMsg{{uid: "f2", data: []byte(strings.Replace(string(forged), "forged body", "forged body 2", 1))}}
		default: // a copy of the genuine one that differs in its trace fields only
			return []fakeMsg{{uid: "g2", data: genuine("b@example.com")}}
		}
	})
	p := e.poller(srv.config())
	if st := e.cycle(p); st.Delivered != 2 || st.Duplicates != 0 {
		t.Fatalf("first cycle %+v: a message with other content was taken for a duplicate", st)
	}
	if st := e.cycle(p); st.Delivered != 1 || st.Duplicates != 0 {
		t.Fatalf("second cycle %+v: a message with other content was taken for a duplicate", st)
	}
	if st := e.cycle(p); st.Delivered != 0 || st.Duplicates != 1 {
		t.Fatalf("third cycle %+v: a true copy was not suppressed", st)
	}
	if got := e.delivered("alice@example.com"); len(got) != 3 {
		t.Fatalf("alice holds %q, want 3 messages", got)
	}
}

// TestPOP3ReportsWhatHappened: the log and the cycle's counts say what the server did.
// A connection closed right after RETR deleted nothing, so no message is reported
// deleted; a RETR answered -ERR leaves a message on the server, a warning with its
// UIDL and an error of the cycle; a deletion is reported once QUIT confirmed it.
func TestPOP3ReportsWhatHappened(t *testing.T) {
	t.Run("closed after RETR", func(t *testing.T) {
		e := newEnv(t, "alice@example.com")
		srv := newFakePOP3(t, func(n int) []fakeMsg { return []fakeMsg{{uid: "u1", data: message("cut@x")}} })
		srv.closeAfterRetr.Store(true)
		st, _ := e.poller(srv.config()).Cycle(t.Context())
		if st.Delivered != 1 || st.Deleted != 0 {
			t.Fatalf("stats %+v, want delivered 1, deleted 0", st)
		}
		if log := e.log.String(); strings.Contains(log, `"action":"deleted"`) {
			t.Fatalf("a message is logged deleted although no DELE was sent:\n%s", log)
		}
		if len(srv.removedUIDs()) != 0 {
			t.Fatal("the fake removed a message")
		}
	})
	t.Run("RETR refused", func(t *testing.T) {
		e := newEnv(t, "alice@example.com")
		srv := newFakePOP3(t, func(n int) []fakeMsg { return []fakeMsg{{uid: "u1", data: message("refused@x")}} })
		srv.retrErr.Store(true)
		st, err := e.poller(srv.config()).Cycle(t.Context())
		if err == nil || st.Errors != 1 {
			t.Fatalf("stats %+v, error %v: a refused RETR is not an error of the cycle", st, err)
		}
		warned := false
		for _, l := range strings.Split(e.log.String(), "\n") {
			if strings.Contains(l, `"level":"warn"`) && strings.Contains(l, `"uid":"u1"`) && strings.Contains(l, `"reason":"retr_refused"`) {
				warned = true
			}
		}
		if !warned {
			t.Fatal("no warning names the refused message")
		}
	})
	t.Run("deleted at QUIT", func(t *testing.T) {
		e := newEnv(t, "alice@example.com")
		srv := newFakePOP3(t, func(n int) []fakeMsg { return []fakeMsg{{uid: "u1", data: message("ok@x")}} })
		st := e.cycle(e.poller(srv.config()))
		if st.Delivered != 1 || st.Deleted != 1 {
			t.Fatalf("stats %+v", st)
		}
		if got := srv.removedUIDs(); len(got) != 1 || got[0] != "u1" {
			t.Fatalf("removed %q", got)
		}
		if log := e.log.String(); !strings.Contains(log, `"action":"deleted"`) || !strings.Contains(log, `"action":"delete_pending"`) {
			t.Fatalf("the deletion is not reported once confirmed:\n%s", log)
		}
	})
}

// TestPOP3UnverifiedEntry: an entry written before header prints were recorded (an
// upgrade) cannot be verified: the message is fetched again, found in the Maildir
// instead of being delivered twice, and only then deleted.
func TestPOP3UnverifiedEntry(t *testing.T) {
	e := newEnv(t, "alice@example.com")
	srv := newFakePOP3(t, func(n int) []fakeMsg { return []fakeMsg{{uid: "u1", data: message("old@x")}} })
	srv.closeAfterRetr.Store(true)
	p := e.poller(srv.config())
	if st, _ := p.Cycle(t.Context()); st.Delivered != 1 {
		t.Fatalf("first cycle %+v", st)
	}
	srv.closeAfterRetr.Store(false)
	s, _, err := OpenState(filepath.Dir(p.StatePath()), "fake", e.clock.Now(), false)
	if err != nil {
		t.Fatal(err)
	}
	ss, _ := s.Scope("pop3")
	en := ss.Entries["u1"]
	if en.Status != StatusDone || en.Header == "" {
		t.Fatalf("entry %+v", en)
	}
	en.Header = ""
	if err := s.Apply("pop3", Change{Put: map[string]Entry{"u1": en}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	e.cycle(p)
	if s := srv.session(2); !strings.Contains(s, "RETR 1;") || !strings.Contains(s, "DELE 1;") {
		t.Fatalf("second session %s: want the unverified message fetched before its deletion", s)
	}
	e.wantDelivered("alice@example.com", "<old@x>")
}
