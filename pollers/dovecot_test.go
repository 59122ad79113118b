package pollers

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/internal/dovecottest"
)

// TestDovecot runs the pollers against a real Dovecot 2.3 (internal/dovecottest): both
// protocols, every TLS mode, the keep policies, max_per_cycle, both modes with
// duplicate suppression, IDLE push, a refused login and a connection cut mid-message.
// Under CI=true a missing Dovecot fails the test instead of skipping it.
func TestDovecot(t *testing.T) {
	cases := []string{"none", "starttls", "implicit", "keep-delete", "keep-forever", "keep-days",
		"max", "collection", "wrongpw", "cut", "badca", "idle", "recovery"}
	users := map[string]string{}
	for _, proto := range []string{"imap", "pop3"} {
		for _, c := range cases {
			users[proto+"-"+c] = "pw-" + c
		}
	}
	s := dovecottest.Start(t, dovecottest.Options{Users: users})

	for _, proto := range []string{"imap", "pop3"} {
		t.Run(proto, func(t *testing.T) {
			d := &dovecotCase{s: s, proto: proto}
			for _, mode := range []string{"none", "starttls", "implicit"} {
				t.Run("tls-"+mode, func(t *testing.T) { d.testTLS(t, mode) })
			}
			t.Run("keep-delete", d.testKeepDelete)
			t.Run("keep-forever", d.testKeepForever)
			t.Run("keep-days", d.testKeepDays)
			t.Run("max", d.testMaxPerCycle)
			t.Run("collection", d.testCollection)
			t.Run("wrongpw", d.testWrongPassword)
			t.Run("cut", d.testCut)
			t.Run("badca", d.testBadCA)
			t.Run("recovery", d.testRecovery)
			if proto == "imap" {
				t.Run("idle", d.testIdle)
			}
		})
	}
}

type dovecotCase struct {
	s     *dovecottest.Server
	proto string
}

// config is a poller of the user of this protocol and case, delivering to alice.
func (d *dovecotCase) config(c, tlsMode string) configs.Poller {
	imapPort, imapsPort, pop3Port, pop3sPort := d.s.Ports()
	port := map[string]int{"imap": imapPort, "pop3": pop3Port}[d.proto]
	if tlsMode == "implicit" {
		port = map[string]int{"imap": imapsPort, "pop3": pop3sPort}[d.proto]
	}
	return configs.Poller{
		Name: d.proto + "-" + c, Protocol: d.proto, Host: dovecottest.Host, Port: port, TLS: tlsMode,
		CAFile: d.s.CAFile(), Timeout: configs.Duration(10 * time.Second), Interval: configs.Duration(time.Hour),
		Username: d.user(c), Auth: configs.PollerAuth{Method: "password", Password: configs.Secret("pw-" + c)},
		Keep: "delete", Mode: "single", DeliverTo: "alice@example.com", IDLE: new(bool),
	}
}

func (d *dovecotCase) user(c string) string { return d.proto + "-" + c }

func (d *dovecotCase) append(t *testing.T, c string, raw []byte) {
	t.Helper()
	d.s.Append(t, d.user(c), "INBOX", raw)
}

func (d *dovecotCase) count(t *testing.T, c string) int {
	t.Helper()
	return d.s.Count(t, d.user(c), "INBOX")
}

// wantMaildir checks the Maildir through Dovecot's eyes as well as by reading files.
func (d *dovecotCase) wantMaildir(t *testing.T, e *env, addr string, want ...string) {
	t.Helper()
	e.wantDelivered(addr, want...)
	if got := d.s.MessageIDs(t, e.maildir(addr), "INBOX"); len(got) != len(want) {
		t.Fatalf("dovecot reads %d messages in %s, want %d", len(got), addr, len(want))
	}
}

