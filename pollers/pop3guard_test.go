package pollers

import (
	"fmt"
	"strings"
	"testing"
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
