package dovecottest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// capDACReadSearch is CAP_DAC_READ_SEARCH (linux/capability.h): bypass read permission
// checks on files and read and search permission checks on folders; nothing else.
const capDACReadSearch = 2

// doveadmTimeout bounds one doveadm run.
const doveadmTimeout = 60 * time.Second

// exNotFound is doveadm's exit code for a mailbox that does not exist (EX_NOHOST).
const exNotFound = 68

// doveadmError is a failed doveadm run with its exit code and output.
type doveadmError struct {
	args   []string
	code   int
	stderr string
	err    error
}

func (e *doveadmError) Error() string {
	return fmt.Sprintf("doveadm %s: %v: %s", strings.Join(e.args, " "), e.err, strings.TrimSpace(e.stderr))
}

// run runs doveadm -c conf args with stdin. With asReader it runs as MailUID with
// CAP_DAC_READ_SEARCH (see the package doc); otherwise as root, and doveadm drops to the
// user's uid itself.
func (s *Server) run(asReader bool, stdin []byte, args ...string) ([]byte, error) {
	bin, err := lookBinary("doveadm")
	if err != nil {
		return nil, err
	}
	full := append([]string{"-c", s.conf}, args...)
	cmd := exec.Command(bin, full...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if asReader {
		cmd.Dir = filepath.Join(s.dir, "reader")
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Credential:  &syscall.Credential{Uid: MailUID, Gid: MailGID, Groups: []uint32{}},
			AmbientCaps: []uintptr{capDACReadSearch},
		}
	}
	if err := cmd.Start(); err != nil {
		if asReader {
			return nil, fmt.Errorf("start doveadm as uid %d with CAP_DAC_READ_SEARCH (needs root with that capability): %w", MailUID, err)
		}
		return nil, err
	}
	timer := time.AfterFunc(doveadmTimeout, func() { cmd.Process.Kill() })
	err = cmd.Wait()
	timer.Stop()
	if err != nil {
		code := -1
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		return stdout.Bytes(), &doveadmError{args: full, code: code, stderr: stderr.String(), err: err}
	}
	return stdout.Bytes(), nil
}

// Doveadm runs "doveadm -c ConfigPath args..." as root and returns its standard output; it
// fails t with doveadm's standard error when doveadm exits non-zero.
func (s *Server) Doveadm(t testing.TB, args ...string) []byte {
	t.Helper()
	out, err := s.run(false, nil, args...)
	if err != nil {
		t.Fatalf("dovecottest: %v", err)
	}
	return out
}

// Append stores raw as a new message in folder ("INBOX", "Junk", ...) of user's Maildir with
// doveadm save, creating the folder if needed. doveadm save rather than IMAP APPEND: no
// login, no literal syntax, and the bytes are kept exactly as given, line endings included
// (POP3 and IMAP then send them with CRLF line endings).
func (s *Server) Append(t testing.TB, user, folder string, raw []byte) {
	t.Helper()
	if _, ok := s.users[user]; !ok {
		t.Fatalf("dovecottest: Append: no user %q", user)
	}
	_, err := s.run(false, raw, "save", "-u", user, "-m", folder)
	var de *doveadmError
	if errors.As(err, &de) && de.code == exNotFound && !strings.EqualFold(folder, "INBOX") {
		if _, err = s.run(false, nil, "mailbox", "create", "-u", user, folder); err == nil {
			_, err = s.run(false, raw, "save", "-u", user, "-m", folder)
		}
	}
	if err != nil {
		t.Fatalf("dovecottest: Append: %v", err)
	}
}

// Count returns how many messages folder of user holds as Dovecot sees it, 0 for a folder
// that does not exist.
func (s *Server) Count(t testing.TB, user, folder string) int {
	t.Helper()
	out, err := s.run(false, nil, "-f", "json", "mailbox", "status", "-u", user, "messages", folder)
	var de *doveadmError
	if errors.As(err, &de) && de.code == exNotFound {
		return 0
	}
	if err != nil {
		t.Fatalf("dovecottest: Count: %v", err)
	}
	var rows []map[string]string
	if err := json.Unmarshal(out, &rows); err != nil || len(rows) != 1 {
		t.Fatalf("dovecottest: Count: unexpected doveadm output %q", out)
	}
	n, err := strconv.Atoi(rows[0]["messages"])
	if err != nil {
		t.Fatalf("dovecottest: Count: unexpected doveadm output %q", out)
	}
	return n
}

// readerMessage is one message as doveadm reports it.
type readerMessage struct {
	Mailbox   string `json:"mailbox"`
	GUID      string `json:"guid"` // for Maildir: the file name up to the first ':' or ','
	Size      string `json:"size.physical"`
	MessageID string `json:"hdr.message-id"`
}

// list returns the messages of every folder of the Maildir at maildir, in Dovecot's order,
// and the mail_location it used, whose control folder is then warm.
//
// QUIRK: with a new CONTROL folder, "fetch ... mailbox INBOX" (any single name) finds no
// message on its first run on Dovecot 2.3.19, while "mailbox *" finds them all. So every
// query names "*": list filters by folder here, and fetch selects its message by GUID.
func (s *Server) list(maildir string) ([]readerMessage, string, error) {
	loc, err := s.readerLocation(maildir)
	if err != nil {
		return nil, "", err
	}
	out, err := s.run(true, nil, "-f", "json", "-o", "mail_location="+loc,
		"fetch", "-u", readerUser, "mailbox guid size.physical hdr.message-id", "mailbox", "*", "all")
	if err != nil {
		return nil, "", err
	}
	var msgs []readerMessage
	if err := json.Unmarshal(out, &msgs); err != nil {
		return nil, "", fmt.Errorf("doveadm fetch: unexpected output %q: %v", out, err)
	}
	return msgs, loc, nil
}