func (d *dovecotCase) testTLS(t *testing.T, mode string) {
	e := newEnv(t, "alice@example.com")
	raw := message(d.proto+"-tls-"+mode+"@x", "To: alice@example.com")
	raw = append(raw, []byte(".leading dot\r\n..two dots\r\nlast line\r\n")...)
	d.append(t, mode, raw)
	p := e.poller(d.config(mode, mode))
	st := e.cycle(p)
	if st.Delivered != 1 || st.Deleted != 1 {
		t.Fatalf("stats %+v", st)
	}
	d.wantMaildir(t, e, "alice@example.com", "<"+d.proto+"-tls-"+mode+"@x>")
	got := d.s.Fetch(t, e.maildir("alice@example.com"), d.proto+"-tls-"+mode+"@x")
	// Dot-stuffing undone, CRLF stored as LF (the Maildir convention), nothing else changed.
	if !bytes.HasSuffix(got, []byte("\nbody of "+d.proto+"-tls-"+mode+"@x\n.leading dot\n..two dots\nlast line\n")) ||
		bytes.Contains(got, []byte("\r")) {
		t.Fatalf("body changed in transit:\n%q", got)
	}
	if n := d.count(t, mode); n != 0 {
		t.Fatalf("server holds %d", n)
	}
}

func (d *dovecotCase) testKeepDelete(t *testing.T) {
	e := newEnv(t, "alice@example.com")
	d.append(t, "keep-delete", message("kd1@x"))
	d.append(t, "keep-delete", message("kd2@x"))
	p := e.poller(d.config("keep-delete", "none"))
	if st := e.cycle(p); st.Delivered != 2 || st.Deleted != 2 {
		t.Fatalf("stats %+v", st)
	}
	if n := d.count(t, "keep-delete"); n != 0 {
		t.Fatalf("server holds %d", n)
	}
	if st := e.cycle(p); st.Fetched != 0 {
		t.Fatalf("second cycle %+v", st)
	}
	d.wantMaildir(t, e, "alice@example.com", "<kd1@x>", "<kd2@x>")
}

func (d *dovecotCase) testKeepForever(t *testing.T) {
	e := newEnv(t, "alice@example.com")
	d.append(t, "keep-forever", message("kf1@x"))
	cfg := d.config("keep-forever", "none")
	cfg.Keep = "forever"
	p := e.poller(cfg)
	e.cycle(p)
	d.append(t, "keep-forever", message("kf2@x"))
	e.clock.Advance(365 * 24 * time.Hour)
	if st := e.cycle(p); st.Fetched != 1 || st.Deleted != 0 {
		t.Fatalf("second cycle %+v", st)
	}
	if st := e.cycle(p); st.Fetched != 0 {
		t.Fatalf("third cycle %+v", st)
	}
	if n := d.count(t, "keep-forever"); n != 2 {
		t.Fatalf("server holds %d, want 2", n)
	}
	d.wantMaildir(t, e, "alice@example.com", "<kf1@x>", "<kf2@x>")
}

func (d *dovecotCase) testKeepDays(t *testing.T) {
	e := newEnv(t, "alice@example.com")
	d.append(t, "keep-days", message("kdays1@x"))
	cfg := d.config("keep-days", "none")
	cfg.Keep, cfg.KeepDays = "days", 3
	p := e.poller(cfg)
	e.cycle(p)
	e.clock.Advance(2 * 24 * time.Hour)
	d.append(t, "keep-days", message("kdays2@x"))
	if st := e.cycle(p); st.Fetched != 1 || st.Deleted != 0 {
		t.Fatalf("day 2: %+v", st)
	}
	e.clock.Advance(24 * time.Hour)
	if st := e.cycle(p); st.Fetched != 0 || st.Deleted != 1 {
		t.Fatalf("day 3: %+v", st)
	}
	if n := d.count(t, "keep-days"); n != 1 {
		t.Fatalf("server holds %d, want 1", n)
	}
	e.clock.Advance(2 * 24 * time.Hour)
	if st := e.cycle(p); st.Deleted != 1 {
		t.Fatalf("day 5: %+v", st)
	}
	if n := d.count(t, "keep-days"); n != 0 {
		t.Fatalf("server holds %d", n)
	}
	d.wantMaildir(t, e, "alice@example.com", "<kdays1@x>", "<kdays2@x>")
}

