package pop3

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// capa answers a CAPA command with caps.
func (p *peer) capa(caps ...string) {
	p.expect("CAPA")
	p.send("+OK")
	p.send(caps...)
	p.send(".")
}

// TestRetrAllPipelined checks that with PIPELINING every RETR is sent before the first
// reply is read, that a refused message is reported and the others are not disturbed,
// and that an unread rest of a message is discarded.
func TestRetrAllPipelined(t *testing.T) {
	addr := fake(t, func(p *peer) {
		p.loggedIn()
		p.capa("UIDL", "PIPELINING")
		// Every command arrives before any reply is sent: a client waiting for a
		// reply between them would leave this fake waiting, and fail the test.
		for _, want := range []string{"RETR 1", "RETR 2", "RETR 3"} {
			p.expect(want)
		}
		p.send("+OK", "Subject: one", "", "..dot", ".")
		p.send("-ERR no such message")
		p.send("+OK", "Subject: three", "", "long body line", "more", ".")
		p.expect("NOOP")
		p.send("+OK")
	})
	c := dial(t, addr)
	login(t, c)
	var got []string
	err := c.RetrAll([]int{1, 2, 3}, func(i int, r io.Reader, refused *Error) error {
		if refused != nil {
			got = append(got, "refused")
			return nil
		}
		// Read the first message whole and only a few bytes of the last.
		buf := make([]byte, 100)
		if i == 2 {
			buf = buf[:8]
		}
		n, _ := io.ReadFull(r, buf)
		got = append(got, string(buf[:n]))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"Subject: one\n\n.dot\n", "refused", "Subject:"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("RetrAll gave %q, want %q", got, want)
	}
	if err := c.Noop(); err != nil {
		t.Errorf("NOOP after RetrAll: %v", err)
	}
}

// TestRetrAllLockstep checks that without PIPELINING one RETR is sent at a time.
func TestRetrAllLockstep(t *testing.T) {
	addr := fake(t, func(p *peer) {
		p.loggedIn()
		p.capa("UIDL")
		for _, n := range []string{"1", "2"} {
			p.expect("RETR " + n)
			if n == "1" {
				// Nothing else may arrive before this reply.
				p.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				if _, err := p.r.Peek(1); err == nil {
					p.t.Errorf("the client sent a second command without PIPELINING")
				}
				p.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			}
			p.send("+OK", "Subject: "+n, "", ".")
		}
	})
	c := dial(t, addr)
	login(t, c)
	n := 0
	if err := c.RetrAll([]int{1, 2}, func(int, io.Reader, *Error) error { n++; return nil }); err != nil || n != 2 {
		t.Fatalf("RetrAll: %d messages, %v", n, err)
	}
}

// TestRetrAllStops checks that an error of fn stops the retrieval: no further command
// is sent, the replies already asked for are drained, and the session goes on.
func TestRetrAllStops(t *testing.T) {
	addr := fake(t, func(p *peer) {
		p.loggedIn()
		p.capa("PIPELINING")
		for n := 1; n <= 4; n++ {
			p.expect("RETR " + string(rune('0'+n)))
		}
		for n := 1; n <= 4; n++ {
			p.send("+OK", "Subject: "+string(rune('0'+n)), "", "body", ".")
		}
		p.expect("NOOP")
		p.send("+OK")
	})
	c := dial(t, addr)
	login(t, c)
	stop := errors.New("disk full")
	calls := 0
	err := c.RetrAll([]int{1, 2, 3, 4}, func(i int, r io.Reader, _ *Error) error {
		calls++
		if i == 1 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 2 {
		t.Fatalf("RetrAll = %v after %d calls, want the error of the second call", err, calls)
	}
	if err := c.Noop(); err != nil {
		t.Errorf("NOOP after a stopped RetrAll: %v", err)
	}
}

// TestRetrAllCut checks that a connection cut in the middle of a pipelined message is
// an error, and the messages before it were complete.
func TestRetrAllCut(t *testing.T) {
	addr := fake(t, func(p *peer) {
		p.loggedIn()
		p.capa("PIPELINING")
		p.expect("RETR 1")
		p.expect("RETR 2")
		p.send("+OK", "Subject: 1", "", ".")
		p.send("+OK", "Subject: 2", "", "half")
	})
	c := dial(t, addr)
	login(t, c)
	var full []int
	err := c.RetrAll([]int{1, 2}, func(i int, r io.Reader, _ *Error) error {
		if _, err := io.ReadAll(r); err != nil {
			return err
		}
		full = append(full, i)
		return nil
	})
	if err == nil || len(full) != 1 || full[0] != 0 {
		t.Fatalf("RetrAll = %v, complete %v; want an error after the first message", err, full)
	}
	if err := c.Noop(); err == nil {
		t.Error("NOOP on a cut connection succeeded")
	}
}

// TestDeleAll checks pipelined DELE with a refused message among them.
func TestDeleAll(t *testing.T) {
	addr := fake(t, func(p *peer) {
		p.loggedIn()
		p.capa("PIPELINING")
		p.expect("DELE 1")
		p.expect("DELE 2")
		p.expect("DELE 3")
		p.send("+OK", "-ERR message 2 already deleted", "+OK")
	})
	c := dial(t, addr)
	login(t, c)
	refused, err := c.DeleAll([]int{1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	var e *Error
	if refused[0] != nil || !errors.As(refused[1], &e) || refused[2] != nil {
		t.Errorf("refused %v", refused)
	}
	if _, err := c.DeleAll([]int{0}); err == nil {
		t.Error("DELE 0 accepted")
	}
}
