package pollers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goimap "github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"

	"github.com/mxdrop/mxdrop/configs"
)

// memIMAP is go-imap's in-memory server on loopback with one user "user"/"secret".
type memIMAP struct {
	host     string
	port     int
	user     *imapmemserver.User
	conns    atomic.Int32
	expunges atomic.Int32  // EXPUNGE and UID EXPUNGE commands
	idling   chan struct{} // a session has entered IDLE
	// liar, when set, is a message the server misrepresents in FETCH responses.
	liar atomic.Pointer[imapLiar]
	// sent counts the body bytes the liar's FETCH responses wrote.
	sent atomic.Int64
	stop chan struct{} // closed at the end of the test: a stalled liar gives up
}

// imapLiar is a message FETCH misrepresents: it gives RFC822.SIZE size, and, when
// literal is not 0, sends BODY[] as a literal announced at literal bytes of which it
// sends at most fakeEndlessCap, then nothing until the client leaves. The message must
// be the first of its folder (sequence number 1).
type imapLiar struct {
	uid     goimap.UID
	size    int64
	literal int64
}

// idleSession tells when the server enters IDLE, counts expunges, and tells the
// liar's lies.
type idleSession struct {
	imapserver.SessionIMAP4rev2
	idling   chan struct{}
	expunges *atomic.Int32
	m        *memIMAP
}

func (s idleSession) Fetch(w *imapserver.FetchWriter, numSet goimap.NumSet, options *goimap.FetchOptions) error {
	l := s.m.liar.Load()
	uids, ok := numSet.(goimap.UIDSet)
	if l == nil || !ok || !uids.Contains(l.uid) {
		return s.SessionIMAP4rev2.Fetch(w, numSet, options)
	}
	nums, ok := uids.Nums()
	if !ok {
		return fmt.Errorf("the liar needs explicit UIDs, got %v", uids)
	}
	var rest goimap.UIDSet
	for _, u := range nums {
		if u != l.uid {
			rest.AddNum(u)
		}
	}
	switch {
	case len(options.BodySection) == 0:
		// The sizes and dates of a listing (the poller's describe).
		mw := w.CreateMessage(1)
		mw.WriteUID(l.uid)
		if options.RFC822Size {
			mw.WriteRFC822Size(l.size)
		}
		if options.InternalDate {
			mw.WriteInternalDate(time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC))
		}
		if err := mw.Close(); err != nil {
			return err
		}
	case l.literal == 0:
		if err := s.SessionIMAP4rev2.Fetch(w, goimap.UIDSetNum(l.uid), options); err != nil {
			return err
		}
	default:
		mw := w.CreateMessage(1)
		mw.WriteUID(l.uid)
		lw := mw.WriteBodySection(options.BodySection[0], l.literal)
		x := []byte(strings.Repeat("x", 998) + "\r\n")
		for s.m.sent.Load() < min(l.literal, fakeEndlessCap) {
			n, err := lw.Write(x[:min(int64(len(x)), l.literal-s.m.sent.Load())])
			s.m.sent.Add(int64(n))
			if err != nil {
				return err
			}
		}
		select { // the literal's end, if ever, is not sent
		case <-s.m.stop:
		case <-time.After(20 * time.Second):
		}
		return errors.New("liar gives up")
	}
	if len(rest) == 0 {
		return nil
	}
	return s.SessionIMAP4rev2.Fetch(w, rest, options)
}

func (s idleSession) Expunge(w *imapserver.ExpungeWriter, uids *goimap.UIDSet) error {
	s.expunges.Add(1)
	return s.SessionIMAP4rev2.Expunge(w, uids)
}

func (s idleSession) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	select {
	case s.idling <- struct{}{}:
	default:
	}
	return s.SessionIMAP4rev2.Idle(w, stop)
}

// waitIdle waits until a session has entered IDLE. go-imap's memory server does not
// report at the start of IDLE what arrived just before it (Dovecot does), so tests of
// push append only once IDLE runs.
func (m *memIMAP) waitIdle(t *testing.T) {
	t.Helper()
	select {
	case <-m.idling:
		time.Sleep(20 * time.Millisecond) // the tracker registers right after
	case <-time.After(5 * time.Second):
		t.Fatal("the poller did not enter IDLE")
	}
}

type nopLogger struct{}

func (nopLogger) Printf(string, ...any) {}

