package lmtp

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer"
)

// rawLMTP is an LMTP server on loopback written line by line, to see how the client
// sends. When it announces PIPELINING it answers nothing of a transaction before it
// has read its DATA: a client that waits for the reply to MAIL before it sends RCPT
// never gets one. Without PIPELINING it answers each command as it comes.
type rawLMTP struct {
	addr       string
	pipelining bool
	// reply answers MAIL FROM:<...> and RCPT TO:<...> (the command as sent) and DATA;
	// final answers for an accepted recipient after the message. nil: 250.
	reply func(cmd string) string
	final func(rcpt string) string
	// hangUp, when not empty, ends each session after its first transaction, as a
	// server does at its idle timeout or when it restarts: it sends this line first
	// (a 421, say) unless it is "-", then closes the connection.
	hangUp string

	mu       sync.Mutex
	sessions int
	groups   [][]string // the commands of each transaction, as read before the first reply
	messages int        // messages received after a 354
}

func startRaw(t *testing.T, pipelining bool) *rawLMTP {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	r := &rawLMTP{addr: l.Addr().String(), pipelining: pipelining}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			r.sessions++
			r.mu.Unlock()
			go r.serve(c)
		}
	}()
	return r
}

func (r *rawLMTP) answer(cmd string) string {
	if r.reply != nil {
		if a := r.reply(cmd); a != "" {
			return a
		}
	}
	if cmd == "DATA" {
		return "354 go ahead"
	}
	return "250 2.0.0 ok"
}

func (r *rawLMTP) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	say := func(lines ...string) bool {
		_, err := io.WriteString(c, strings.Join(lines, "\r\n")+"\r\n")
		return err == nil
	}
	read := func() (string, bool) {
		l, err := br.ReadString('\n')
		return strings.TrimRight(l, "\r\n"), err == nil
	}
	if !say("220 raw.test LMTP") {
		return
	}
	// finish records a transaction's commands and, after a 354, reads the message
	// and answers for each recipient accepted at RCPT.
	finish := func(group, replies []string) bool {
		r.mu.Lock()
		r.groups = append(r.groups, group)
		r.mu.Unlock()
		if !strings.HasPrefix(replies[len(replies)-1], "354") {
			return true
		}
		for {
			l, ok := read()
			if !ok {
				return false
			}
			if l == "." {
				break
			}
		}
		r.mu.Lock()
		r.messages++
		r.mu.Unlock()
		var finals []string
		for i, g := range group {
			rcpt, ok := strings.CutPrefix(g, "RCPT TO:<")
			if !ok || !strings.HasPrefix(replies[i], "2") {
				continue
			}
			rcpt = strings.TrimSuffix(rcpt, ">")
			f := "250 2.0.0 <" + rcpt + "> saved"
			if r.final != nil {
				if a := r.final(rcpt); a != "" {
					f = a
				}
			}
			finals = append(finals, f)
		}
		return len(finals) == 0 || say(finals...)
	}
	var group, replies []string // the transaction so far, without PIPELINING
	for {
		cmd, ok := read()
		if !ok {
			return
		}
		verb := strings.ToUpper(strings.Fields(cmd + " x")[0])
		switch {
		case verb == "LHLO" && r.pipelining:
			say("250-raw.test", "250-PIPELINING", "250 ENHANCEDSTATUSCODES")
		case verb == "LHLO":
			say("250-raw.test", "250 ENHANCEDSTATUSCODES")
		case verb == "RSET":
			group, replies = nil, nil
			say("250 2.0.0 ok")
		case verb == "QUIT":
			say("221 bye")
			return
		case verb == "MAIL" && r.pipelining:
			group, replies = []string{cmd}, nil
			for group[len(group)-1] != "DATA" && len(group) < 100 {
				l, ok := read()
				if !ok {
					return
				}
				group = append(group, l)
			}
			for _, g := range group {
				replies = append(replies, r.answer(g))
			}
			if !say(replies...) || !finish(group, replies) || r.hungUp(say) {
				return
			}
			group, replies = nil, nil
		case verb == "MAIL" || verb == "RCPT" || verb == "DATA":
			if verb == "MAIL" {
				group, replies = nil, nil
			}
			group, replies = append(group, cmd), append(replies, r.answer(cmd))
			if !say(replies[len(replies)-1]) {
				return
			}
			if verb == "DATA" {
				if !finish(group, replies) || r.hungUp(say) {
					return
				}
				group, replies = nil, nil
			}
		default:
			say("502 5.5.2 unknown command")
		}
	}
}

