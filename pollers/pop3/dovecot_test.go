package pop3

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"

	"github.com/mxdrop/mxdrop/internal/dovecottest"
)

// The integration tests share one Dovecot (it takes a second to stop); each subtest has a
// user of its own, so their mailboxes do not meet.

func password(user string) string { return "pw-" + user + "-Secret!" }

func startDovecot(t testing.TB, users ...string) *dovecottest.Server {
	t.Helper()
	m := map[string]string{}
	for _, u := range users {
		m[u] = password(u)
	}
	return dovecottest.Start(t, dovecottest.Options{Users: m})
}

// dovecotSession dials the server's plain POP3 port and logs in as user.
func dovecotSession(t *testing.T, s *dovecottest.Server, user string) *Client {
	t.Helper()
	c, err := Dial(context.Background(), Options{Addr: s.POP3Addr(), Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(user, password(user)); err != nil {
		t.Fatal(err)
	}
	return c
}

// crlfToLF is what Retr does to line endings.
func crlfToLF(b []byte) []byte { return bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")) }

func retr(t *testing.T, c *Client, n int) []byte {
	t.Helper()
	r, err := c.Retr(n)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	return b
}

func uidls(t *testing.T, c *Client) []MessageUID {
	t.Helper()
	u, err := c.UIDL()
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestDovecot(t *testing.T) {
	s := startDovecot(t, "plain", "starttls", "implicit", "wrongpw", "uidl", "retr", "dele", "keep", "big", "mech", "pipe")
	ctx := context.Background()

	t.Run("plaintext", func(t *testing.T) {
		c, err := Dial(ctx, Options{Addr: s.POP3Addr()})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, ok := c.TLSConnectionState(); ok {
			t.Error("TLS state on a plaintext connection")
		}
		caps, err := c.Capabilities()
		if err != nil {
			t.Fatal(err)
		}
		if !caps.Has("STLS") || !caps.Has("UIDL") || !caps.Has("RESP-CODES") || !slices.Contains(caps.SASL(), "PLAIN") {
			t.Errorf("capabilities %v", caps)
		}
		if err := c.Login("plain", password("plain")); err != nil {
			t.Fatal(err)
		}
		if n, size, err := c.Stat(); err != nil || n != 0 || size != 0 {
			t.Errorf("Stat = %d, %d, %v", n, size, err)
		}
		if err := c.Quit(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("starttls", func(t *testing.T) {
		c, err := Dial(ctx, Options{Addr: s.POP3Addr(), TLS: TLSStartTLS, TLSConfig: s.TLSConfig()})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if st, ok := c.TLSConnectionState(); !ok || !st.HandshakeComplete {
			t.Error("no TLS after STLS")
		}
		caps, err := c.Capabilities()
		if err != nil || caps.Has("STLS") {
			t.Errorf("capabilities after STLS %v, %v", caps, err)
		}
		if err := c.AuthPlain("starttls", password("starttls")); err != nil {
			t.Fatal(err)
		}
		if err := c.Noop(); err != nil {
			t.Fatal(err)
		}
		if err := c.Quit(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("implicit", func(t *testing.T) {
		// Verified by IP address, with the CA read from its PEM file as a ca_file would be.
		pem, err := os.ReadFile(s.CAFile())
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		c, err := Dial(ctx, Options{Addr: s.POP3SAddr(), TLS: TLSImplicit, TLSConfig: &tls.Config{RootCAs: pool}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, ok := c.TLSConnectionState(); !ok {
			t.Error("no TLS state")
		}
		if err := c.Login("implicit", password("implicit")); err != nil {
			t.Fatal(err)
		}
		if err := c.Quit(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("certificate not trusted", func(t *testing.T) {
		_, otherPool := testCert(t)
		for _, tc := range []struct {
			name string
			opts Options
		}{
			{"starttls wrong CA", Options{Addr: s.POP3Addr(), TLS: TLSStartTLS, TLSConfig: &tls.Config{RootCAs: otherPool, ServerName: dovecottest.ServerName}}},
			{"implicit wrong CA", Options{Addr: s.POP3SAddr(), TLS: TLSImplicit, TLSConfig: &tls.Config{RootCAs: otherPool}}},
			{"implicit system roots", Options{Addr: s.POP3SAddr(), TLS: TLSImplicit}},
		} {
			c, err := Dial(ctx, tc.opts)
			var uae x509.UnknownAuthorityError
			if !errors.As(err, &uae) {
				t.Errorf("%s: Dial = %v, want x509.UnknownAuthorityError", tc.name, err)
			}
			if c != nil {
				c.Close()
			}
		}
		c, err := Dial(ctx, Options{Addr: s.POP3SAddr(), TLS: TLSImplicit, TLSConfig: &tls.Config{RootCAs: s.CertPool(), ServerName: "pop.example.org"}})
		var he x509.HostnameError
		if !errors.As(err, &he) {
			t.Errorf("wrong host name: Dial = %v, want x509.HostnameError", err)
		}
		if c != nil {
			c.Close()
		}
	})

	t.Run("wrong password", func(t *testing.T) {
		const wrong = "not-the-Secret!"
		c, err := Dial(ctx, Options{Addr: s.POP3Addr()})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for name, login := range map[string]func() error{
			"USER/PASS":  func() error { return c.Login("wrongpw", wrong) },
			"AUTH PLAIN": func() error { return c.AuthPlain("wrongpw", wrong) },
			"no user":    func() error { return c.Login("nobody-here", wrong) },
		} {
			err := login()
			var e *Error
			if !errors.As(err, &e) || !e.AuthFailed() || e.Temporary() {
				t.Errorf("%s: %v, want an authentication failure", name, err)
				continue
			}
			if strings.Contains(err.Error(), wrong) {
				t.Errorf("%s: the error shows the password: %v", name, err)
			}
			t.Logf("%s: %v", name, err)
		}
		// The session survives failed logins.
		if err := c.Login("wrongpw", password("wrongpw")); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("sasl LOGIN", func(t *testing.T) {
		c, err := Dial(ctx, Options{Addr: s.POP3Addr()})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Auth(sasl.NewLoginClient("mech", password("mech"))); err != nil {
			t.Fatal(err)
		}
		if err := c.Quit(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("UIDL stable", func(t *testing.T) {
		for i := 1; i <= 3; i++ {
			s.Append(t, "uidl", "INBOX", fmt.Appendf(nil, "Message-ID: <%d@uidl>\r\n\r\nbody %d\r\n", i, i))
		}
		c := dovecotSession(t, s, "uidl")
		first := uidls(t, c)
		if len(first) != 3 {
			t.Fatalf("UIDL = %v", first)
		}
		if u, err := c.UIDLOne(2); err != nil || u != first[1].UID {
			t.Errorf("UIDLOne(2) = %q, %v; want %q", u, err, first[1].UID)
		}
		var e *Error
		if _, err := c.UIDLOne(9); !errors.As(err, &e) {
			t.Errorf("UIDLOne(9) = %v, want *Error", err)
		}
		if err := c.Quit(); err != nil {
			t.Fatal(err)
		}
		if again := uidls(t, dovecotSession(t, s, "uidl")); !slices.Equal(again, first) {
			t.Errorf("second session: %v, first %v", again, first)
		}
		s.Restart(t)
		if again := uidls(t, dovecotSession(t, s, "uidl")); !slices.Equal(again, first) {
			t.Errorf("after a restart: %v, first %v", again, first)
		}
	})

	t.Run("RETR bytes", func(t *testing.T) {
		msgs := [][]byte{
			[]byte("Message-ID: <crlf@retr>\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n\r\n.leading dot\r\n.\r\n..two\r\n8-bit: caf\xc3\xa9 \xe9\r\nlast line without break"),
			[]byte("Message-ID: <lf@retr>\nSubject: bare LF\n\nline\n.\n"),
			[]byte("Message-ID: <empty-body@retr>\r\n\r\n"),
		}
		for _, m := range msgs {
			s.Append(t, "retr", "INBOX", m)
		}
		c := dovecotSession(t, s, "retr")
		sizes, err := c.List()
		if err != nil || len(sizes) != len(msgs) {
			t.Fatalf("List = %v, %v", sizes, err)
		}
		for i, m := range msgs {
			got := retr(t, c, i+1)
			// Dovecot sends CRLF line endings and adds one at the end where it is missing;
			// Retr gives LF.
			want := crlfToLF(m)
			if !bytes.HasSuffix(want, []byte("\n")) {
				want = append(want, '\n')
			}
			if !bytes.Equal(got, want) {
				t.Errorf("message %d:\n got %q\nwant %q", i+1, got, want)
			}
			// LIST counts the stored message with CRLF line endings (RFC 1939 section 11).
			if crlf := bytes.ReplaceAll(crlfToLF(m), []byte("\n"), []byte("\r\n")); sizes[i].Size != int64(len(crlf)) {
				t.Errorf("message %d: LIST size %d, want %d", i+1, sizes[i].Size, len(crlf))
			}
		}
		r, err := c.Top(1, 1)
		if err != nil {
			t.Fatal(err)
		}
		if b, err := io.ReadAll(r); err != nil || !bytes.HasSuffix(b, []byte("\n\n.leading dot\n")) {
			t.Errorf("TOP 1 1 = %q, %v", b, err)
		}
		var e *Error
		if _, err := c.Retr(99); !errors.As(err, &e) {
			t.Errorf("Retr(99) = %v, want *Error", err)
		}
		if err := c.Noop(); err != nil {
			t.Errorf("NOOP after -ERR: %v", err)
		}
	})

	t.Run("DELE and QUIT remove", func(t *testing.T) {
		s.Append(t, "dele", "INBOX", []byte("Message-ID: <1@dele>\r\n\r\none\r\n"))
		s.Append(t, "dele", "INBOX", []byte("Message-ID: <2@dele>\r\n\r\ntwo\r\n"))
		c := dovecotSession(t, s, "dele")
		if err := c.Dele(1); err != nil {
			t.Fatal(err)
		}
		if n, _, err := c.Stat(); err != nil || n != 1 {
			t.Errorf("Stat after DELE = %d, %v", n, err)
		}
		var e *Error
		if _, err := c.Retr(1); !errors.As(err, &e) {
			t.Errorf("Retr of a deleted message = %v, want *Error", err)
		}
		if err := c.Quit(); err != nil {
			t.Fatal(err)
		}
		if n := s.Count(t, "dele", "INBOX"); n != 1 {
			t.Errorf("%d messages after DELE and QUIT, want 1", n)
		}
		if got := retr(t, dovecotSession(t, s, "dele"), 1); !bytes.Contains(got, []byte("<2@dele>")) {
			t.Errorf("the wrong message was removed: %q is left", got)
		}
	})

	t.Run("pipelined RETR and DELE", func(t *testing.T) {
		const n = 150 // more than two pipeline windows
		for i := 1; i <= n; i++ {
			s.Append(t, "pipe", "INBOX", []byte(fmt.Sprintf("Message-ID: <%d@pipe>\r\n\r\nbody %d\r\n", i, i)))
		}
		c := dovecotSession(t, s, "pipe")
		if !c.Pipelining() {
			t.Fatal("Dovecot does not announce PIPELINING")
		}
		nums := make([]int, 0, n+1)
		for i := 1; i <= n; i++ {
			nums = append(nums, i)
		}
		nums = append(nums, n+1) // no such message
		var got []string
		refusedAt := -1
		err := c.RetrAll(nums, func(i int, r io.Reader, refused *Error) error {
			if refused != nil {
				refusedAt = i
				return nil
			}
			b, err := io.ReadAll(r)
			got = append(got, string(b))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != n || refusedAt != n {
			t.Fatalf("RetrAll: %d messages, refused at %d; want %d and %d", len(got), refusedAt, n, n)
		}
		for i, b := range got {
			if want := fmt.Sprintf("Message-ID: <%d@pipe>\n\nbody %d\n", i+1, i+1); b != want {
				t.Fatalf("message %d: %q, want %q", i+1, b, want)
			}
		}
		refused, err := c.DeleAll(nums[:n-1]) // all but the last
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range refused {
			if e != nil {
				t.Errorf("DELE %d refused: %v", nums[i], e)
			}
		}
		if err := c.Quit(); err != nil {
			t.Fatal(err)
		}
		if k := s.Count(t, "pipe", "INBOX"); k != 1 {
			t.Errorf("%d messages after DeleAll and QUIT, want 1", k)
		}
		if got := retr(t, dovecotSession(t, s, "pipe"), 1); !bytes.Contains(got, []byte(fmt.Sprintf("<%d@pipe>", n))) {
			t.Errorf("the wrong message is left: %q", got)
		}
	})

	t.Run("DELE without QUIT keeps", func(t *testing.T) {
		s.Append(t, "keep", "INBOX", []byte("Message-ID: <1@keep>\r\n\r\none\r\n"))
		c := dovecotSession(t, s, "keep")
		if err := c.Dele(1); err != nil {
			t.Fatal(err)
		}
		c.Close() // as if the poller crashed before QUIT
		// RSET also takes a deletion back.
		c = dovecotSession(t, s, "keep")
		if err := c.Dele(1); err != nil {
			t.Fatal(err)
		}
		if err := c.Rset(); err != nil {
			t.Fatal(err)
		}
		if err := c.Quit(); err != nil {
			t.Fatal(err)
		}
		// Dovecot ends the first session when it notices the disconnect; give it a moment
		// to be sure nothing is deleted late.
		time.Sleep(200 * time.Millisecond)
		if n := s.Count(t, "keep", "INBOX"); n != 1 {
			t.Errorf("%d messages, want 1", n)
		}
	})

	t.Run("5 MB message streams", func(t *testing.T) {
		var raw bytes.Buffer
		raw.WriteString("Message-ID: <big@stream>\r\nSubject: big\r\n\r\n")
		for i := 0; raw.Len() < 5<<20; i++ {
			if i%10 == 0 {
				raw.WriteString(".") // stuffed on the wire
			}
			fmt.Fprintf(&raw, "%07d %s\r\n", i, strings.Repeat("x", 66))
		}
		s.Append(t, "big", "INBOX", raw.Bytes())
		want := sha256.Sum256(crlfToLF(raw.Bytes()))
		wantLen := len(crlfToLF(raw.Bytes()))

		c := dovecotSession(t, s, "big")
		size, err := c.ListOne(1)
		if err != nil || size.Size != int64(raw.Len()) {
			t.Errorf("ListOne = %v, %v; want %d octets", size, err, raw.Len())
		}
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		r, err := c.Retr(1)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		n, err := io.Copy(h, r)
		if err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		if n != int64(wantLen) || !bytes.Equal(h.Sum(nil), want[:]) {
			t.Errorf("got %d bytes, want %d; digests equal: %v", n, wantLen, bytes.Equal(h.Sum(nil), want[:]))
		}
		// Streamed: far less allocated than the message's size.
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
			t.Errorf("retrieving %d bytes allocated %d bytes", n, alloc)
		}
		// Closing early drains the rest, and the session goes on.
		r, err = c.Retr(1)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(r, make([]byte, 1024)); err != nil {
			t.Fatal(err)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if err := c.Noop(); err != nil {
			t.Fatal(err)
		}
		if err := c.Quit(); err != nil {
			t.Fatal(err)
		}
	})
}

// BenchmarkRetrDovecot measures RETR of many small messages in one session, plaintext and
// implicit TLS: one op is one message.
func BenchmarkRetrDovecot(b *testing.B) {
	const count, size = 500, 4 << 10
	s := startDovecot(b, "bench")
	// Written straight into the Maildir: doveadm save takes ~20 ms a message.
	body := strings.Repeat(strings.Repeat("b", 78)+"\r\n", size/80)
	for i := 0; i < count; i++ {
		name := filepath.Join(s.Maildir("bench"), "new", fmt.Sprintf("%d.M%dP%d.bench", 1700000000+i, i, os.Getpid()))
		msg := fmt.Sprintf("Message-ID: <%d@bench>\r\nSubject: bench %d\r\n\r\n%s", i, i, body)
		if err := os.WriteFile(name, []byte(msg), 0o600); err != nil {
			b.Fatal(err)
		}
		if err := os.Chown(name, dovecottest.MailUID, dovecottest.MailGID); err != nil {
			b.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"plain", Options{Addr: s.POP3Addr()}},
		{"tls", Options{Addr: s.POP3SAddr(), TLS: TLSImplicit, TLSConfig: s.TLSConfig()}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			c, err := Dial(context.Background(), tc.opts)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			if err := c.Login("bench", password("bench")); err != nil {
				b.Fatal(err)
			}
			if n, _, err := c.Stat(); err != nil || n != count {
				b.Fatalf("Stat = %d, %v", n, err)
			}
			b.SetBytes(size)
			for i := 0; b.Loop(); i++ {
				r, err := c.Retr(i%count + 1)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, r); err != nil {
					b.Fatal(err)
				}
				r.Close()
			}
		})
	}
}
