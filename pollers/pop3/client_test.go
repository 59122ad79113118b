package pop3

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"

	"github.com/mxdrop/mxdrop/pollers/pace"
)

// dial connects to a fake server with a short idle timeout.
func dial(t *testing.T, addr string) *Client {
	t.Helper()
	return dialTimeout(t, addr, 5*time.Second)
}

// dialTimeout connects to a fake server with the idle timeout given.
func dialTimeout(t *testing.T, addr string, timeout time.Duration) *Client {
	t.Helper()
	c, err := Dial(context.Background(), Options{Addr: addr, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// retr1 logs in and starts reading message 1.
func retr1(t *testing.T, c *Client) io.ReadCloser {
	t.Helper()
	login(t, c)
	r, err := c.Retr(1)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func login(t *testing.T, c *Client) {
	t.Helper()
	if err := c.Login("u", "p"); err != nil {
		t.Fatal(err)
	}
}

func TestRetrDotUnstuffing(t *testing.T) {
	addr := fake(t, func(p *peer) {
		p.loggedIn()
		p.expect("RETR 1")
		p.send("+OK 120 octets",
			"Subject: dots",
			"",
			"..leading dot",
			"..",    // a line that is a single dot
			"...",   // two dots
			"..\r.", // CR inside a stuffed line is data
			"not.a.dot",
			" .",
			".")
		p.expect("NOOP")
		p.send("+OK")
	})
	c := dial(t, addr)
	login(t, c)
	r, err := c.Retr(1)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	want := "Subject: dots\n\n.leading dot\n.\n..\n.\r.\nnot.a.dot\n .\n"
	if string(got) != want {
		t.Errorf("message\n got %q\nwant %q", got, want)
	}
	if err := r.Close(); err != nil {
		t.Errorf("Close after EOF: %v", err)
	}
	if err := c.Noop(); err != nil {
		t.Errorf("NOOP after the message: %v", err)
	}
}

func TestMultiLineReplies(t *testing.T) {
	addr := fake(t, func(p *peer) {
		p.send("+OK <1.2@fake>")
		p.expect("CAPA")
		p.send("+OK capabilities follow", "TOP", "uidl", "SASL PLAIN XOAUTH2", "RESP-CODES", "STLS", ".")
		p.expect("USER u")
		p.send("+OK")
		p.expect("PASS p")
		p.send("+OK")
		p.expect("STAT")
		p.send("+OK 2 320 extra words")
		p.expect("LIST")
		p.send("+OK 2 messages (320 octets)", "1 120", "2 200 extension", ".")
		p.expect("LIST 2")
		p.send("+OK 2 200")
		p.expect("UIDL")
		p.send("+OK", "1 whqtswO00WBw418f9t5JxYwZ", "2 QhdPYR:00WBw1Ph7x7", ".")
		p.expect("UIDL 1")
		p.send("+OK 1 whqtswO00WBw418f9t5JxYwZ")
		p.expect("CAPA")
		p.send("-ERR no CAPA after login here")
	})
	c := dial(t, addr)
	if c.Greeting() != "<1.2@fake>" {
		t.Errorf("greeting %q", c.Greeting())
	}
	caps, err := c.Capabilities()
	if err != nil {
		t.Fatal(err)
	}
	if !caps.Has("UIDL") || !caps.Has("stls") || caps.Has("USER") || !slices.Equal(caps.SASL(), []string{"PLAIN", "XOAUTH2"}) {
		t.Errorf("capabilities %v", caps)
	}
	if _, err := c.Capabilities(); err != nil { // cached: nothing sent
		t.Fatal(err)
	}
	login(t, c)
	if n, size, err := c.Stat(); err != nil || n != 2 || size != 320 {
		t.Errorf("Stat = %d, %d, %v", n, size, err)
	}
	if l, err := c.List(); err != nil || !slices.Equal(l, []MessageSize{{1, 120}, {2, 200}}) {
		t.Errorf("List = %v, %v", l, err)
	}
	if m, err := c.ListOne(2); err != nil || m != (MessageSize{2, 200}) {
		t.Errorf("ListOne = %v, %v", m, err)
	}
	if u, err := c.UIDL(); err != nil || !slices.Equal(u, []MessageUID{{1, "whqtswO00WBw418f9t5JxYwZ"}, {2, "QhdPYR:00WBw1Ph7x7"}}) {
		t.Errorf("UIDL = %v, %v", u, err)
	}
	if u, err := c.UIDLOne(1); err != nil || u != "whqtswO00WBw418f9t5JxYwZ" {
		t.Errorf("UIDLOne = %q, %v", u, err)
	}
	// Login forgot the capabilities; a server without CAPA yields an empty set.
	if caps, err := c.Capabilities(); err != nil || len(caps) != 0 {
		t.Errorf("Capabilities after login = %v, %v", caps, err)
	}
}

func TestErrorResponseCodes(t *testing.T) {
	for _, tc := range []struct {
		reply          string
		code, text     string
		temp, authFail bool
	}{
		{"-ERR [AUTH] Authentication failed.", "AUTH", "Authentication failed.", false, true},
		{"-ERR [IN-USE] Mailbox locked by another session", "IN-USE", "Mailbox locked by another session", true, false},
		{"-ERR [LOGIN-DELAY] wait 15 minutes", "LOGIN-DELAY", "wait 15 minutes", true, false},
		{"-ERR [SYS/TEMP] Temporary authentication failure", "SYS/TEMP", "Temporary authentication failure", true, false},
		{"-ERR [sys/temp/backend] lower case and a sub-code", "SYS/TEMP/BACKEND", "lower case and a sub-code", true, false},
		{"-ERR [SYS/PERM] Account disabled", "SYS/PERM", "Account disabled", false, false},
		{"-ERR invalid password", "", "invalid password", false, true},
		{"-ERR", "", "", false, true},
		{"-ERR [not a code] text", "", "[not a code] text", false, true},
	} {
		t.Run(tc.reply, func(t *testing.T) {
			addr := fake(t, func(p *peer) {
				p.send("+OK")
				p.expect("USER u")
				p.send("+OK")
				p.expect("PASS pass-word")
				p.send(tc.reply)
				p.expect("QUIT")
				p.send("+OK bye")
			})
			c := dial(t, addr)
			err := c.Login("u", "pass-word")
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Login error %v (%T), want *Error", err, err)
			}
			if e.Command != "PASS" || e.Code != tc.code || e.Text != tc.text {
				t.Errorf("got %+v", e)
			}
			if e.Temporary() != tc.temp || e.AuthFailed() != tc.authFail {
				t.Errorf("Temporary %v AuthFailed %v, want %v %v", e.Temporary(), e.AuthFailed(), tc.temp, tc.authFail)
			}
			// A -ERR leaves the session usable.
			if err := c.Quit(); err != nil {
				t.Errorf("Quit: %v", err)
			}
		})
	}
	// A -ERR to anything but a login command is no authentication failure.
	e := parseErr("RETR", "no such message")
	if e.AuthFailed() || e.Temporary() {
		t.Errorf("RETR -ERR: AuthFailed %v Temporary %v", e.AuthFailed(), e.Temporary())
	}
}

func TestPasswordNeverInErrors(t *testing.T) {
	const secret = "s3cret pass"
	addr := fake(t, func(p *peer) {
		p.send("+OK")
		p.expect("USER u")
		p.send("+OK")
		p.expect("PASS " + secret)
		p.send("-ERR [AUTH] wrong password " + secret)
		p.expect("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00u\x00"+secret)))
		p.send("-ERR [AUTH] no " + secret)
		p.expect("PASS " + secret)
		p.conn.Close() // cut while the client waits for the reply
	})
	c := dial(t, addr)
	errs := []error{c.Login("u", secret), c.AuthPlain("u", secret), c.Pass(secret), c.Pass(secret)}
	for i, err := range errs {
		if err == nil {
			t.Fatalf("error %d is nil", i)
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error %d shows the password: %v", i, err)
		}
	}
	if err := c.Pass("a\r\nDELE 1"); err == nil || strings.Contains(err.Error(), "DELE") {
		t.Errorf("Pass with a line break: %v", err)
	}
}

func TestIdleTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	release := make(chan struct{})
	addr := fake(t, func(p *peer) {
		p.loggedIn()
		p.expect("STAT")
		<-release // never answer
	})
	c, err := Dial(context.Background(), Options{Addr: addr, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	defer close(release)
	login(t, c)
	start := time.Now()
	_, _, err = c.Stat()
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Stat error %v, want a deadline error", err)
	}
	if d := time.Since(start); d < timeout || d > 20*timeout {
		t.Errorf("timed out after %v, want about %v", d, timeout)
	}
	if err := c.Noop(); err == nil {
		t.Error("NOOP after a timeout succeeded")
	}
}

// A message may take longer than the idle timeout as a whole, as long as no read waits
// that long and it comes faster than pace.MinRate on average.
func TestIdleTimeoutIsNotTotal(t *testing.T) {
	// Generous numbers: the test must hold on a loaded machine.
	const timeout = time.Second
	line := strings.Repeat("x", 500) // 2 KB/s at a line each quarter second
	addr := fake(t, func(p *peer) {
		p.loggedIn()
		p.expect("RETR 1")
		p.send("+OK")
		// Lines a quarter of the timeout apart: the whole takes half as long again as the
		// timeout, but no read waits long.
		for i := 0; i < 7; i++ {
			p.send(line)
			time.Sleep(timeout / 4)
		}
		p.send(".")
		p.expect("RETR 2")
		p.send("+OK", "first line")
		p.line() // stall mid-message until the client gives up and closes
	})
	c := dialTimeout(t, addr, timeout)
	r := retr1(t, c)
	if b, err := io.ReadAll(r); err != nil || string(b) != strings.Repeat(line+"\n", 7) {
		t.Fatalf("slow message: %q, %v", b, err)
	}
	r, err := c.Retr(2)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(r)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("stalled message: %q, %v; want a deadline error", b, err)
	}
}

