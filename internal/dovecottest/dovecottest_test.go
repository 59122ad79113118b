package dovecottest

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// greet connects to addr (over TLS when cfg is set) and returns the server's first line.
func greet(t *testing.T, addr string, cfg *tls.Config) (string, error) {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	var c net.Conn
	var err error
	if cfg != nil {
		c, err = tls.DialWithDialer(d, "tcp", addr, cfg)
	} else {
		c, err = d.Dial("tcp", addr)
	}
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return bufio.NewReader(c).ReadString('\n')
}

// converse sends each command and returns everything the server said up to and including
// the line that starts with until after the last command.
func converse(t *testing.T, addr string, until string, cmds ...string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	var all strings.Builder
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range cmds {
		fmt.Fprintf(c, "%s\r\n", cmd)
	}
	for {
		line, err := r.ReadString('\n')
		all.WriteString(line)
		if err != nil {
			t.Fatalf("after %q: %v", all.String(), err)
		}
		if strings.HasPrefix(line, until) {
			return all.String()
		}
	}
}

func TestStartListenersAndTLS(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{Users: map[string]string{"alice": "secret"}, ExtraConfig: "login_greeting = mxdrop test ready\n"})

	for _, addr := range []string{s.IMAPAddr(), s.IMAPSAddr(), s.POP3Addr(), s.POP3SAddr()} {
		host, _, _ := net.SplitHostPort(addr)
		if host != Host {
			t.Errorf("listener %s is not on %s", addr, Host)
		}
	}
	if g, err := greet(t, s.IMAPAddr(), nil); err != nil || !strings.HasPrefix(g, "* OK") {
		t.Errorf("imap greeting %q, %v", g, err)
	}
	if g, err := greet(t, s.POP3Addr(), nil); err != nil || !strings.HasPrefix(g, "+OK mxdrop test ready") {
		t.Errorf("pop3 greeting %q, %v", g, err)
	}
	if g, err := greet(t, s.IMAPSAddr(), s.TLSConfig()); err != nil || !strings.HasPrefix(g, "* OK") {
		t.Errorf("imaps greeting %q, %v", g, err)
	}
	// The certificate verifies by IP address too, and from the PEM file.
	pem, err := os.ReadFile(s.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("CAFile holds no certificate")
	}
	if g, err := greet(t, s.POP3SAddr(), &tls.Config{RootCAs: pool, ServerName: Host}); err != nil || !strings.HasPrefix(g, "+OK") {
		t.Errorf("pop3s greeting %q, %v", g, err)
	}
	// Another server's certificate does not verify this one.
	other, _, otherPool, err := newCertificate()
	if err != nil || other == nil {
		t.Fatal(err)
	}
	if _, err := greet(t, s.POP3SAddr(), &tls.Config{RootCAs: otherPool, ServerName: ServerName}); err == nil {
		t.Error("pop3s verified with a foreign CA")
	}

	if caps := converse(t, s.POP3Addr(), ".", "CAPA"); !strings.Contains(caps, "STLS\r\n") {
		t.Errorf("pop3 CAPA without STLS:\n%s", caps)
	}
	if caps := converse(t, s.IMAPAddr(), "a OK", "a CAPABILITY"); !strings.Contains(caps, "STARTTLS") {
		t.Errorf("imap CAPABILITY without STARTTLS:\n%s", caps)
	}
	// Plaintext login works on the plain port (disable_plaintext_auth = no).
	if out := converse(t, s.POP3Addr(), "+OK Logged in", "USER alice", "PASS secret"); !strings.Contains(out, "+OK Logged in") {
		t.Errorf("pop3 plaintext login: %s", out)
	}

	// The Maildir is the one Dovecot delivers to, owned by the mail uid.
	fi, err := os.Stat(filepath.Join(s.Maildir("alice"), "new"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != MailUID || st.Gid != MailGID {
		t.Errorf("Maildir owned by %d:%d, want %d:%d", st.Uid, st.Gid, MailUID, MailGID)
	}
}

func TestAppendCountRestart(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{Users: map[string]string{"alice": "secret", "bob": "hunter2"}})
	s.Append(t, "alice", "INBOX", []byte("Message-ID: <1@test>\r\nSubject: one\r\n\r\nbody\r\n"))
	s.Append(t, "alice", "INBOX", []byte("Message-ID: <2@test>\nSubject: two\n\nbody\n"))
	s.Append(t, "alice", "Junk", []byte("Message-ID: <3@test>\r\nSubject: spam\r\n\r\nbuy\r\n"))

	check := func(user, folder string, want int) {
		t.Helper()
		if got := s.Count(t, user, folder); got != want {
			t.Errorf("Count(%s, %s) = %d, want %d", user, folder, got, want)
		}
	}
	check("alice", "INBOX", 2)
	check("alice", "Junk", 1)
	check("alice", "Nope", 0)
	check("bob", "INBOX", 0)

	if got, want := s.MessageIDs(t, s.Maildir("alice"), "INBOX"), []string{"<1@test>", "<2@test>"}; !slices.Equal(got, want) {
		t.Errorf("MessageIDs = %q, want %q", got, want)
	}
	if got := string(s.Fetch(t, s.Maildir("alice"), "2@test")); got != "Message-ID: <2@test>\nSubject: two\n\nbody\n" {
		t.Errorf("Fetch = %q", got)
	}

	s.Restart(t)
	check("alice", "INBOX", 2)
	if out := converse(t, s.POP3Addr(), "+OK 0 0", "USER bob", "PASS hunter2", "STAT"); !strings.Contains(out, "+OK 0 0") {
		t.Errorf("after restart: %s", out)
	}
	s.Stop(t)
	if _, err := greet(t, s.POP3Addr(), nil); err == nil {
		t.Error("POP3 still answers after Stop")
	}
	s.Stop(t) // a second Stop is a no-op
}