// readerLocation returns the mail_location for reading the Maildir at maildir without
// writing into it: indexes in memory, uidlist and uidvalidity in a new control folder.
func (s *Server) readerLocation(maildir string) (string, error) {
	abs, err := filepath.Abs(maildir)
	if err != nil {
		return "", err
	}
	if strings.ContainsAny(abs, ":\n") {
		return "", fmt.Errorf("maildir path %q contains ':' (mail_location syntax)", abs)
	}
	if fi, err := os.Stat(abs); err != nil {
		return "", err
	} else if !fi.IsDir() {
		return "", fmt.Errorf("%s is not a folder", abs)
	}
	s.mu.Lock()
	s.scratch++
	n := s.scratch
	s.mu.Unlock()
	ctl := filepath.Join(s.dir, "reader", fmt.Sprintf("control-%d", n))
	if err := os.Mkdir(ctl, 0o700); err != nil {
		return "", err
	}
	if err := os.Chown(ctl, MailUID, MailGID); err != nil {
		return "", err
	}
	return fmt.Sprintf("maildir:%s:INDEX=MEMORY:CONTROL=%s", abs, ctl), nil
}

// MessageIDs returns the Message-ID header (angle brackets included, "" where a message has
// none) of every message doveadm finds in folder ("INBOX", "Junk", ...) of the Maildir at
// maildir, in Dovecot's order. A folder that does not exist yields none. maildir may belong
// to any user and need not be a user of s: see the package doc for how it is read without
// being changed.
func (s *Server) MessageIDs(t testing.TB, maildir, folder string) []string {
	t.Helper()
	msgs, _, err := s.list(maildir)
	if err != nil {
		t.Fatalf("dovecottest: MessageIDs %s %s: %v", maildir, folder, err)
	}
	ids := []string{}
	for _, m := range msgs {
		if m.Mailbox == folder || strings.EqualFold(folder, "INBOX") && strings.EqualFold(m.Mailbox, "INBOX") {
			ids = append(ids, m.MessageID)
		}
	}
	return ids
}

// Fetch returns the bytes doveadm returns for the message whose Message-ID is messageID
// (with or without angle brackets) in any folder of the Maildir at maildir, exactly as
// stored. It fails t unless exactly one message has that Message-ID, or if doveadm's
// size.physical disagrees with the bytes it returns (a Maildir ,S= size that lies).
func (s *Server) Fetch(t testing.TB, maildir, messageID string) []byte {
	t.Helper()
	raw, err := s.fetch(maildir, messageID)
	if err != nil {
		t.Fatalf("dovecottest: Fetch %s %s: %v", maildir, messageID, err)
	}
	return raw
}

func (s *Server) fetch(maildir, messageID string) ([]byte, error) {
	msgs, loc, err := s.list(maildir)
	if err != nil {
		return nil, err
	}
	want := normID(messageID)
	var found []readerMessage
	guids := map[string]int{}
	for _, m := range msgs {
		guids[m.GUID]++
		if normID(m.MessageID) == want {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		return nil, fmt.Errorf("%d messages have Message-ID %s (want exactly 1)", len(found), messageID)
	}
	m := found[0]
	if guids[m.GUID] != 1 {
		return nil, fmt.Errorf("%d messages have the Maildir base name %s", guids[m.GUID], m.GUID)
	}
	size, err := strconv.Atoi(m.Size)
	if err != nil {
		return nil, fmt.Errorf("size.physical %q: %v", m.Size, err)
	}
	// The pager formatter prints "text:\n" and the raw bytes, plus "\n" when they do not
	// end in one; json would turn 8-bit bytes that are not UTF-8 into U+FFFD.
	out, err := s.run(true, nil, "-f", "pager", "-o", "mail_location="+loc,
		"fetch", "-u", readerUser, "text", "mailbox", "*", "guid", m.GUID)
	if err != nil {
		return nil, err
	}
	// A value without a line break is printed after "text: " instead.
	switch {
	case bytes.HasPrefix(out, []byte("text:\n")), bytes.HasPrefix(out, []byte("text: ")):
		out = out[len("text:\n"):]
	default:
		return nil, fmt.Errorf("doveadm fetch text: unexpected output %.80q", out)
	}
	if len(out) < size || len(out) > size+1 {
		return nil, fmt.Errorf("doveadm returned %d bytes for a message of size.physical %d", len(out), size)
	}
	return out[:size], nil
}

func normID(id string) string {
	return strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(id), "<"), ">")
}

// readers holds the read-back server of each test that used MessageIDs or Fetch.
var readers sync.Map // testing.TB -> *Server

func readerFor(t testing.TB) *Server {
	t.Helper()
	if s, ok := readers.Load(t); ok {
		return s.(*Server)
	}
	s := Start(t, Options{noListeners: true})
	readers.Store(t, s)
	t.Cleanup(func() { readers.Delete(t) })
	return s
}

// MessageIDs is Server.MessageIDs on a Dovecot without listeners that is started on first
// use in t and stopped with t.
func MessageIDs(t testing.TB, maildir, folder string) []string {
	t.Helper()
	return readerFor(t).MessageIDs(t, maildir, folder)
}

// Fetch is Server.Fetch on a Dovecot without listeners that is started on first use in t
// and stopped with t.
func Fetch(t testing.TB, maildir, messageID string) []byte {
	t.Helper()
	return readerFor(t).Fetch(t, maildir, messageID)
}