func (d *dovecotCase) testMaxPerCycle(t *testing.T) {
	e := newEnv(t, "alice@example.com")
	ids := []string{"m1@x", "m2@x", "m3@x", "m4@x", "m5@x"}
	for _, id := range ids {
		d.append(t, "max", message(id))
	}
	cfg := d.config("max", "none")
	cfg.MaxPerCycle = 2
	p := e.poller(cfg)
	for i, want := range []int{2, 2, 1} {
		st := e.cycle(p)
		if st.Fetched != want {
			t.Fatalf("cycle %d: %+v, want %d fetched", i, st, want)
		}
		var w []string
		for _, id := range ids[:2*i+want] {
			w = append(w, "<"+id+">")
		}
		e.wantDelivered("alice@example.com", w...) // oldest first
	}
	if n := d.count(t, "max"); n != 0 {
		t.Fatalf("server holds %d", n)
	}
}

// collection: per-recipient copies of one message reach each account once; a copy for an
// unknown recipient of an accepted domain bounces once; others' domains are ignored.
func (d *dovecotCase) testCollection(t *testing.T) {
	e := newEnv(t, "alice@example.com", "bob@example.com")
	cfg := d.config("collection", "none")
	cfg.Mode, cfg.DeliverTo, cfg.AcceptedDomains = "collection", "", []string{"example.com"}
	shared := "To: Alice <alice@example.com>, bob@example.com"
	for i := 0; i < 2; i++ {
		d.append(t, "collection", message("both@x", shared, "Cc: ghost@example.com, friend@other.org"))
	}
	d.append(t, "collection", message("one@x", "Delivered-To: bob@example.com", "To: team@lists.example"))
	d.append(t, "collection", message("one@x", "Delivered-To: alice@example.com", "To: team@lists.example"))
	p := e.poller(cfg)
	st := e.cycle(p)
	if st.Delivered != 3 || st.Duplicates != 1 || st.Deleted != 4 {
		t.Fatalf("stats %+v", st)
	}
	d.wantMaildir(t, e, "alice@example.com", "<both@x>", "<one@x>")
	d.wantMaildir(t, e, "bob@example.com", "<both@x>", "<one@x>")
	if n := e.bouncer.count(); n != 1 {
		t.Fatalf("%d bounces for ghost@example.com, want 1", n)
	}
	// Single mode: a second copy of a message delivered earlier is suppressed too.
	single := d.config("collection", "none")
	single.Name = "single"
	d.append(t, "collection", message("again@x"))
	d.append(t, "collection", message("again@x"))
	if st := e.cycle(e.poller(single)); st.Delivered != 1 || st.Duplicates != 1 {
		t.Fatalf("single: %+v", st)
	}
}

func (d *dovecotCase) testWrongPassword(t *testing.T) {
	e := newEnv(t, "alice@example.com")
	d.append(t, "wrongpw", message("w@x"))
	cfg := d.config("wrongpw", "starttls")
	cfg.Auth.Password = "not-the-password"
	p := e.poller(cfg)
	_, err := p.Cycle(context.Background())
	var le *LoginError
	if !errors.As(err, &le) {
		t.Fatalf("cycle error %v, want a LoginError", err)
	}
	log := e.log.String()
	if !strings.Contains(log, `"message":"login failed"`) || !strings.Contains(log, `"level":"error"`) ||
		strings.Contains(log, "not-the-password") {
		t.Fatalf("login failure not reported clearly, or the password leaked:\n%s", log)
	}
	if n := d.count(t, "wrongpw"); n != 1 {
		t.Fatalf("server holds %d", n)
	}
}