// writeFile writes a Maildir file the way a root-run mxdrop does: mode 0600.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// tree lists every path below root with its mode, owner, size and mtime.
func tree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		out = append(out, fmt.Sprintf("%s %v %d:%d %d %d", p, fi.Mode(), st.Uid, st.Gid, fi.Size(), fi.ModTime().UnixNano()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// newRootMaildir makes a Maildir owned by root with 0700 folders, as mxdrop running as root
// writes it, and a Junk folder in Maildir++ layout.
func newRootMaildir(t *testing.T) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "alice")
	for _, d := range []string{"", "cur", "new", "tmp", ".Junk", ".Junk/cur", ".Junk/new", ".Junk/tmp"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Dir(root), 0o700); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestReadForeignMaildir(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		Require(t) // skips or fails with the reason
	}
	md := newRootMaildir(t)
	// 8-bit bytes that are not UTF-8, a form feed, and no final line break: all must come
	// back as stored.
	first := "Message-ID: <first@example.com>\r\nSubject: caf\xe9\r\n\r\nline\r\n\f\r\nno final break"
	second := "Message-ID: <second@example.com>\nSubject: lf\n\nbody\n"
	spam := "Message-ID: <spam@example.com>\r\n\r\nbuy\r\n"
	writeFile(t, filepath.Join(md, "new", fmt.Sprintf("1700000000.M1P1.host,S=%d", len(first))), first)
	writeFile(t, filepath.Join(md, "cur", "1700000001.M2P2.host:2,S"), second)
	writeFile(t, filepath.Join(md, ".Junk", "new", "1700000002.M3P3.host"), spam)
	// Not delivered yet: a reader must not see it.
	writeFile(t, filepath.Join(md, "tmp", "1700000003.M4P4.host"), "Message-ID: <tmp@example.com>\r\n\r\n")
	before := tree(t, md)

	ids := MessageIDs(t, md, "INBOX")
	slices.Sort(ids)
	if want := []string{"<first@example.com>", "<second@example.com>"}; !slices.Equal(ids, want) {
		t.Errorf("INBOX: %q, want %q", ids, want)
	}
	if got := MessageIDs(t, md, "Junk"); !slices.Equal(got, []string{"<spam@example.com>"}) {
		t.Errorf("Junk: %q", got)
	}
	if got := MessageIDs(t, md, "Missing"); len(got) != 0 {
		t.Errorf("Missing: %q", got)
	}
	for id, want := range map[string]string{"<first@example.com>": first, "second@example.com": second, "spam@example.com": spam} {
		if got := string(Fetch(t, md, id)); got != want {
			t.Errorf("Fetch(%s) = %q, want %q", id, got, want)
		}
	}
	if after := tree(t, md); !slices.Equal(before, after) {
		t.Errorf("reading changed the Maildir:\nbefore %q\nafter  %q", before, after)
	}
}