// hungUp says hangUp's line if it is set and reports whether the session ends here.
func (r *rawLMTP) hungUp(say func(...string) bool) bool {
	if r.hangUp == "" {
		return false
	}
	if r.hangUp != "-" {
		say(r.hangUp)
	}
	return true
}

func rawClient(t *testing.T, r *rawLMTP) *Client {
	t.Helper()
	cl, err := New(configs.LMTP{Address: r.addr, Connections: 1, Timeout: configs.Duration(3 * time.Second)}, "mx.test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

func deliverText(cl *Client, rcpts ...string) ([]importer.RcptResult, error) {
	return cl.Deliver(context.Background(), "sender@example.net", rcpts, func(w io.Writer) error {
		_, err := io.WriteString(w, "Subject: test\r\n\r\nHello.\r\n")
		return err
	})
}

// replies returns each recipient's reply code, or "ok" for a delivery.
func replies(res []importer.RcptResult) map[string]string {
	out := map[string]string{}
	for _, r := range res {
		if r.Status.IsZero() {
			out[r.Rcpt] = "ok"
		} else {
			out[r.Rcpt] = fmt.Sprintf("%d %s", r.Status.Code, r.Status.Enhanced)
		}
	}
	return out
}

// TestPipelined: on a server that announces PIPELINING, MAIL, every RCPT and DATA
// reach it before it answers any of them (RFC 2920), and the session is reused.
func TestPipelined(t *testing.T) {
	r := startRaw(t, true)
	cl := rawClient(t, r)
	for i := range 2 {
		res, err := deliverText(cl, "a@example.com", "b@example.com", "c@example.com")
		if err != nil {
			t.Fatalf("transaction %d: %v", i, err)
		}
		if got := fmt.Sprint(replies(res)); got != "map[a@example.com:ok b@example.com:ok c@example.com:ok]" {
			t.Errorf("transaction %d: %s", i, got)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	want := "[MAIL FROM:<sender@example.net> RCPT TO:<a@example.com> RCPT TO:<b@example.com> RCPT TO:<c@example.com> DATA]"
	for i, g := range r.groups {
		if fmt.Sprint(g) != want {
			t.Errorf("transaction %d sent %q before the first reply, want %s", i, g, want)
		}
	}
	if len(r.groups) != 2 || r.messages != 2 || r.sessions != 1 {
		t.Errorf("%d transactions, %d messages, %d sessions; want 2, 2, 1", len(r.groups), r.messages, r.sessions)
	}
}

// TestPipelinedMixedReplies: in pipelined transactions the replies to RCPT and the
// per-recipient replies after DATA (RFC 2033) go to the right recipients: refused at
// RCPT, accepted, deferred and refused after the message; a refused MAIL, a DATA
// refused, and a DATA answered 354 after every recipient was refused. The session
// stays in step: each transaction after them on it is answered right.
func TestPipelinedMixedReplies(t *testing.T) {
	for _, pipelining := range []bool{true, false} {
		t.Run(fmt.Sprintf("pipelining=%v", pipelining), func(t *testing.T) {
			r := startRaw(t, pipelining)
			var mu sync.Mutex
			mail, data := "", ""
			r.reply = func(cmd string) string {
				mu.Lock()
				defer mu.Unlock()
				switch {
				case strings.HasPrefix(cmd, "MAIL"):
					return mail
				case cmd == "DATA":
					return data
				case strings.Contains(cmd, "<unknown@"):
					return "550 5.1.1 <unknown@example.com> User doesn't exist"
				case strings.Contains(cmd, "<busy@"):
					return "451 4.3.0 try again"
				}
				return ""
			}
			r.final = func(rcpt string) string {
				switch rcpt {
				case "full@example.com":
					return "552 5.2.2 <full@example.com> Mailbox is full"
				case "later@example.com":
					return "452 4.2.2 <later@example.com> Quota exceeded, try later"
				}
				return ""
			}
			cl := rawClient(t, r)
			check := func(name, want string, rcpts ...string) {
				t.Helper()
				res, err := deliverText(cl, rcpts...)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if len(res) != len(rcpts) {
					t.Errorf("%s: %d results for %d recipients", name, len(res), len(rcpts))
				}
				if got := fmt.Sprint(replies(res)); got != want {
					t.Errorf("%s: %s, want %s", name, got, want)
				}
			}
			check("mixed", "map[a@example.com:ok busy@example.com:451 4.3.0 full@example.com:552 5.2.2 later@example.com:452 4.2.2 unknown@example.com:550 5.1.1 z@example.com:ok]",
				"a@example.com", "unknown@example.com", "full@example.com", "busy@example.com", "later@example.com", "z@example.com")
			check("after mixed", "map[a@example.com:ok]", "a@example.com")

			mu.Lock()
			mail = "451 4.3.2 not now"
			mu.Unlock()
			check("mail refused", "map[a@example.com:451 4.3.2 b@example.com:451 4.3.2]", "a@example.com", "b@example.com")
			mu.Lock()
			mail, data = "", "554 5.5.1 no valid recipients"
			mu.Unlock()
			check("data refused", "map[a@example.com:554 5.5.1 unknown@example.com:550 5.1.1]", "a@example.com", "unknown@example.com")
			mu.Lock()
			data = ""
			mu.Unlock()
			check("no recipient accepted", "map[busy@example.com:451 4.3.0 unknown@example.com:550 5.1.1]", "unknown@example.com", "busy@example.com")
			check("after all", "map[a@example.com:ok b@example.com:ok]", "a@example.com", "b@example.com")
			r.mu.Lock()
			defer r.mu.Unlock()
			if r.messages != 3 {
				t.Errorf("%d messages sent, want 3 (mixed, after mixed, after all)", r.messages)
			}
		})
	}
}

// TestIdleSessionEndedByServer: a server ends idle sessions (Dovecot's LMTP after 5
// minutes, with a 421; any server when it restarts, without a word). The next message
// must not pay for it: a pooled session that fails before the server took anything of
// the transaction is dropped, and the transaction runs again on a new session.
func TestIdleSessionEndedByServer(t *testing.T) {
	for _, pipelining := range []bool{false, true} {
		for _, hangUp := range []string{"421 4.4.2 raw.test Disconnected client for inactivity", "-"} {
			t.Run(fmt.Sprintf("pipelining=%v/%s", pipelining, strings.Fields(hangUp)[0]), func(t *testing.T) {
				r := startRaw(t, pipelining)
				r.hangUp = hangUp
				cl := rawClient(t, r)
				for i := 0; i < 3; i++ {
					res, err := deliverText(cl, "a@example.com", "b@example.com")
					if err != nil {
						t.Fatalf("message %d: %v", i, err)
					}
					if got := fmt.Sprint(replies(res)); got != "map[a@example.com:ok b@example.com:ok]" {
						t.Fatalf("message %d: %s, want both delivered", i, got)
					}
				}
				r.mu.Lock()
				defer r.mu.Unlock()
				if r.messages != 3 || r.sessions != 3 {
					t.Errorf("%d messages over %d sessions, want 3 over 3", r.messages, r.sessions)
				}
			})
		}
	}
}

// TestRefusedOnNewSessionNotRetried: a 421 on a session just dialled is the server's
// answer (too many connections, shutting down), reported as it is, not dialled again.
func TestRefusedOnNewSessionNotRetried(t *testing.T) {
	r := startRaw(t, true)
	r.reply = func(cmd string) string {
		if strings.HasPrefix(cmd, "MAIL") {
			return "421 4.3.2 raw.test shutting down"
		}
		return ""
	}
	cl := rawClient(t, r)
	res, err := deliverText(cl, "a@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(replies(res)); got != "map[a@example.com:421 4.3.2]" {
		t.Errorf("%s, want the 421", got)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sessions != 1 {
		t.Errorf("%d sessions, want 1", r.sessions)
	}
}