// TestTrickleIsCutOff: a server that sends a message a short line at a time, each just
// before the idle timeout would end the read, is cut off once it has fallen behind
// pace.MinRate for about the timeout, with a *pace.SlowError (still a timeout error),
// not after the whole message; the connection is unusable after it.
func TestTrickleIsCutOff(t *testing.T) {
	const timeout = time.Second
	addr := fake(t, func(p *peer) {
		p.loggedIn()
		p.expect("RETR 1")
		p.send("+OK", "Subject: slow", "")
		for i := 0; i < 15; i++ { // 9 seconds in all; the client leaves long before
			if _, err := p.conn.Write([]byte("x\r\n")); err != nil {
				return // cut off
			}
			time.Sleep(timeout * 6 / 10)
		}
		p.t.Error("fake server: the client took the whole trickled message")
	})
	c := dialTimeout(t, addr, timeout)
	r := retr1(t, c)
	start := time.Now()
	b, err := io.ReadAll(r)
	var slow *pace.SlowError
	if !errors.As(err, &slow) || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("trickled message: %d bytes, %v; want a *pace.SlowError wrapping the deadline", len(b), err)
	}
	// The budget of 1s drains by about 0.6s a line: the third or fourth wait fails.
	if d := time.Since(start); d > 5*timeout {
		t.Errorf("cut off after %v, want within a few idle timeouts", d)
	}
	if err := c.Noop(); err == nil {
		t.Error("NOOP after the cut succeeded")
	}
}