// newMemIMAP starts a server with caps (nil: IMAP4rev2, which implies UIDPLUS and
// ESEARCH).
func newMemIMAP(t *testing.T, caps goimap.CapSet) *memIMAP {
	t.Helper()
	if caps == nil {
		caps = goimap.CapSet{goimap.CapIMAP4rev1: {}, goimap.CapIMAP4rev2: {}}
	}
	mem := imapmemserver.New()
	u := imapmemserver.NewUser("user", "secret")
	if err := u.Create("INBOX", nil); err != nil {
		t.Fatal(err)
	}
	mem.AddUser(u)
	m := &memIMAP{user: u, idling: make(chan struct{}, 16), stop: make(chan struct{})}
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			m.conns.Add(1)
			return idleSession{mem.NewSession().(imapserver.SessionIMAP4rev2), m.idling, &m.expunges, m}, nil, nil
		},
		Caps:         caps,
		InsecureAuth: true,
		Logger:       nopLogger{},
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	t.Cleanup(func() { close(m.stop) })
	a := ln.Addr().(*net.TCPAddr)
	m.host, m.port = a.IP.String(), a.Port
	return m
}

type literal struct {
	*bytes.Reader
}

func (m *memIMAP) append(t *testing.T, folder string, raw []byte) {
	t.Helper()
	if _, err := m.user.Append(folder, literal{bytes.NewReader(raw)}, &goimap.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
}

// renumber recreates folder holding msgs: the server gives it a new UIDVALIDITY.
func (m *memIMAP) renumber(t *testing.T, folder string, msgs ...[]byte) {
	t.Helper()
	if err := m.user.Delete(folder); err != nil {
		t.Fatal(err)
	}
	if err := m.user.Create(folder, nil); err != nil {
		t.Fatal(err)
	}
	for _, raw := range msgs {
		m.append(t, folder, raw)
	}
}

func (m *memIMAP) count(t *testing.T, folder string) int {
	t.Helper()
	d, err := m.user.Status(folder, &goimap.StatusOptions{NumMessages: true})
	if err != nil {
		t.Fatal(err)
	}
	return int(*d.NumMessages)
}

// client logs in as another client of the same mailbox.
func (m *memIMAP) client(t *testing.T) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialInsecure(net.JoinHostPort(m.host, strconv.Itoa(m.port)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Login("user", "secret").Wait(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (m *memIMAP) pollerConfig(extra func(*configs.Poller)) configs.Poller {
	pc := configs.Poller{
		Protocol: "imap", Host: m.host, Port: m.port, TLS: "none", IDLE: new(bool),
		Mode: "single", DeliverTo: "alice@example.com", Keep: "delete",
		Interval: configs.Duration(time.Hour),
	}
	if extra != nil {
		extra(&pc)
	}
	return pc
}

func TestIMAPDelete(t *testing.T) {
	srv := newMemIMAP(t, nil)
	e := newEnv(t, "alice@example.com")
	for _, id := range []string{"m1@x", "m2@x", "m3@x"} {
		srv.append(t, "INBOX", message(id, "To: alice@example.com"))
	}
	p := e.poller(srv.pollerConfig(nil))
	st := e.cycle(p)
	if st.Fetched != 3 || st.Delivered != 3 || st.Deleted != 3 || st.Kept != 0 || st.Errors != 0 {
		t.Fatalf("stats %+v", st)
	}
	e.wantDelivered("alice@example.com", "<m1@x>", "<m2@x>", "<m3@x>")
	if n := srv.count(t, "INBOX"); n != 0 {
		t.Fatalf("server still holds %d messages", n)
	}
	st = e.cycle(p)
	if st.Fetched != 0 {
		t.Fatalf("second cycle fetched %d", st.Fetched)
	}
	// Logs: one event per message with poller fields, one per cycle.
	log := e.log.String()
	if strings.Count(log, `"message":"message"`) != 3 || !strings.Contains(log, `"component":"poller"`) ||
		!strings.Contains(log, `"poller":"test"`) || !strings.Contains(log, `"uid":"1"`) ||
		!strings.Contains(log, `"message_id":"<m1@x>"`) || !strings.Contains(log, `"action":"deleted"`) ||
		strings.Count(log, `"message":"cycle"`) != 2 || !strings.Contains(log, `"duration_ms"`) {
		t.Fatalf("log lacks the contract's fields:\n%s", log)
	}
	// The spool is empty after the cycle.
	if ents, _ := os.ReadDir(filepath.Join(p.dir, "spool")); len(ents) != 0 {
		t.Fatalf("spool holds %d files", len(ents))
	}
}

// TestIMAPExpungeOnce checks that the batches of a cycle are flagged \Deleted as they
// are handled and expunged together at the end, or every expungeEvery messages.
func TestIMAPExpungeOnce(t *testing.T) {
	srv := newMemIMAP(t, nil)
	e := newEnv(t, "alice@example.com")
	const n = 3*batchMaxMessages + 7 // four batches
	for i := range n {
		srv.append(t, "INBOX", message(strconv.Itoa(i)+"@x", "To: alice@example.com"))
	}
	p := e.poller(srv.pollerConfig(nil))
	if st := e.cycle(p); st.Delivered != n || st.Deleted != n {
		t.Fatalf("stats %+v", st)
	}
	if k := srv.count(t, "INBOX"); k != 0 {
		t.Fatalf("server still holds %d messages", k)
	}
	if x := srv.expunges.Load(); x != 1 {
		t.Errorf("%d expunges for %d messages in four batches, want 1", x, n)
	}
}

func TestIMAPKeepForever(t *testing.T) {
	srv := newMemIMAP(t, nil)
	e := newEnv(t, "alice@example.com")
	srv.append(t, "INBOX", message("k1@x"))
	srv.append(t, "INBOX", message("k2@x"))
	p := e.poller(srv.pollerConfig(func(pc *configs.Poller) { pc.Keep = "forever" }))
	if st := e.cycle(p); st.Delivered != 2 || st.Kept != 2 || st.Deleted != 0 {
		t.Fatalf("stats %+v", st)
	}
	srv.append(t, "INBOX", message("k3@x"))
	if st := e.cycle(p); st.Fetched != 1 || st.Kept != 1 {
		t.Fatalf("second cycle %+v, want only the new message", st)
	}
	e.clock.Advance(1000 * 24 * time.Hour)
	if st := e.cycle(p); st.Fetched != 0 || st.Deleted != 0 {
		t.Fatalf("third cycle %+v", st)
	}
	e.wantDelivered("alice@example.com", "<k1@x>", "<k2@x>", "<k3@x>")
	if n := srv.count(t, "INBOX"); n != 3 {
		t.Fatalf("server holds %d, want 3", n)
	}
}

func TestIMAPKeepDays(t *testing.T) {
	srv := newMemIMAP(t, nil)
	e := newEnv(t, "alice@example.com")
	srv.append(t, "INBOX", message("d1@x"))
	p := e.poller(srv.pollerConfig(func(pc *configs.Poller) { pc.Keep, pc.KeepDays = "days", 2 }))
	e.cycle(p)
	e.clock.Advance(24 * time.Hour)
	srv.append(t, "INBOX", message("d2@x"))
	if st := e.cycle(p); st.Fetched != 1 || st.Deleted != 0 {
		t.Fatalf("day 1: %+v", st)
	}
	e.clock.Advance(24*time.Hour + time.Minute)
	if st := e.cycle(p); st.Fetched != 0 || st.Deleted != 1 {
		t.Fatalf("day 2: %+v, want d1 deleted", st)
	}
	if n := srv.count(t, "INBOX"); n != 1 {
		t.Fatalf("server holds %d, want 1", n)
	}
	e.clock.Advance(24 * time.Hour)
	if st := e.cycle(p); st.Deleted != 1 {
		t.Fatalf("day 3: %+v, want d2 deleted", st)
	}
	e.wantDelivered("alice@example.com", "<d1@x>", "<d2@x>")
	// The state forgets messages gone from the server.
	e.cycle(p)
	s, _, err := OpenState(p.dir, p.name, e.clock.Now(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if ss, _ := s.Scope("imap:INBOX"); len(ss.Entries) != 0 {
		t.Fatalf("state keeps %d entries of deleted messages", len(ss.Entries))
	}
}

func TestIMAPAlwaysDelete(t *testing.T) {
	srv := newMemIMAP(t, nil)
	e := newEnv(t, "alice@example.com")
	e.cfg.PollersAlwaysDelete = true
	srv.append(t, "INBOX", message("a1@x"))
	p := e.poller(srv.pollerConfig(func(pc *configs.Poller) { pc.Keep = "forever" }))
	if st := e.cycle(p); st.Deleted != 1 {
		t.Fatalf("stats %+v: pollers_always_delete ignored", st)
	}
}

func TestIMAPMaxPerCycle(t *testing.T) {
	srv := newMemIMAP(t, nil)
	e := newEnv(t, "alice@example.com")
	for _, id := range []string{"o1@x", "o2@x", "o3@x", "o4@x", "o5@x"} {
		srv.append(t, "INBOX", message(id))
	}
	p := e.poller(srv.pollerConfig(func(pc *configs.Poller) { pc.MaxPerCycle = 2 }))
	if st := e.cycle(p); st.Fetched != 2 || st.Pending != 3 {
		t.Fatalf("cycle 1: %+v", st)
	}
	e.wantDelivered("alice@example.com", "<o1@x>", "<o2@x>") // oldest first
	if st := e.cycle(p); st.Fetched != 2 || st.Pending != 1 {
		t.Fatalf("cycle 2: %+v", st)
	}
	e.wantDelivered("alice@example.com", "<o1@x>", "<o2@x>", "<o3@x>", "<o4@x>")
	if st := e.cycle(p); st.Fetched != 1 || st.Pending != 0 {
		t.Fatalf("cycle 3: %+v", st)
	}
}

func TestIMAPSeveralFolders(t *testing.T) {
	srv := newMemIMAP(t, nil)
	srv.user.Create("Lists/go", nil)
	e := newEnv(t, "alice@example.com")
	srv.append(t, "INBOX", message("f1@x"))
	srv.append(t, "Lists/go", message("f2@x"))
	p := e.poller(srv.pollerConfig(func(pc *configs.Poller) { pc.Folders = []string{"INBOX", "Lists/go", "Missing"} }))
	st, err := p.Cycle(context.Background())
	if err == nil || !strings.Contains(err.Error(), "Missing") {
		t.Fatalf("a missing folder must be reported: %v", err)
	}
	// The others were polled, so the schedule is not to back off for it.
	var partial *FolderErrors
	if !errors.As(err, &partial) {
		t.Errorf("error %T %v, want *FolderErrors", err, err)
	}
	if st.Delivered != 2 {
		t.Fatalf("a missing folder stopped the others: %+v", st)
	}
	e.wantDelivered("alice@example.com", "<f1@x>", "<f2@x>")

	// When no folder could be polled it is a failure like any other.
	p = e.poller(srv.pollerConfig(func(pc *configs.Poller) { pc.Name, pc.Folders = "none", []string{"Missing"} }))
	if _, err := p.Cycle(context.Background()); err == nil || errors.As(err, &partial) {
		t.Errorf("only a missing folder: %T %v, want a plain error", err, err)
	}
}

// Without UIDPLUS a plain EXPUNGE would remove every \Deleted message, also one
// another client flagged that the poller has not fetched yet.
func TestIMAPNoUIDPLUS(t *testing.T) {
	srv := newMemIMAP(t, goimap.CapSet{goimap.CapIMAP4rev1: {}})
	e := newEnv(t, "alice@example.com")
	srv.append(t, "INBOX", message("ours@x"))
	srv.append(t, "INBOX", message("theirs@x"))
	other := srv.client(t)
	if _, err := other.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	// Another client flags message 2 \Deleted without expunging it.
	store := &goimap.StoreFlags{Op: goimap.StoreFlagsAdd, Silent: true, Flags: []goimap.Flag{goimap.FlagDeleted}}
	if err := other.Store(goimap.SeqSetNum(2), store, nil).Close(); err != nil {
		t.Fatal(err)
	}
	p := e.poller(srv.pollerConfig(func(pc *configs.Poller) { pc.MaxPerCycle = 1 }))
	st := e.cycle(p)
	if st.Delivered != 1 || st.Deleted != 0 {
		t.Fatalf("stats %+v: expunged although an unfetched \\Deleted message was there", st)
	}
	if n := srv.count(t, "INBOX"); n != 2 {
		t.Fatalf("server holds %d, want 2", n)
	}
	if !strings.Contains(e.log.String(), "UIDPLUS") {
		t.Fatal("no warning about the missing UIDPLUS")
	}
	// The next cycle fetches message 2 too; now every \Deleted message is ours.
	if st := e.cycle(p); st.Delivered != 1 || st.Deleted != 2 {
		t.Fatalf("stats %+v", st)
	}
	if n := srv.count(t, "INBOX"); n != 0 {
		t.Fatalf("server holds %d", n)
	}
	e.wantDelivered("alice@example.com", "<ours@x>", "<theirs@x>")
}

func TestIMAPTooLarge(t *testing.T) {
	srv := newMemIMAP(t, nil)
	e := newEnv(t, "alice@example.com")
	srv.append(t, "INBOX", append(message("big@x"), bytes.Repeat([]byte("x"), 2000)...))
	srv.append(t, "INBOX", message("small@x"))
	p := e.poller(srv.pollerConfig(func(pc *configs.Poller) { pc.MaxMessageSize = 1000 }))
	for i := 0; i < 3; i++ {
		st := e.cycle(p)
		if st.TooLarge != 1 || st.Fetched > 1 {
			t.Fatalf("cycle %d: %+v", i, st)
		}
	}
	e.wantDelivered("alice@example.com", "<small@x>")
	if n := srv.count(t, "INBOX"); n != 1 {
		t.Fatalf("server holds %d, want the large message", n)
	}
	if c := strings.Count(e.log.String(), "larger than max_message_size"); c != 1 {
		t.Fatalf("too large reported %d times, want once", c)
	}
}

func TestIMAPCollection(t *testing.T) {
	srv := newMemIMAP(t, nil)
	e := newEnv(t, "alice@example.com", "bob@example.com", "misc@example.com")
	pc := srv.pollerConfig(func(pc *configs.Poller) {
		pc.Mode, pc.DeliverTo = "collection", ""
		pc.AcceptedDomains = []string{"example.com"}
	})
	// The provider holds one copy per recipient, each naming all recipients (To/Cc
	// only): every account must get exactly one copy, and the unknown recipient one
	// bounce.
	shared := "To: alice@example.com, bob@example.com, nobody@example.com, friend@other.org"
	srv.append(t, "INBOX", message("shared@x", shared))
	srv.append(t, "INBOX", message("shared@x", shared))
	srv.append(t, "INBOX", message("shared@x", shared))
	// Envelope headers of the provider, one recipient per copy.
	srv.append(t, "INBOX", message("env@x", "Delivered-To: alice@example.com", "To: list@lists.example"))
	srv.append(t, "INBOX", message("env@x", "Delivered-To: bob@example.com", "To: list@lists.example"))
	// Nothing for us: quarantined, and the server copy goes like a delivered one.
	srv.append(t, "INBOX", message("stray@x", "To: someone@other.org"))
	p := e.poller(pc)
	st := e.cycle(p)
	if st.Delivered != 3 || st.Duplicates != 2 || st.Quarantined != 1 || st.Deleted != 6 {
		t.Fatalf("stats %+v", st)
	}
	e.wantDelivered("alice@example.com", "<shared@x>", "<env@x>")
	e.wantDelivered("bob@example.com", "<shared@x>", "<env@x>")
	e.wantDelivered("misc@example.com")
	if n := e.bouncer.count(); n != 1 {
		t.Fatalf("%d bounces, want 1 for nobody@example.com", n)
	}
	q, _ := filepath.Glob(filepath.Join(e.cfg.StateDir, "ImportFailed", "test", "*.eml"))
	r, _ := filepath.Glob(filepath.Join(e.cfg.StateDir, "ImportFailed", "test", "*.json"))
	if len(q) != 1 || len(r) != 1 {
		t.Fatalf("quarantine holds %q and %q", q, r)
	}

	// A copy arriving in a later cycle, within the window, is still a duplicate;
	// after the window it is delivered again.
	srv.append(t, "INBOX", message("env@x", "Delivered-To: alice@example.com"))
	if st := e.cycle(p); st.Duplicates != 1 || st.Delivered != 0 {
		t.Fatalf("later copy: %+v", st)
	}
	e.clock.Advance(15 * 24 * time.Hour)
	srv.append(t, "INBOX", message("env@x", "Delivered-To: alice@example.com"))
	if st := e.cycle(p); st.Delivered != 1 {
		t.Fatalf("copy after the window: %+v", st)
	}

	// Unknown recipients to an account, when configured.
	pc.Name = "coll2"
	pc.UnknownRecipients = "misc@example.com"
	p2 := e.poller(pc)
	srv.append(t, "INBOX", message("unk@x", "Delivered-To: who@example.com"))
	if st := e.cycle(p2); st.Delivered != 1 {
		t.Fatalf("unknown_recipients: %+v", st)
	}
	e.wantDelivered("misc@example.com", "<unk@x>")
}

// A message whose import was interrupted (entry in flight), or whose state is lost,
// is delivered once, never twice.
func TestIMAPRecovery(t *testing.T) {
	srv := newMemIMAP(t, nil)
	e := newEnv(t, "alice@example.com")
	srv.append(t, "INBOX", message("r1@x"))
	srv.append(t, "INBOX", message("r2@x"))
	p := e.poller(srv.pollerConfig(func(pc *configs.Poller) { pc.Keep = "forever" }))
	e.cycle(p)

	// A crash after delivery and before "done": the entry is still in flight, and the
	// Message-ID keys of the duplicate window are not written yet.
	s, _, err := OpenState(p.dir, p.name, e.clock.Now(), false)
	if err != nil {
		t.Fatal(err)
	}
	ss, _ := s.Scope("imap:INBOX")
	en := ss.Entries["1"]
	en.Status = StatusInFlight
	s.Apply("imap:INBOX", Change{Put: map[string]Entry{"1": en}})
	s.PruneDups(e.clock.Now().Add(time.Hour))
	s.Close()
	if st := e.cycle(p); st.Fetched != 1 || st.Delivered != 1 {
		t.Fatalf("in-flight recovery: %+v", st)
	}
	e.wantDelivered("alice@example.com", "<r1@x>", "<r2@x>")

	// The state file is lost: reported, and nothing is delivered twice.
	if err := os.Remove(p.StatePath()); err != nil {
		t.Fatal(err)
	}
	srv.append(t, "INBOX", message("r3@x"))
	st := e.cycle(p)
	if st.Fetched != 3 {
		t.Fatalf("after loss: %+v", st)
	}
	e.wantDelivered("alice@example.com", "<r1@x>", "<r2@x>", "<r3@x>")
	if !strings.Contains(e.log.String(), `"reason":"state_lost"`) {
		t.Fatal("a lost state file was not reported")
	}

	// Corrupt: reported, moved aside, nothing delivered twice.
	os.WriteFile(p.StatePath(), []byte("garbage garbage garbage"), 0o600)
	if st := e.cycle(p); st.Fetched != 3 {
		t.Fatalf("after corruption: %+v", st)
	}
	e.wantDelivered("alice@example.com", "<r1@x>", "<r2@x>", "<r3@x>")
	if !strings.Contains(e.log.String(), `"reason":"state_corrupt"`) {
		t.Fatal("a corrupt state file was not reported")
	}
	if m, _ := filepath.Glob(p.StatePath() + ".corrupt-*"); len(m) != 1 {
		t.Fatalf("corrupt file not kept: %v", m)
	}
	// And the next cycle is a normal one again.
	if st := e.cycle(p); st.Fetched != 0 {
		t.Fatalf("after recovery: %+v", st)
	}
}

// A renumbered folder (new UIDVALIDITY) kept on the server is not fetched again.
func TestIMAPUIDValidityChange(t *testing.T) {
	srv := newMemIMAP(t, nil)
	e := newEnv(t, "alice@example.com")
	srv.append(t, "INBOX", message("v1@x"))
	srv.append(t, "INBOX", message("v2@x"))
	p := e.poller(srv.pollerConfig(func(pc *configs.Poller) { pc.Keep = "forever" }))
	e.cycle(p)
	srv.renumber(t, "INBOX", message("v1@x"), message("v2@x"), message("v3@x"))
	e.clock.Advance(30 * 24 * time.Hour) // past the duplicate window
	st := e.cycle(p)
	if st.Fetched != 1 || st.Delivered != 1 {
		t.Fatalf("after renumbering: %+v", st)
	}
	e.wantDelivered("alice@example.com", "<v1@x>", "<v2@x>", "<v3@x>")
	if !strings.Contains(e.log.String(), "UIDVALIDITY changed") {
		t.Fatal("renumbering not reported")
	}
}

// After a renumbering, a message that only shares a Message-ID with one delivered
// before (another size) is not taken for it: it is fetched and delivered, not deleted
// unfetched when the kept copy's time comes.
func TestIMAPUIDValidityChangeOtherMessage(t *testing.T) {
	srv := newMemIMAP(t, nil)
	e := newEnv(t, "alice@example.com")
	srv.append(t, "INBOX", message("v1@x"))
	p := e.poller(srv.pollerConfig(func(pc *configs.Poller) { pc.Keep, pc.KeepDays = "days", 1 }))
	e.cycle(p)
	srv.renumber(t, "INBOX", []byte("From: other@remote.example\r\nSubject: other\r\nMessage-ID: <v1@x>\r\n\r\nanother message, another body\r\n"))
	e.clock.Advance(2 * 24 * time.Hour)
	st := e.cycle(p)
	if st.Delivered != 1 {
		t.Fatalf("after renumbering: %+v: the other message was not delivered", st)
	}
	if got := e.delivered("alice@example.com"); len(got) != 2 {
		t.Fatalf("alice holds %q, want both messages", got)
	}
}

func TestIMAPWrongPassword(t *testing.T) {
	srv := newMemIMAP(t, nil)
	e := newEnv(t, "alice@example.com")
	p := e.poller(srv.pollerConfig(func(pc *configs.Poller) { pc.Username, pc.Auth.Password = "user", "wrong" }))
	_, err := p.Cycle(context.Background())
	var le *LoginError
	if !errors.As(err, &le) {
		t.Fatalf("cycle error %v is not a LoginError", err)
	}
	log := e.log.String()
	if !strings.Contains(log, `"level":"error"`) || !strings.Contains(log, `"reason":"login_failed"`) ||
		!strings.Contains(log, `"message":"login failed"`) || strings.Contains(log, "wrong") {
		t.Fatalf("login failure not logged clearly (or the password leaked):\n%s", log)
	}
}

// tls: starttls against a server without STARTTLS fails; it never logs in in plaintext.
func TestIMAPStartTLSRequired(t *testing.T) {
	srv := newMemIMAP(t, nil)
	e := newEnv(t, "alice@example.com")
	srv.append(t, "INBOX", message("s1@x"))
	p := e.poller(srv.pollerConfig(func(pc *configs.Poller) { pc.TLS = "starttls" }))
	if _, err := p.Cycle(context.Background()); err == nil || !strings.Contains(err.Error(), "starttls") {
		t.Fatalf("cycle error %v, want a STARTTLS failure", err)
	}
	if n := srv.count(t, "INBOX"); n != 1 {
		t.Fatal("message taken over plaintext")
	}
}

// A server that drops the connection mid-message causes a retry, not a loss.
func TestIMAPConnectionCut(t *testing.T) {
	srv := newMemIMAP(t, nil)
	e := newEnv(t, "alice@example.com")
	srv.append(t, "INBOX", message("c1@x"))
	srv.append(t, "INBOX", append(message("c2@x"), bytes.Repeat([]byte("y"), 20000)...))
	srv.append(t, "INBOX", message("c3@x"))
	proxy := newCutProxy(t, net.JoinHostPort(srv.host, strconv.Itoa(srv.port)))
	host, port := proxy.addr()
	p := e.poller(srv.pollerConfig(func(pc *configs.Poller) { pc.Host, pc.Port = host, port }))
	// Find how many bytes a cycle that fetches nothing reads, then cut inside c2.
	proxy.limit.Store(1500)
	_, err := p.Cycle(context.Background())
	if err == nil || proxy.cuts.Load() == 0 {
		t.Fatalf("cycle through the cutting proxy: err %v, cuts %d", err, proxy.cuts.Load())
	}
	got := e.delivered("alice@example.com")
	if len(got) > 1 {
		t.Fatalf("delivered %q before the cut", got)
	}
	if n := srv.count(t, "INBOX"); n != 3-len(got) && n != 3 {
		t.Fatalf("server holds %d after a cut with %d delivered", n, len(got))
	}
	proxy.limit.Store(0)
	e.cycle(p)
	e.wantDelivered("alice@example.com", "<c1@x>", "<c2@x>", "<c3@x>")
	if n := srv.count(t, "INBOX"); n != 0 {
		t.Fatalf("server holds %d", n)
	}
}

// IDLE: a message appended to the server arrives without waiting for the interval,
// also when the cycle ends in another folder and IDLE must select the first again.
func TestIMAPIdle(t *testing.T) {
	for _, folders := range [][]string{{"INBOX"}, {"INBOX", "Other"}} {
		t.Run(strings.Join(folders, "+"), func(t *testing.T) {
			srv := newMemIMAP(t, nil)
			srv.user.Create("Other", nil)
			e := newEnv(t, "alice@example.com")
			srv.append(t, "INBOX", message("i1@x"))
			yes := true
			p := e.poller(srv.pollerConfig(func(pc *configs.Poller) {
				pc.IDLE, pc.Interval, pc.Folders = &yes, configs.Duration(time.Hour), folders
			}))
			defer runPoller(p)()
			waitFor(t, 5*time.Second, func() bool { return len(e.delivered("alice@example.com")) == 1 })
			srv.waitIdle(t)
			srv.append(t, "INBOX", message("i2@x"))
			waitFor(t, 5*time.Second, func() bool { return len(e.delivered("alice@example.com")) == 2 })
			srv.waitIdle(t)
			srv.append(t, "INBOX", message("i3@x"))
			waitFor(t, 5*time.Second, func() bool { return len(e.delivered("alice@example.com")) == 3 })
			e.wantDelivered("alice@example.com", "<i1@x>", "<i2@x>", "<i3@x>")
			if c := srv.conns.Load(); c != 1 {
				t.Fatalf("%d connections, want one IDLE session", c)
			}
		})
	}
}

// runPoller runs p on its schedule (Run) until the returned stop is called (once or
// more), which waits for it to end.
func runPoller(p *Poller) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		p.Run(ctx)
		close(done)
	}()
	return func() {
		cancel()
		<-done
	}
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A hanging account never delays the others, and an inactive one is skipped.
func TestRunAllIndependent(t *testing.T) {
	srv := newMemIMAP(t, nil)
	e := newEnv(t, "alice@example.com", "bob@example.com")
	// A server that accepts and never says a word.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	hang := ln.Addr().(*net.TCPAddr)
	slow := e.poller(configs.Poller{Name: "slow", Protocol: "imap", Host: "127.0.0.1", Port: hang.Port, TLS: "none",
		Timeout: configs.Duration(time.Hour), Interval: configs.Duration(time.Hour), IDLE: new(bool),
		Mode: "single", DeliverTo: "bob@example.com", Username: "u", Auth: configs.PollerAuth{Password: "p"}})
	off := false
	inactive := e.poller(srv.pollerConfig(func(pc *configs.Poller) { pc.Name, pc.Active, pc.DeliverTo = "off", &off, "bob@example.com" }))
	good := e.poller(srv.pollerConfig(func(pc *configs.Poller) {
		pc.Name, pc.Interval = "good", configs.Duration(200*time.Millisecond)
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		RunAll(ctx, []*Poller{slow, inactive, good})
		close(done)
	}()
	srv.append(t, "INBOX", message("g1@x"))
	waitFor(t, 5*time.Second, func() bool { return len(e.delivered("alice@example.com")) == 1 })
	srv.append(t, "INBOX", message("g2@x"))
	waitFor(t, 5*time.Second, func() bool { return len(e.delivered("alice@example.com")) == 2 })
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("RunAll did not stop on cancel")
	}
	e.wantDelivered("bob@example.com")
}

func TestOnce(t *testing.T) {
	srv := newMemIMAP(t, nil)
	e := newEnv(t, "alice@example.com")
	srv.append(t, "INBOX", message("o1@x"))
	off := false
	a := e.poller(srv.pollerConfig(func(pc *configs.Poller) { pc.Name = "a" }))
	b := e.poller(srv.pollerConfig(func(pc *configs.Poller) { pc.Name, pc.Active = "b", &off }))
	bad := e.poller(srv.pollerConfig(func(pc *configs.Poller) {
		pc.Name, pc.Username, pc.Auth.Password = "bad", "user", "nope"
	}))
	stats, err := Once(context.Background(), []*Poller{a, b, bad})
	if len(stats) != 2 || stats[0].Poller != "a" || stats[0].Delivered != 1 || stats[1].Poller != "bad" {
		t.Fatalf("stats %+v", stats)
	}
	if err == nil || !strings.Contains(err.Error(), "poller bad") {
		t.Fatalf("error %v does not name the failed poller", err)
	}
}

// TestDoneTransactionFails makes the done transaction of a cycle's first batch fail.
// The second batch, fetched meanwhile, had its in-flight marks in that transaction, so
// it must not be imported; nothing is deleted from the server. The next cycle imports
// the first batch again as recovered (no second copy) and the rest once.
func TestDoneTransactionFails(t *testing.T) {
	srv := newMemIMAP(t, nil)
	e := newEnv(t, "alice@example.com")
	const n = 2*batchMaxMessages + 10
	var all []string
	for i := range n {
		id := fmt.Sprintf("done%d@x", i)
		srv.append(t, "INBOX", message(id, "To: alice@example.com"))
		all = append(all, "<"+id+">")
	}
	p := e.poller(srv.pollerConfig(nil))
	failed := 0
	p.stateFault = func(scope string, c Change) error {
		for _, en := range c.Put {
			if en.Status == StatusDone && failed == 0 {
				failed++
				return errors.New("no space left on device (injected)")
			}
		}
		return nil
	}
	st, err := p.Cycle(context.Background())
	if err == nil || !strings.Contains(err.Error(), "mark done") {
		t.Fatalf("cycle with a failing done transaction: %v", err)
	}
	if st.Delivered != batchMaxMessages || st.Deleted != 0 {
		t.Errorf("stats %+v: want the first batch delivered, nothing deleted", st)
	}
	if got := e.delivered("alice@example.com"); len(got) != batchMaxMessages {
		t.Errorf("%d messages delivered; want only the first batch's %d (the second rode on the failed transaction)", len(got), batchMaxMessages)
	}
	if k := srv.count(t, "INBOX"); k != n {
		t.Errorf("server holds %d of %d messages", k, n)
	}

	p.stateFault = nil
	st = e.cycle(p)
	// The first batch counts as delivered again: its copies are found, not written.
	if st.Delivered != n || st.Deleted != n {
		t.Errorf("second cycle %+v: want %d delivered, %d deleted", st, n, n)
	}
	e.wantDelivered("alice@example.com", all...)
	if k := srv.count(t, "INBOX"); k != 0 {
		t.Errorf("server still holds %d messages", k)
	}
}