// A connection cut mid-message: a retry, not a loss and not a duplicate.
func (d *dovecotCase) testCut(t *testing.T) {
	e := newEnv(t, "alice@example.com")
	big := append(message("cut-big@x"), bytes.Repeat([]byte("0123456789abcdef\r\n"), 4000)...)
	d.append(t, "cut", message("cut-1@x"))
	d.append(t, "cut", big)
	d.append(t, "cut", message("cut-3@x"))
	cfg := d.config("cut", "none")
	target := net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))
	proxy := newCutProxy(t, target)
	cfg.Host, cfg.Port = proxy.addr()
	p := e.poller(cfg)
	proxy.limit.Store(4000) // well inside the large message
	if _, err := p.Cycle(context.Background()); err == nil || proxy.cuts.Load() == 0 {
		t.Fatalf("cycle through the cutting proxy: %v, %d cuts", err, proxy.cuts.Load())
	}
	if got := e.delivered("alice@example.com"); len(got) > 1 {
		t.Fatalf("delivered %q before the cut", got)
	}
	proxy.limit.Store(0)
	e.cycle(p)
	d.wantMaildir(t, e, "alice@example.com", "<cut-1@x>", "<cut-big@x>", "<cut-3@x>")
	if got := d.s.Fetch(t, e.maildir("alice@example.com"), "cut-big@x"); !bytes.HasSuffix(got, []byte("0123456789abcdef\n")) ||
		bytes.Count(got, []byte("0123456789abcdef")) != 4000 {
		t.Fatalf("large message damaged: %d bytes", len(got))
	}
	if n := d.count(t, "cut"); n != 0 {
		t.Fatalf("server holds %d", n)
	}
}

// Certificates are verified: without the test CA the handshake fails, and nothing
// falls back to plaintext.
func (d *dovecotCase) testBadCA(t *testing.T) {
	e := newEnv(t, "alice@example.com")
	d.append(t, "badca", message("ca@x"))
	for _, mode := range []string{"starttls", "implicit"} {
		cfg := d.config("badca", mode)
		cfg.CAFile = ""
		cfg.Name = "badca-" + mode
		_, err := e.poller(cfg).Cycle(context.Background())
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("%s without the CA: %v, want a certificate error", mode, err)
		}
	}
	if n := d.count(t, "badca"); n != 1 {
		t.Fatalf("server holds %d", n)
	}
}

// A lost state file, and an import interrupted after delivery, deliver nothing twice:
// the delivery names do not depend on the state (for POP3 they come from the UIDL and
// the message's Received date).
func (d *dovecotCase) testRecovery(t *testing.T) {
	e := newEnv(t, "alice@example.com")
	d.append(t, "recovery", message("rec1@x", "Received: from mx by pop; Tue, 4 Mar 2025 08:09:10 +0100"))
	d.append(t, "recovery", message("rec2@x"))
	cfg := d.config("recovery", "implicit")
	cfg.Keep = "forever"
	p := e.poller(cfg)
	e.cycle(p)
	if err := os.Remove(p.StatePath()); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(30 * 24 * time.Hour) // past the duplicate window: only the names protect
	if st := e.cycle(p); st.Fetched != 2 || st.Errors != 0 {
		t.Fatalf("after losing the state: %+v", st)
	}
	if !strings.Contains(e.log.String(), `"reason":"state_lost"`) {
		t.Fatal("lost state not reported")
	}
	d.wantMaildir(t, e, "alice@example.com", "<rec1@x>", "<rec2@x>")
	if st := e.cycle(p); st.Fetched != 0 {
		t.Fatalf("third cycle: %+v", st)
	}
}

// IDLE push: a message appended to the server arrives without waiting for interval.
func (d *dovecotCase) testIdle(t *testing.T) {
	e := newEnv(t, "alice@example.com")
	d.append(t, "idle", message("idle-1@x"))
	cfg := d.config("idle", "implicit")
	yes := true
	cfg.IDLE, cfg.Interval = &yes, configs.Duration(time.Hour)
	p := e.poller(cfg)
	stop := runPoller(p)
	defer stop()
	waitFor(t, 10*time.Second, func() bool { return len(e.delivered("alice@example.com")) == 1 })
	start := time.Now()
	d.append(t, "idle", message("idle-2@x"))
	waitFor(t, 10*time.Second, func() bool { return len(e.delivered("alice@example.com")) == 2 })
	t.Logf("pushed in %v", time.Since(start))
	waitFor(t, 10*time.Second, func() bool { return d.count(t, "idle") == 0 })
	stop()
	d.wantMaildir(t, e, "alice@example.com", "<idle-1@x>", "<idle-2@x>")
	if n := d.count(t, "idle"); n != 0 {
		t.Fatalf("server holds %d", n)
	}
	if strings.Contains(e.log.String(), "does not offer IDLE") {
		t.Fatal("IDLE not used")
	}
}
