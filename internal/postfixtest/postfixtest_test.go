package postfixtest_test

import (
	"bufio"
	"errors"
	"net"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/internal/postfixtest"
	"github.com/mxdrop/mxdrop/internal/testenv"
)

const wait = 10 * time.Second

// send submits msg over SMTP from sender to rcpts and returns the error of each RCPT
// (nil when accepted). DATA is sent when at least one recipient was accepted; any
// other failure is t.Fatal.
func send(t *testing.T, addr, sender string, rcpts []string, msg string) []error {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
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
	if accepted > 0 {
		w, err := c.Data()
		if err != nil {
			t.Fatalf("DATA: %v", err)
		}
		if _, err := w.Write([]byte(strings.ReplaceAll(msg, "\n", "\r\n"))); err != nil {
			t.Fatalf("write message: %v", err)
		}
		if err := w.Close(); err != nil {
			t.Fatalf("end of DATA: %v", err)
		}
	}
	if err := c.Quit(); err != nil {
		t.Fatalf("QUIT: %v", err)
	}
	return errs
}

// sendOK is send where every recipient must be accepted.
func sendOK(t *testing.T, addr, sender string, rcpts []string, msg string) {
	t.Helper()
	for i, err := range send(t, addr, sender, rcpts, msg) {
		if err != nil {
			t.Fatalf("RCPT TO:<%s>: %v", rcpts[i], err)
		}
	}
}

// topFields returns the first n header fields of a file, unfolded, as "Name: value".
func topFields(t *testing.T, path string, n int) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var fields []string
	sc := bufio.NewScanner(f)
	for sc.Scan() && len(fields) <= n {
		line := sc.Text()
		if line == "" {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			fields[len(fields)-1] += " " + strings.TrimSpace(line)
			continue
		}
		fields = append(fields, line)
	}
	if len(fields) > n {
		fields = fields[:n]
	}
	return fields
}

