package main

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/internal/dovecottest"
)

// TestPollersKill9 kills mxdrop with SIGKILL at random moments while a POP3 poller and
// an IMAP poller drain two accounts of a real Dovecot, and checks that every server
// message ends up in its Maildir exactly once and the server is empty at the end.
func TestPollersKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	srv := dovecottest.Start(t, dovecottest.Options{Users: map[string]string{"popuser": "pop-secret", "imapuser": "imap-secret"}})
	const perAccount = 500
	for _, u := range []string{"popuser", "imapuser"} {
		// The first message through Dovecot creates the Maildir; the rest are written
		// into its new/ directly, owned by the mail user, which is much faster.
		srv.Append(t, u, "INBOX", pollMsg(u, 0))
		md := srv.Maildir(u)
		for i := 1; i < perAccount; i++ {
			path := filepath.Join(md, "new", fmt.Sprintf("%d.M%dP1.test", time.Now().Unix(), i))
			if err := os.WriteFile(path, pollMsg(u, i), 0o600); err != nil {
				t.Fatal(err)
			}
			os.Chown(path, dovecottest.MailUID, dovecottest.MailGID)
		}
		if n := srv.Count(t, u, "INBOX"); n != perAccount {
			t.Fatalf("%s holds %d messages, want %d", u, n, perAccount)
		}
	}
	imapHost, imapPort := splitHostPort(t, srv.IMAPAddr())
	popHost, popPort := splitHostPort(t, srv.POP3Addr())
	e := newEnv(t, fmt.Sprintf(`pollers:
  - name: pop
    protocol: pop3
    host: %s
    port: %s
    tls: none
    interval: 1s
    timeout: 10s
    username: popuser
    auth: {method: password, password: pop-secret}
    keep: delete
    mode: single
    deliver_to: alice@example.com
  - name: imap
    protocol: imap
    host: %s
    port: %s
    tls: none
    interval: 1s
    timeout: 10s
    username: imapuser
    auth: {method: password, password: imap-secret}
    keep: delete
    mode: single
    deliver_to: bob@example.com
    idle: false
`, popHost, popPort, imapHost, imapPort))

	// Each run is killed while the pollers are at work, whatever the speed of the
	// machine: once the run has delivered something, after a random 0-2 milliseconds
	// more (every fourth run 0-25), so that the kill lands anywhere in a batch or a few
	// batches on (mid-fetch, between a delivery and its state commit, between the commit
	// and the deletion on the server). The kills
	// stop once 80% of the messages are delivered: a run with nothing left to deliver
	// would finish cleanly instead of being killed at work.
	newCount := func() int {
		n := 0
		for _, acct := range []string{"alice", "bob"} {
			ents, _ := os.ReadDir(filepath.Join(e.mail, acct, "new"))
			n += len(ents)
		}
		return n
	}
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	kills := 0
	for ; kills < 20 && newCount() < 2*perAccount*8/10; kills++ {
		before := newCount()
		p := e.start("run")
		deadline := time.Now().Add(30 * time.Second)
		for newCount() == before && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		delay := rng.Intn(3)
		if kills%4 == 3 {
			delay = rng.Intn(25)
		}
		time.Sleep(time.Duration(delay) * time.Millisecond)
		p.kill()
	}
	t.Logf("%d kills", kills)
	if kills < 3 {
		t.Errorf("only %d kills before 80%% of the messages were delivered; want at least 3", kills)
	}
	leftPop, leftIMAP := srv.Count(t, "popuser", "INBOX"), srv.Count(t, "imapuser", "INBOX")
	t.Logf("after the kills the server still holds %d POP3 and %d IMAP messages of %d each", leftPop, leftIMAP, perAccount)
	popDone, _ := maildirIDs(t, filepath.Join(e.mail, "alice"))
	imapDone, _ := maildirIDs(t, filepath.Join(e.mail, "bob"))
	t.Logf("and %d POP3 and %d IMAP messages were delivered", len(popDone), len(imapDone))
	if leftPop+leftIMAP == 0 || len(popDone)+len(imapDone) == 0 {
		t.Error("the kills did not interrupt work in progress: the crash path was not exercised")
	}
	p := e.start("run")
	waitUntil(t, "both accounts drained", 120*time.Second, func() bool {
		return srv.Count(t, "popuser", "INBOX") == 0 && srv.Count(t, "imapuser", "INBOX") == 0
	})
	// The last deletions follow the last deliveries; give the pollers a cycle to settle.
	time.Sleep(1500 * time.Millisecond)
	p.stop(t)
	for acct, user := range map[string]string{"alice": "popuser", "bob": "imapuser"} {
		ids, tmp := maildirIDs(t, filepath.Join(e.mail, acct))
		if tmp != 0 {
			t.Errorf("%s: %d files left in tmp/", acct, tmp)
		}
		for i := 0; i < perAccount; i++ {
			id := fmt.Sprintf("%s-%d@test", user, i)
			if ids[id] != 1 {
				t.Errorf("%s: %s delivered %d times", acct, id, ids[id])
			}
		}
		if len(ids) != perAccount {
			t.Errorf("%s: %d distinct messages, want %d", acct, len(ids), perAccount)
		}
	}
}

func pollMsg(user string, i int) []byte {
	return []byte(fmt.Sprintf("From: sender@remote.test\nTo: %s@provider.test\nSubject: poll %d\nMessage-ID: <%s-%d@test>\n\n%s\n",
		user, i, user, i, strings.Repeat("line of the body\n", 30)))
}

func splitHostPort(t *testing.T, addr string) (string, string) {
	t.Helper()
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		t.Fatalf("bad address %q", addr)
	}
	return addr[:i], addr[i+1:]
}

// TestLogContractPoller polls a real Dovecot once and checks that the documented poller
// fields appear in the message and cycle events.
func TestLogContractPoller(t *testing.T) {
	srv := dovecottest.Start(t, dovecottest.Options{Users: map[string]string{"popuser": "pop-secret"}})
	srv.Append(t, "popuser", "INBOX", pollMsg("popuser", 1))
	host, port := splitHostPort(t, srv.POP3Addr())
	e := newEnv(t, fmt.Sprintf(`pollers:
  - name: pop
    protocol: pop3
    host: %s
    port: %s
    tls: none
    username: popuser
    auth: {method: password, password: pop-secret}
    mode: single
    deliver_to: alice@example.com
`, host, port))
	var out, errb bytes.Buffer
	if err := execMxdrop(e, &out, &errb, "run", "--once").Run(); err != nil {
		t.Fatalf("run --once: %v\n%s", err, errb.String())
	}
	if !strings.Contains(out.String(), "pollers: fetched 1, delivered 1") {
		t.Errorf("summary %q", out.String())
	}
	msgKeys := eventKeys(t, errb.Bytes(), "message")
	for _, f := range []string{"poller", "uid", "file", "message_id", "outcome", "action", "size", "duration_ms"} {
		if !msgKeys[f] {
			t.Errorf("poller message events lack %q", f)
		}
	}
	cycleKeys := eventKeys(t, errb.Bytes(), "cycle")
	for _, f := range documentedFields(t, "cycle") {
		if !cycleKeys[f] {
			t.Errorf("documented cycle field %q is in no cycle event:\n%s", f, errb.String())
		}
	}
}
