package main

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/internal/dovecottest"
)

// lmtpEnv is an mxdrop installation whose connector delivers into a real Dovecot over
// LMTP (its unix socket), with the users alice and bob.
func lmtpEnv(t *testing.T) (*env, *dovecottest.Server) {
	t.Helper()
	srv := dovecottest.Start(t, dovecottest.Options{
		Users:       map[string]string{"alice": "pw", "bob": "pw"},
		LMTP:        true,
		ExtraConfig: "auth_username_format = %Ln\n",
	})
	root := t.TempDir()
	e := &env{t: t, root: root, drop: filepath.Join(root, "drop"), mail: filepath.Join(root, "mail")}
	os.MkdirAll(e.drop, 0o750)
	e.cfgPath = filepath.Join(root, "mxdrop.yaml")
	e.writeConfig(fmt.Sprintf(`state_dir: ./state
workers: 8
log: {level: info, format: json}
lmtp:
  address: unix:%s
  connections: 4
  timeout: 10s
accounts:
  - address: alice@example.com
    aliases: [a.smith@example.com]
connectors:
  - name: mx
    drop_folder: ./drop
    subdomains: [example.com]
    settle: 100ms
    bounce: false
    delivery: lmtp
`, srv.LMTPSocket()))
	return e, srv
}

// serverIDs returns how often each Message-ID is in user's mailboxes, as Dovecot sees it.
func serverIDs(t *testing.T, srv *dovecottest.Server, user string) map[string]int {
	t.Helper()
	var rows []map[string]string
	out := srv.Doveadm(t, "-f", "json", "fetch", "-u", user, "hdr.message-id", "mailbox", "*", "all")
	if err := json.Unmarshal(out, &rows); err != nil {
		t.Fatalf("doveadm fetch: %v: %q", err, out)
	}
	ids := map[string]int{}
	for _, r := range rows {
		ids[strings.Trim(strings.TrimSpace(r["hdr.message-id"]), "<>")]++
	}
	return ids
}

// TestLMTPKill9: mxdrop delivering over LMTP into Dovecot is killed with SIGKILL twenty
// times while messages arrive; after a last clean run every message is in both
// mailboxes (alice by alias, bob as the server's user) at least once. Copies delivered
// twice (the server's 250 came, the drop file was not yet removed) are counted and
// reported: LMTP cannot close that window.
func TestLMTPKill9(t *testing.T) {
	e, srv := lmtpEnv(t)
	const kills, perRun = 20, 20
	rng := rand.New(rand.NewSource(1))
	produce := func(i int) {
		dropFile(t, e.drop, fmt.Sprintf("m%04d", i), msg(fmt.Sprintf("k%04d@test", i), "X-Original-To", "a.smith@example.com", "bob@example.com"))
	}
	left := func() int {
		l, c := dropLeft(t, e.drop)
		return len(l) + len(c)
	}
	for k := range kills {
		for i := k * perRun; i < (k+1)*perRun; i++ {
			produce(i)
		}
		before := left()
		p := e.start("run")
		deadline := time.Now().Add(30 * time.Second)
		for left() == before && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(time.Duration(rng.Intn(20)) * time.Millisecond)
		p.kill()
	}
	p := e.start("run")
	waitUntil(t, "the drop folder to empty", 60*time.Second, func() bool { return left() == 0 })
	p.stop(t)

	dups := 0
	for _, user := range []string{"alice", "bob"} {
		ids := serverIDs(t, srv, user)
		for i := range kills * perRun {
			n := ids[fmt.Sprintf("k%04d@test", i)]
			if n == 0 {
				t.Errorf("%s lacks message %d", user, i)
			}
			if n > 1 {
				dups += n - 1
			}
		}
	}
	if q, _ := os.ReadDir(filepath.Join(e.drop, "ImportFailed")); len(q) != 0 {
		t.Errorf("%d files quarantined", len(q))
	}
	// A kill can duplicate at most the transactions in flight: 4 sessions, 2 recipients.
	if limit := kills * 4 * 2; dups > limit {
		t.Errorf("%d duplicate copies, more than the %d transactions in flight at the kills could make", dups, limit)
	}
	t.Logf("%d kills, %d messages to 2 users: %d duplicate copies", kills, kills*perRun, dups)
}

