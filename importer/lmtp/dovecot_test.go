package lmtp

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer"
	"github.com/mxdrop/mxdrop/internal/dovecottest"
)

// sink is a recording SMTP server on loopback: Dovecot's submission_host for Sieve
// vacation replies.
type sink struct {
	mu   sync.Mutex
	msgs []sunk
	addr string
}

type sunk struct {
	from string
	to   []string
	data []byte
}

type sinkSession struct {
	s   *sink
	cur sunk
}

func (x *sinkSession) Reset()        { x.cur = sunk{} }
func (x *sinkSession) Logout() error { return nil }
func (x *sinkSession) Mail(from string, _ *smtp.MailOptions) error {
	x.cur.from = from
	return nil
}
func (x *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	x.cur.to = append(x.cur.to, to)
	return nil
}
func (x *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return err
	}
	x.cur.data = b
	x.s.mu.Lock()
	x.s.msgs = append(x.s.msgs, x.cur)
	x.s.mu.Unlock()
	return nil
}

func startSink(t *testing.T) *sink {
	t.Helper()
	s := &sink{}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &sinkSession{s: s}, nil }))
	srv.Domain = "sink.test"
	srv.AllowInsecureAuth = true
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = l.Addr().String()
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return s
}

func (s *sink) received() []sunk {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sunk(nil), s.msgs...)
}

// aliceSieve files spam (X-Spam-Flag: YES, as mxdrop's spam check writes it) into Junk
// and "work" into Work, and answers everything else with a vacation reply.
const aliceSieve = `require ["fileinto", "vacation", "mailbox"];
if header :is "X-Spam-Flag" "YES" { fileinto :create "Junk"; stop; }
if header :contains "subject" "work" { fileinto :create "Work"; stop; }
vacation :days 1 :subject "Away" "I am away.";
`

// dovecotConfig is what the tests add to the harness: Sieve (Pigeonhole) in LMTP, the
// quota plugin with the maildir backend (20 KiB per user), vacation replies sent to
// the sink.
func dovecotConfig(sinkAddr string) string {
	return `# The harness's users are bare names: alice@example.com logs in and gets mail as alice.
auth_username_format = %Ln
mail_plugins = $mail_plugins quota
protocol lmtp {
  mail_plugins = $mail_plugins sieve
}
submission_host = ` + sinkAddr + `
plugin {
  sieve = file:~/sieve;active=~/.dovecot.sieve
  sieve_vacation_dont_check_recipient = yes
  quota = maildir:User quota
  quota_rule = *:storage=20K
}
`
}

// spamSubject is a Classifier that calls a message spam when its subject says so.
type spamSubject struct{}

func (spamSubject) Classify(_ context.Context, h *importer.Header, _ importer.Envelope, _ func() (io.ReadCloser, error)) (importer.Verdict, error) {
	s, _ := h.Get("subject")
	return importer.Verdict{Spam: strings.Contains(s, "spam"), Reason: "subject"}, nil
}