func TestCutMidRetr(t *testing.T) {
	for _, tc := range []struct{ name, sent string }{
		{"mid line", "Subject: x\r\n\r\nhalf a li"},
		{"after a line", "Subject: x\r\n\r\nwhole line\r\n"},
		{"after a lone dot", "Subject: x\r\n\r\n."},
		{"after dot CR", "Subject: x\r\n\r\n.\r"},
		{"nothing", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := fake(t, func(p *peer) {
				p.loggedIn()
				p.expect("RETR 1")
				p.send("+OK")
				p.raw(tc.sent)
				p.conn.Close()
			})
			c := dial(t, addr)
			login(t, c)
			r, err := c.Retr(1)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(r)
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("ReadAll = %q, %v; want io.ErrUnexpectedEOF", b, err)
			}
			if err := r.Close(); !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("Close = %v, want the same error", err)
			}
			if err := c.Noop(); err == nil {
				t.Error("NOOP on a cut connection succeeded")
			}
		})
	}
}

func TestMessageReaderHoldsTheConnection(t *testing.T) {
	addr := fake(t, func(p *peer) {
		p.loggedIn()
		p.expect("RETR 1")
		p.send("+OK", "line 1", "line 2", "..line 3", ".")
		p.expect("TOP 2 0")
		p.send("+OK", "Subject: top", "", ".")
		p.expect("DELE 1")
		p.send("+OK deleted")
		p.expect("QUIT")
		p.send("+OK bye")
	})
	c := dial(t, addr)
	login(t, c)
	r, err := c.Retr(1)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3)
	if _, err := io.ReadFull(r, buf); err != nil {
		t.Fatal(err)
	}
	if err := c.Noop(); !errors.Is(err, ErrMessageOpen) {
		t.Errorf("NOOP with an open message: %v, want ErrMessageOpen", err)
	}
	if err := c.Quit(); !errors.Is(err, ErrMessageOpen) {
		t.Errorf("QUIT with an open message: %v, want ErrMessageOpen", err)
	}
	if err := r.Close(); err != nil { // drains "e 1", "line 2", ".line 3"
		t.Fatal(err)
	}
	if _, err := r.Read(buf); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Read after Close: %v", err)
	}
	r, err = c.Top(2, 0)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(r); err != nil || string(b) != "Subject: top\n\n" {
		t.Errorf("Top = %q, %v", b, err)
	}
	// Read to EOF without Close also frees the connection.
	if err := c.Dele(1); err != nil {
		t.Fatal(err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	if err := c.Noop(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("NOOP after Quit: %v, want net.ErrClosed", err)
	}
}

func TestQuitReportsUpdateFailure(t *testing.T) {
	addr := fake(t, func(p *peer) {
		p.loggedIn()
		p.expect("DELE 1")
		p.send("+OK")
		p.expect("QUIT")
		p.send("-ERR [SYS/TEMP] some deleted messages not removed")
	})
	c := dial(t, addr)
	login(t, c)
	if err := c.Dele(1); err != nil {
		t.Fatal(err)
	}
	var e *Error
	if err := c.Quit(); !errors.As(err, &e) || e.Command != "QUIT" || !e.Temporary() {
		t.Errorf("Quit = %v", err)
	}
}

func TestSTLS(t *testing.T) {
	cert, pool := testCert(t)
	t.Run("upgrade", func(t *testing.T) {
		addr := fake(t, func(p *peer) {
			p.send("+OK plaintext")
			p.expect("STLS")
			p.send("+OK begin TLS")
			if !p.startTLS(cert) {
				return
			}
			p.expect("CAPA")
			p.send("+OK", "USER", "SASL PLAIN", ".")
			p.expect("QUIT")
			p.send("+OK")
		})
		c, err := Dial(context.Background(), Options{Addr: addr, TLS: TLSStartTLS, TLSConfig: &tls.Config{RootCAs: pool}})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := c.TLSConnectionState(); !ok {
			t.Error("no TLS state")
		}
		if caps, err := c.Capabilities(); err != nil || !caps.Has("USER") {
			t.Errorf("caps %v, %v", caps, err)
		}
		if err := c.Quit(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("refused", func(t *testing.T) {
		addr := fake(t, func(p *peer) {
			p.send("+OK plaintext")
			p.expect("STLS")
			p.send("-ERR [SYS/PERM] no TLS here")
			if l := p.line(); l != "" {
				t.Errorf("client went on in plaintext with %q", l)
			}
		})
		_, err := Dial(context.Background(), Options{Addr: addr, TLS: TLSStartTLS, TLSConfig: &tls.Config{RootCAs: pool}})
		var e *Error
		if !errors.Is(err, ErrSTLSUnavailable) || !errors.As(err, &e) || e.Code != CodeSysPerm {
			t.Errorf("Dial = %v", err)
		}
	})
	t.Run("injected plaintext", func(t *testing.T) {
		addr := fake(t, func(p *peer) {
			p.send("+OK plaintext")
			p.expect("STLS")
			p.raw("+OK begin TLS\r\n+OK injected\r\n")
			p.line()
		})
		_, err := Dial(context.Background(), Options{Addr: addr, TLS: TLSStartTLS, TLSConfig: &tls.Config{RootCAs: pool}})
		if !errors.Is(err, errProtocol) {
			t.Errorf("Dial = %v, want a protocol error", err)
		}
	})
	t.Run("untrusted", func(t *testing.T) {
		_, otherPool := testCert(t)
		addr := fake(t, func(p *peer) {
			p.send("+OK plaintext")
			p.expect("STLS")
			p.send("+OK begin TLS")
			if p.startTLS(cert) {
				t.Error("handshake with an untrusted certificate succeeded")
			}
		})
		_, err := Dial(context.Background(), Options{Addr: addr, TLS: TLSStartTLS, TLSConfig: &tls.Config{RootCAs: otherPool}})
		var uae x509.UnknownAuthorityError
		if err == nil || !errors.As(err, &uae) {
			t.Errorf("Dial = %v, want an unknown-authority error", err)
		}
	})
}

// saslScript is a sasl.Client that answers challenges from a list and records them.
type saslScript struct {
	mech       string
	ir         []byte
	answers    [][]byte
	failOn     string // challenge on which Next fails
	challenges []string
}

func (s *saslScript) Start() (string, []byte, error) { return s.mech, s.ir, nil }

func (s *saslScript) Next(challenge []byte) ([]byte, error) {
	s.challenges = append(s.challenges, string(challenge))
	if string(challenge) == s.failOn {
		return nil, errors.New("mechanism refuses " + s.failOn)
	}
	if len(s.answers) == 0 {
		return nil, sasl.ErrUnexpectedServerChallenge
	}
	a := s.answers[0]
	s.answers = s.answers[1:]
	return a, nil
}

func TestAuth(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	t.Run("challenges", func(t *testing.T) {
		addr := fake(t, func(p *peer) {
			p.send("+OK")
			p.expect("AUTH LOGIN " + b64("u")) // go-sasl sends the user name at once
			p.send("+ " + b64("Password:"))
			p.expect(b64("pass-word"))
			p.send("+OK logged in")
		})
		c := dial(t, addr)
		if err := c.Auth(sasl.NewLoginClient("u", "pass-word")); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("empty and long initial responses", func(t *testing.T) {
		long := strings.Repeat("t", 400) // an OAuth token does not fit on the AUTH line
		addr := fake(t, func(p *peer) {
			p.send("+OK")
			p.expect("AUTH X-EMPTY =")
			p.send("+OK")
			p.expect("AUTH XOAUTH2")
			p.send("+ ")
			p.expect(b64(long))
			p.send("+OK")
		})
		c := dial(t, addr)
		if err := c.Auth(&saslScript{mech: "X-EMPTY", ir: []byte{}}); err != nil {
			t.Fatal(err)
		}
		if err := c.Auth(&saslScript{mech: "XOAUTH2", ir: []byte(long)}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("mechanism fails", func(t *testing.T) {
		addr := fake(t, func(p *peer) {
			p.send("+OK")
			p.expect("AUTH XOAUTH2 " + b64("token"))
			p.send("+ " + b64(`{"status":"401"}`))
			p.expect("*")
			p.send("-ERR [AUTH] Authentication cancelled")
			p.expect("NOOP")
			p.send("+OK")
		})
		c := dial(t, addr)
		mech := &saslScript{mech: "XOAUTH2", ir: []byte("token"), failOn: `{"status":"401"}`}
		err := c.Auth(mech)
		var e *Error
		if !errors.As(err, &e) || !e.AuthFailed() || !strings.Contains(err.Error(), "mechanism refuses") {
			t.Errorf("Auth = %v", err)
		}
		if strings.Contains(err.Error(), b64("token")) || strings.Contains(err.Error(), "token") {
			t.Errorf("error shows the token: %v", err)
		}
		if err := c.Noop(); err != nil {
			t.Errorf("NOOP after a cancelled AUTH: %v", err)
		}
	})
}

func TestDialContext(t *testing.T) {
	addr := fake(t, func(p *peer) {
		p.line() // never greet; wait for the client to go away
	})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Dial(ctx, Options{Addr: addr, Timeout: time.Minute})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Dial = %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Dial took %v", d)
	}
}

func TestProtocolErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply []string
	}{
		{"garbage status", []string{"HELLO"}},
		{"short STAT", []string{"+OK"}},
		{"line too long", []string{"+OK " + strings.Repeat("x", maxLine+10)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := fake(t, func(p *peer) {
				p.loggedIn()
				p.expect("STAT")
				p.send(tc.reply...)
				p.line()
			})
			c := dial(t, addr)
			login(t, c)
			if _, _, err := c.Stat(); !errors.Is(err, errProtocol) {
				t.Errorf("Stat = %v, want a protocol error", err)
			}
			if err := c.Noop(); err == nil {
				t.Error("the connection stayed usable after a protocol error")
			}
		})
	}
}

func TestParseTLSMode(t *testing.T) {
	for _, m := range []TLSMode{TLSNone, TLSStartTLS, TLSImplicit} {
		if got, err := ParseTLSMode(m.String()); err != nil || got != m {
			t.Errorf("ParseTLSMode(%q) = %v, %v", m.String(), got, err)
		}
	}
	if _, err := ParseTLSMode("ssl"); err == nil {
		t.Error("ParseTLSMode accepted ssl")
	}
}

// TestEndlessListing: a server whose UIDL listing never ends costs a bounded amount of
// memory: the client gives up after maxListLines lines with a protocol error, long
// before the idle timeout, instead of growing until memory runs out.
func TestEndlessListing(t *testing.T) {
	addr := fake(t, func(p *peer) {
		p.loggedIn()
		p.expect("UIDL")
		w := bufio.NewWriterSize(p.conn, 64<<10)
		w.WriteString("+OK\r\n")
		for i := 1; ; i++ {
			if _, err := fmt.Fprintf(w, "%d uid-%d\r\n", i, i); err != nil {
				return // the client hung up
			}
		}
	})
	c := dial(t, addr)
	login(t, c)
	_, err := c.UIDL()
	if err == nil || !strings.Contains(err.Error(), "reply longer than") || !errors.Is(err, ErrReplyTooLong) {
		t.Fatalf("UIDL of an endless listing: %v, want a bound error", err)
	}
}