func readMessage(t *testing.T, path string) (*mail.Message, string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := mail.ReadMessage(strings.NewReader(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m, string(b)
}

// checkOwner asserts the delivery uid owns a file with mode 0600.
func checkOwner(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != postfixtest.DeliveryUID || st.Gid != postfixtest.DeliveryGID || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: uid %d gid %d mode %v, want %d %d 0600", path, st.Uid, st.Gid, fi.Mode().Perm(), postfixtest.DeliveryUID, postfixtest.DeliveryGID)
	}
}

// checkLogClean fails the test for any problem line in the log.
func checkLogClean(t *testing.T, s *postfixtest.Server) {
	t.Helper()
	for _, line := range s.Problems() {
		t.Errorf("log: %s", line)
	}
}

// wantSMTPError asserts err is an SMTP reply with code and enhanced status prefix.
func wantSMTPError(t *testing.T, what string, err error, code int, enhanced string) {
	t.Helper()
	var te *textproto.Error
	if !errors.As(err, &te) {
		t.Errorf("%s: got %v, want %d %s", what, err, code, enhanced)
		return
	}
	if te.Code != code || !strings.HasPrefix(te.Msg, enhanced+" ") {
		t.Errorf("%s: got %d %s, want %d %s", what, te.Code, te.Msg, code, enhanced)
	}
}

const body = `From: Sender <sender@sender.test>
To: alice@example.com, Bob@Example.ORG
Subject: postfixtest
Message-ID: <postfixtest-1@sender.test>
Date: Mon, 02 Jan 2006 15:04:05 +0000

hello
`

func TestDropFolder(t *testing.T) {
	t.Parallel()
	s := postfixtest.Start(t, postfixtest.Options{Domains: []string{"example.com", "example.org"}})
	if !strings.HasPrefix(s.Addr(), "127.0.0.1:") {
		t.Fatalf("Addr %q is not on 127.0.0.1", s.Addr())
	}
	// Two header recipients and a Bcc (envelope only); Bob's case as a sender may write it.
	rcpts := []string{"alice@example.com", "Bob@Example.ORG", "hidden@example.com"}
	sendOK(t, s.Addr(), "sender@sender.test", rcpts, body)
	files := s.WaitMessages(s.DropFolder(), 3, wait)
	if len(files) != 3 {
		t.Fatalf("%d files in the drop folder, want 3: %v", len(files), files)
	}

	var got []string
	for _, f := range files {
		checkOwner(t, f)
		top := topFields(t, f, 4)
		rcpt := strings.TrimPrefix(top[2], "Delivered-To: ")
		got = append(got, rcpt)
		want := []string{"Return-Path: <sender@sender.test>", "X-Original-To: " + rcpt, "Delivered-To: " + rcpt}
		if !slices.Equal(top[:3], want) {
			t.Errorf("%s: top fields\n%q, want\n%q", f, top[:3], want)
		}
		if !strings.HasPrefix(top[3], "Received: from client.test (unknown [127.0.0.1]) by mx.postfixtest.test (Postfix) with ") {
			t.Errorf("%s: fourth field %q, want Postfix's Received", f, top[3])
		}
		m, raw := readMessage(t, f)
		if m.Header.Get("Message-Id") != "<postfixtest-1@sender.test>" || m.Header.Get("Subject") != "postfixtest" {
			t.Errorf("%s: header changed: %v", f, m.Header)
		}
		// Bcc privacy by construction: the hidden recipient is named only in its own copy.
		if rcpt != "hidden@example.com" && strings.Contains(raw, "hidden@") {
			t.Errorf("%s (for %s) names the Bcc recipient:\n%s", f, rcpt, raw)
		}
	}
	slices.Sort(got)
	if want := []string{"Bob@Example.ORG", "alice@example.com", "hidden@example.com"}; !slices.Equal(got, want) {
		t.Errorf("Delivered-To of the files %q, want %q (case as received)", got, want)
	}

	// A bounce (null sender) keeps its empty Return-Path.
	sendOK(t, s.Addr(), "", []string{"postmaster@example.com"}, "Subject: bounce\n\nbody\n")
	files = s.WaitMessages(s.DropFolder(), 4, wait)
	var found bool
	for _, f := range files {
		if top := topFields(t, f, 3); top[2] == "Delivered-To: postmaster@example.com" {
			found = true
			if top[0] != "Return-Path: <>" {
				t.Errorf("bounce: %q, want Return-Path: <>", top[0])
			}
		}
	}
	if !found {
		t.Errorf("no file for postmaster@example.com in %v", files)
	}

	// Unknown local parts are accepted (mxdrop decides); other domains are refused.
	errs := send(t, s.Addr(), "sender@sender.test", []string{"nobody-known@example.com", "x@other.test"}, body)
	if errs[0] != nil {
		t.Errorf("unknown local part rejected without a recipient map: %v", errs[0])
	}
	wantSMTPError(t, "RCPT for a foreign domain", errs[1], 554, "5.7.1")
	s.WaitMessages(s.DropFolder(), 5, wait)
	s.WaitQueueEmpty(wait)
	if tmp, _ := os.ReadDir(filepath.Join(s.DropFolder(), "tmp")); len(tmp) != 0 {
		t.Errorf("tmp/ not empty: %v", tmp)
	}
	checkLogClean(t, s)
}

func TestDropFolderPipe(t *testing.T) {
	t.Parallel()
	s := postfixtest.Start(t, postfixtest.Options{Mode: postfixtest.ModeDropPipe})
	rcpts := []string{"alice@example.com", "Bob@Example.COM", "hidden@example.com"}
	sendOK(t, s.Addr(), "sender@sender.test", rcpts, body)
	files := s.WaitMessages(s.DropFolder(), 1, wait)
	s.WaitQueueEmpty(wait)
	if files = s.WaitMessages(s.DropFolder(), 1, wait); len(files) != 1 {
		t.Fatalf("%d files, want 1 for all recipients: %v", len(files), files)
	}
	checkOwner(t, files[0])
	top := topFields(t, files[0], 3)
	if want := "Envelope-to: Bob@Example.COM, alice@example.com, hidden@example.com"; top[0] != want {
		// Postfix hands the recipients over sorted.
		t.Errorf("first field %q, want %q", top[0], want)
	}
	if top[1] != "Return-Path: <sender@sender.test>" || !strings.HasPrefix(top[2], "Received: ") {
		t.Errorf("top fields %q", top)
	}
	m, _ := readMessage(t, files[0])
	list, err := m.Header.AddressList("Envelope-To")
	if err != nil || len(list) != 3 {
		t.Errorf("Envelope-to does not parse as 3 addresses: %v %v", list, err)
	}

	sendOK(t, s.Addr(), "", []string{"alice@example.com"}, "Subject: bounce\n\nbody\n")
	files = s.WaitMessages(s.DropFolder(), 2, wait)
	var bounces int
	for _, f := range files {
		if top := topFields(t, f, 2); top[0] == "Envelope-to: alice@example.com" {
			bounces++
			if top[1] != "Return-Path: <>" {
				t.Errorf("bounce: %q, want Return-Path: <>", top[1])
			}
		}
	}
	if bounces != 1 {
		t.Errorf("%d bounce files, want 1: %v", bounces, files)
	}
	checkLogClean(t, s)
}

func TestSinkStopStart(t *testing.T) {
	t.Parallel()
	s := postfixtest.Start(t, postfixtest.Options{Mode: postfixtest.ModeSink, Domains: []string{"example.org"}})
	addr := s.Addr()
	const rcpt = "Sender@Example.ORG"
	dsn := "From: MAILER-DAEMON@mx.example.com\nSubject: Undelivered Mail\n\nsorry\n"
	sendOK(t, addr, "", []string{rcpt}, dsn)
	dir := s.Maildir(rcpt)
	if want := filepath.Join("example.org", "sender"); !strings.HasSuffix(dir, want) {
		t.Errorf("Maildir(%q) = %q, want it to end in %s", rcpt, dir, want)
	}
	files := s.WaitMessages(dir, 1, wait)
	top := topFields(t, files[0], 3)
	if want := []string{"Return-Path: <>", "X-Original-To: " + rcpt, "Delivered-To: " + rcpt}; !slices.Equal(top, want) {
		t.Errorf("top fields %q, want %q", top, want)
	}
	checkOwner(t, files[0])
	if other := s.Maildir("other@example.org"); other == dir {
		t.Errorf("two addresses share the Maildir %s", dir)
	}

	// The pipe can write the Maildir file before Postfix logs and removes the queue
	// file: a Stop in between leaves the message queued, and the restarted instance
	// delivers it again (Postfix's at-least-once delivery). Stop once the queue is empty.
	s.WaitQueueEmpty(wait)
	s.Stop()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s still accepts connections after Stop", addr)
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial after Stop: %v, want connection refused", err)
	}
	s.Stop() // stopping twice is harmless

	s.Start()
	if s.Addr() != addr {
		t.Fatalf("Addr after Start %s, want the same %s", s.Addr(), addr)
	}
	sendOK(t, addr, "", []string{rcpt}, dsn)
	s.Flush()
	if files := s.WaitMessages(dir, 2, wait); len(files) != 2 {
		t.Errorf("%d messages after restart, want 2", len(files))
	}
	s.WaitQueueEmpty(wait)
	checkLogClean(t, s)
}