func TestReadBrokenMaildir(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{noListeners: true})
	for _, tc := range []struct {
		name  string
		files map[string]string // path below the Maildir -> content
		id    string
		want  string // in the error
	}{
		{"size in name lies", map[string]string{"new/1700000000.M1P1.host,S=5": "Message-ID: <liar@example.com>\r\n\r\nbody\r\n"},
			"liar@example.com", "Cached message size smaller than expected"},
		{"delivered twice", map[string]string{"new/1700000001.M2P2.host": "Message-ID: <twin@example.com>\r\n\r\n", "cur/1700000002.M3P3.host:2,": "Message-ID: <twin@example.com>\r\n\r\n"},
			"twin@example.com", "2 messages have Message-ID"},
		{"only in tmp", map[string]string{"tmp/1700000003.M4P4.host": "Message-ID: <tmp@example.com>\r\n\r\n"},
			"tmp@example.com", "0 messages have Message-ID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			md := newRootMaildir(t)
			for name, content := range tc.files {
				writeFile(t, filepath.Join(md, name), content)
			}
			raw, err := s.fetch(md, tc.id)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Fetch(%s) = %q, %v; want an error with %q", tc.id, raw, err, tc.want)
			}
		})
	}
	if _, _, err := s.list(filepath.Join(t.TempDir(), "nonexistent")); err == nil {
		t.Error("listing a missing Maildir succeeded")
	}
}

func TestStartRejectsBadUsers(t *testing.T) {
	for _, users := range []map[string]string{{"a:b": "x"}, {"a": "x\ny"}, {readerUser: "x"}} {
		ft := &fatalRecorder{TB: t}
		func() {
			defer func() { recover() }()
			Start(ft, Options{Users: users})
		}()
		if !ft.fatal {
			t.Errorf("Start accepted users %q", users)
		}
	}
}

// fatalRecorder turns Fatalf and Skipf into recorded flags and a panic that the caller
// recovers.
type fatalRecorder struct {
	testing.TB
	fatal, skip bool
	msg         string
}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.fatal, f.msg = true, fmt.Sprintf(format, args...)
	panic("fatal")
}

func (f *fatalRecorder) Skipf(format string, args ...any) {
	f.skip, f.msg = true, fmt.Sprintf(format, args...)
	panic("skip")
}

func (f *fatalRecorder) Fatal(args ...any) { f.Fatalf("%s", fmt.Sprint(args...)) }
func (f *fatalRecorder) Skip(args ...any)  { f.Skipf("%s", fmt.Sprint(args...)) }

func TestRequireFailsUnderCI(t *testing.T) {
	saved := available
	defer func() { available = saved }()
	available = func() error { return errors.New("dovecot binaries missing: dovecot") }
	for _, ci := range []string{"true", ""} {
		t.Setenv("CI", ci)
		ft := &fatalRecorder{TB: t}
		func() {
			defer func() { recover() }()
			Require(ft)
		}()
		if ci == "true" && (!ft.fatal || ft.skip) || ci == "" && (ft.fatal || !ft.skip) {
			t.Errorf("CI=%q: fatal %v skip %v", ci, ft.fatal, ft.skip)
		}
		if !strings.Contains(ft.msg, "dovecot binaries missing") {
			t.Errorf("CI=%q: message %q does not say what is missing", ci, ft.msg)
		}
	}
}