// TestLMTPServerDown: with Dovecot stopped the messages stay in the drop folder (a
// temporary failure); once it is back they are delivered, each once.
func TestLMTPServerDown(t *testing.T) {
	e, srv := lmtpEnv(t)
	srv.Stop(t)
	p := e.start("run")
	for i := range 10 {
		dropFile(t, e.drop, fmt.Sprintf("d%02d", i), msg(fmt.Sprintf("down%02d@test", i), "X-Original-To", "alice@example.com", "bob@example.com"))
	}
	p.waitLog(t, "lmtp", 20*time.Second)
	time.Sleep(time.Second)
	if l, c := dropLeft(t, e.drop); len(l)+len(c) != 10 {
		t.Fatalf("with the server down %d files are left, want 10", len(l)+len(c))
	}
	srv.Restart(t)
	waitUntil(t, "the drop folder to empty", 120*time.Second, func() bool {
		l, c := dropLeft(t, e.drop)
		return len(l)+len(c) == 0
	})
	p.stop(t)
	for _, user := range []string{"alice", "bob"} {
		ids := serverIDs(t, srv, user)
		for i := range 10 {
			if n := ids[fmt.Sprintf("down%02d@test", i)]; n != 1 {
				t.Errorf("%s has message %d %d times, want 1", user, i, n)
			}
		}
	}
}

// TestLMTPPollers: a POP3 and an IMAP poller with delivery: lmtp hand what they fetch
// to Dovecot's LMTP (TCP this time), RCPT their deliver_to, which is no configured
// account; the messages leave the remote mailboxes only once delivered.
func TestLMTPPollers(t *testing.T) {
	srv := dovecottest.Start(t, dovecottest.Options{
		Users:       map[string]string{"popuser": "pw1", "imapuser": "pw2", "alice": "pw", "bob": "pw"},
		LMTP:        true,
		ExtraConfig: "auth_username_format = %Ln\n",
	})
	for i := range 3 {
		srv.Append(t, "popuser", "INBOX", pollMsg("popuser", i))
		srv.Append(t, "imapuser", "INBOX", pollMsg("imapuser", i))
	}
	popHost, popPort := splitHostPort(t, srv.POP3Addr())
	imapHost, imapPort := splitHostPort(t, srv.IMAPAddr())
	root := t.TempDir()
	e := &env{t: t, root: root, drop: filepath.Join(root, "drop"), mail: filepath.Join(root, "mail")}
	e.cfgPath = filepath.Join(root, "mxdrop.yaml")
	e.writeConfig(fmt.Sprintf(`state_dir: ./state
log: {level: info, format: json}
lmtp:
  address: %s
pollers:
  - name: pop
    protocol: pop3
    host: %s
    port: %s
    tls: none
    interval: 1s
    username: popuser
    auth: {password: pw1}
    deliver_to: alice@example.com
    delivery: lmtp
  - name: imap
    protocol: imap
    host: %s
    port: %s
    tls: none
    interval: 1s
    username: imapuser
    auth: {password: pw2}
    deliver_to: bob@example.com
    delivery: lmtp
    idle: false
`, srv.LMTPAddr(), popHost, popPort, imapHost, imapPort))
	p := e.start("run")
	waitUntil(t, "the remote mailboxes to empty", 60*time.Second, func() bool {
		return srv.Count(t, "popuser", "INBOX") == 0 && srv.Count(t, "imapuser", "INBOX") == 0
	})
	p.stop(t)
	if a, b := srv.Count(t, "alice", "INBOX"), srv.Count(t, "bob", "INBOX"); a != 3 || b != 3 {
		t.Errorf("alice has %d and bob %d messages, want 3 each", a, b)
	}
}

// TestLMTPQuitOnStop: when mxdrop stops, its idle LMTP sessions (on the unix socket:
// "from local") end with QUIT, which Dovecot logs as "Logged out" rather than as a
// closed connection.
func TestLMTPQuitOnStop(t *testing.T) {
	e, srv := lmtpEnv(t)
	p := e.start("run")
	dropFile(t, e.drop, "q1", msg("quit@test", "X-Original-To", "alice@example.com"))
	waitUntil(t, "the message delivered", 20*time.Second, func() bool {
		return serverIDs(t, srv, "alice")["quit@test"] == 1
	})
	p.stop(t)
	waitUntil(t, "Dovecot to log the session's end", 10*time.Second, func() bool {
		b, _ := os.ReadFile(srv.LogPath())
		return strings.Contains(string(b), "Disconnect from local")
	})
	b, _ := os.ReadFile(srv.LogPath())
	var ends []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "lmtp(") && strings.Contains(l, "Disconnect from local") {
			ends = append(ends, l)
		}
	}
	for _, l := range ends {
		if !strings.Contains(l, "Logged out") {
			t.Errorf("an LMTP session did not end with QUIT: %s", l)
		}
	}
}