func TestRecipientMap(t *testing.T) {
	t.Parallel()
	for _, mode := range []postfixtest.Mode{postfixtest.ModeDrop, postfixtest.ModeSink} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			s := postfixtest.Start(t, postfixtest.Options{
				Mode:              mode,
				Domains:           []string{"example.com", "catchall.example.org"},
				RelayRecipientMap: filepath.Join("..", "..", "testdata", "postfix", "recipients.example"),
			})
			ok := []string{
				"alice@example.com",
				"Alice@EXAMPLE.com",            // lookups ignore case
				"alice+news@example.com",       // recipient_delimiter = +
				"whoever@catchall.example.org", // @domain entry
			}
			unlisted := []string{"bob@example.com", "alice.smith@example.com"}
			errs := send(t, s.Addr(), "sender@sender.test", append(ok, unlisted...), body)
			for i, r := range ok {
				if errs[i] != nil {
					t.Errorf("listed %s rejected: %v", r, errs[i])
				}
			}
			for i, r := range unlisted {
				err := errs[len(ok)+i]
				wantSMTPError(t, "unlisted "+r, err, 550, "5.1.1")
				if err != nil && !strings.Contains(err.Error(), "User unknown in relay recipient table") {
					t.Errorf("unlisted %s: %v, want the relay recipient table text", r, err)
				}
			}
			s.WaitQueueEmpty(wait)
			if mode == postfixtest.ModeDrop {
				// Postfix drops duplicate recipients (case-insensitively) at cleanup:
				// alice@ and Alice@EXAMPLE make one file.
				if files := s.WaitMessages(s.DropFolder(), len(ok)-1, wait); len(files) != len(ok)-1 {
					t.Errorf("%d files, want %d", len(files), len(ok)-1)
				}
			} else {
				s.WaitMessages(s.Maildir("whoever@catchall.example.org"), 1, wait)
			}
			if _, err := os.Stat(filepath.Join("..", "..", "testdata", "postfix", "recipients.example.db")); err == nil {
				t.Errorf("postmap wrote into testdata")
			}
			checkLogClean(t, s)
		})
	}
}