// TestDovecotLMTP delivers through a real Dovecot LMTP, on its unix socket and on TCP:
// Sieve fileinto, vacation (the reply reaches the sink), spam into Junk by a Sieve rule
// on X-Spam-Flag, an unknown user (5.1.1) and a full mailbox (5.2.2) as failed
// recipients with Dovecot's words, and a message for several users in one transaction,
// pipelined (RFC 2920).
func TestDovecotLMTP(t *testing.T) {
	sk := startSink(t)
	srv := dovecottest.Start(t, dovecottest.Options{
		Users:       map[string]string{"alice": "pw", "bob": "pw", "carol": "pw"},
		LMTP:        true,
		ExtraConfig: dovecotConfig(sk.addr),
	})
	script := filepath.Join(srv.Home("alice"), ".dovecot.sieve")
	if err := os.WriteFile(script, []byte(aliceSieve), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chown(script, dovecottest.MailUID, dovecottest.MailGID)

	for _, tc := range []struct{ name, address string }{
		{"unix", "unix:" + srv.LMTPSocket()},
		{"tcp", srv.LMTPAddr()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl, err := New(configs.LMTP{Address: tc.address, Connections: 2, Timeout: configs.Duration(10 * time.Second)}, "mx.test")
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			im, err := importer.New(importer.Options{
				// bob is an account with an alias; the others are the server's users.
				Accounts: []configs.Account{{Address: "bob@example.com", Aliases: []string{"robert@example.com"}}},
				Domains:  []string{"example.com"}, Target: cl, ProgressDir: t.TempDir(),
				Spam: spamSubject{}, SpamCheckAll: true,
			})
			if err != nil {
				t.Fatal(err)
			}
			imp := func(id, subject string, size int, rcpts ...string) importer.Result {
				t.Helper()
				raw := fmt.Sprintf("Return-Path: <sender@example.net>\r\nX-Original-To: %s\r\nFrom: sender@example.net\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s-%s@example.net>\r\n\r\n%s\r\n",
					strings.Join(rcpts, ", "), strings.Join(rcpts, ", "), subject, id, tc.name, strings.Repeat("z", size))
				res, err := im.Import(context.Background(), message(id+tc.name, []byte(raw)))
				if err != nil {
					t.Fatalf("%s: %v", id, err)
				}
				return res
			}
			before := map[string]int{}
			for _, f := range []string{"alice/INBOX", "alice/Work", "alice/Junk", "bob/INBOX", "carol/INBOX"} {
				u, box, _ := strings.Cut(f, "/")
				before[f] = srv.Count(t, u, box)
			}
			count := func(f string) int {
				u, box, _ := strings.Cut(f, "/")
				return srv.Count(t, u, box) - before[f]
			}
			sunkBefore := len(sk.received())

			if res := imp("work", "work item", 10, "alice@example.com"); res.Outcome != importer.OutcomeDelivered {
				t.Errorf("work: %+v", res)
			}
			if res := imp("spam", "spam offer", 10, "alice@example.com"); res.Outcome != importer.OutcomeDelivered || res.Spam == nil || !res.Spam.Spam {
				t.Errorf("spam: %+v", res)
			}
			res := imp("multi", "hello", 10, "alice@example.com", "robert@example.com", "carol+news@example.com", "nobody@example.com")
			if res.Outcome != importer.OutcomePartial || len(res.Delivered) != 3 || len(res.Failed) != 1 {
				t.Fatalf("multi: %+v", res)
			}
			if f := res.Failed[0]; f.Recipient != "nobody@example.com" || f.Status != "5.1.1" || !strings.HasPrefix(f.Diagnostic, "550 5.1.1 ") {
				t.Errorf("unknown user: %+v", f)
			}
			res = imp("big", "big", 30<<10, "carol@example.com")
			if res.Outcome != importer.OutcomeFailed || len(res.Failed) != 1 || res.Failed[0].Status != "5.2.2" || !strings.Contains(res.Failed[0].Diagnostic, "5.2.2") {
				t.Errorf("over quota: %+v", res)
			} else {
				t.Logf("over quota: %s", res.Failed[0].Diagnostic)
			}
			for f, want := range map[string]int{"alice/Work": 1, "alice/Junk": 1, "alice/INBOX": 1, "bob/INBOX": 1, "carol/INBOX": 1} {
				if got := count(f); got != want {
					t.Errorf("%s holds %d new messages, want %d", f, got, want)
				}
			}
			// Dovecot announces PIPELINING: these transactions went pipelined.
			select {
			case s := <-cl.idle:
				if !s.pipelining {
					t.Error("the session does not pipeline: Dovecot's LHLO reply announced no PIPELINING")
				}
				cl.idle <- s
			default:
				t.Errorf("no idle session after the transactions")
			}
			// The vacation reply to the one inbox message (the first run only: :days 1).
			deadline := time.Now().Add(10 * time.Second)
			for tc.name == "unix" && len(sk.received()) == sunkBefore && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			if tc.name == "unix" {
				got := sk.received()[sunkBefore:]
				if len(got) != 1 || len(got[0].to) != 1 || got[0].to[0] != "sender@example.net" || !bytes.Contains(got[0].data, []byte("I am away.")) {
					t.Errorf("vacation replies %+v, want one to sender@example.net", got)
				}
			}
		})
	}
}