func TestTwoInstances(t *testing.T) {
	t.Parallel()
	a := postfixtest.Start(t, postfixtest.Options{})
	b := postfixtest.Start(t, postfixtest.Options{Mode: postfixtest.ModeSink, Domains: []string{"example.net"}})
	if a.Addr() == b.Addr() || a.ConfigDir() == b.ConfigDir() {
		t.Fatalf("instances share %s / %s", a.Addr(), a.ConfigDir())
	}
	a.Stop()
	sendOK(t, b.Addr(), "", []string{"x@example.net"}, "Subject: t\n\nb\n")
	b.WaitMessages(b.Maildir("x@example.net"), 1, wait)
}

// A drop folder Postfix cannot write defers the mail (it stays queued, across a
// restart too) until Flush after the folder is repaired: the MTA side of "nothing is
// lost when mxdrop's spool is broken".
func TestDeferredThenFlush(t *testing.T) {
	t.Parallel()
	s := postfixtest.Start(t, postfixtest.Options{})
	newDir := filepath.Join(s.DropFolder(), "new")
	if err := os.Chmod(newDir, 0); err != nil {
		t.Fatal(err)
	}
	sendOK(t, s.Addr(), "sender@sender.test", []string{"alice@example.com"}, body)
	deadline := time.Now().Add(wait)
	for !strings.Contains(s.Log(), "status=deferred") {
		if time.Now().After(deadline) {
			t.Fatalf("no deferral in the log:\n%s", s.Log())
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.Stop()
	if n := s.QueueLen(); n != 1 {
		t.Fatalf("QueueLen after Stop = %d, want the deferred message", n)
	}
	if err := os.Chmod(newDir, 0o700); err != nil {
		t.Fatal(err)
	}
	s.Start()
	s.Flush()
	s.WaitMessages(s.DropFolder(), 1, wait)
	s.WaitQueueEmpty(wait)
}

// A checkout under a folder closed to others (a clone in /root, 0700 on Debian) runs its
// tests with TMPDIR below it: the instance still starts and delivers, because its folder
// is one Postfix's unprivileged processes can reach, outside TMPDIR.
func TestTMPDIRClosedToOthers(t *testing.T) {
	closed, tmp := testenv.BelowClosedFolder(t)
	t.Setenv("TMPDIR", tmp) // not parallel: TMPDIR is the process's
	s := postfixtest.Start(t, postfixtest.Options{})
	if strings.HasPrefix(s.ConfigDir(), closed) {
		t.Errorf("the instance's folder %s is below %s, which others cannot search", s.ConfigDir(), closed)
	}
	sendOK(t, s.Addr(), "sender@sender.test", []string{"alice@example.com"}, body)
	if files := s.WaitMessages(s.DropFolder(), 1, wait); len(files) != 1 {
		t.Fatalf("%d files in the drop folder, want 1", len(files))
	}
	checkLogClean(t, s)
}
