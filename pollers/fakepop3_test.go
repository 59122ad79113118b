package pollers

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/configs"
)

// fakePOP3 is a scripted POP3 server on loopback: each session serves the maildrop
// that box returns for the session's number (from 1). It speaks enough of RFC 1939 for
// the poller (CAPA, USER/PASS, UIDL, LIST, RETR, TOP, DELE, NOOP, RSET, QUIT), and
// records every command received, one string per session.
type fakePOP3 struct {
	t    *testing.T
	ln   net.Listener
	box  func(session int) []fakeMsg
	mu   sync.Mutex
	cmds []string // per session, "RETR 1;DELE 1;QUIT;..."
	// removed are the UIDLs that a QUIT really removed.
	removed []string
	// retrErr answers RETR with -ERR; closeAfterRetr closes the connection right after
	// a RETR's reply.
	retrErr, closeAfterRetr atomic.Bool
	// endlessTop answers TOP with the header block and then lines of x without end (up
	// to fakeEndlessCap bytes, counted in sent), never the terminating dot.
	endlessTop atomic.Bool
	// sent counts the bytes of message content written in answer to RETR.
	sent atomic.Int64
}

type fakeMsg struct {
	uid  string
	data []byte // CRLF line endings
	// listSize, when not 0, is the size LIST gives instead of the real one.
	listSize int
	// endless makes RETR send data and then lines of x without end (up to
	// fakeEndlessCap bytes in all, then nothing until the client leaves): never the
	// terminating dot.
	endless bool
	// trickle makes RETR send data and then a short line every trickleEvery until the
	// client leaves (or for 20 lines): never the terminating dot.
	trickle time.Duration
}

// fakeEndlessCap bounds what an endless RETR sends, so that a poller that does not
// stop it fails its test in seconds rather than filling the disk.
const fakeEndlessCap = 64 << 20

func newFakePOP3(t *testing.T, box func(session int) []fakeMsg) *fakePOP3 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakePOP3{t: t, ln: ln, box: box}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for n := 1; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.cmds = append(f.cmds, "")
			f.mu.Unlock()
			go f.serve(c, n)
		}
	}()
	return f
}

// config is a keep: delete poller of the fake, delivering to alice.
func (f *fakePOP3) config() configs.Poller {
	a := f.ln.Addr().(*net.TCPAddr)
	return configs.Poller{
		Name: "fake", Protocol: "pop3", Host: a.IP.String(), Port: a.Port, TLS: "none",
		Timeout: configs.Duration(10 * time.Second), Interval: configs.Duration(time.Hour),
		Username: "user", Auth: configs.PollerAuth{Method: "password", Password: configs.Secret("secret")},
		Keep: "delete", Mode: "single", DeliverTo: "alice@example.com", IDLE: new(bool),
	}
}

// session returns the commands of session n (from 1).
func (f *fakePOP3) session(n int) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n > len(f.cmds) {
		return ""
	}
	return f.cmds[n-1]
}

func (f *fakePOP3) removedUIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.removed...)
}

func (f *fakePOP3) serve(c net.Conn, n int) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	box := f.box(n)
	r, w := bufio.NewReader(c), bufio.NewWriter(c)
	send := func(lines ...string) {
		for _, l := range lines {
			w.WriteString(l + "\r\n")
		}
		w.Flush()
	}
	lines := func(data []byte) {
		for _, l := range strings.SplitAfter(string(data), "\r\n") {
			if l == "" {
				continue
			}
			if strings.HasPrefix(l, ".") {
				w.WriteString(".")
			}
			w.WriteString(l)
		}
	}
	multi := func(data []byte) {
		lines(data)
		send(".")
	}
	msg := func(arg string) (fakeMsg, bool) {
		i, err := strconv.Atoi(arg)
		if err != nil || i < 1 || i > len(box) {
			return fakeMsg{}, false
		}
		return box[i-1], true
	}
	deleted := map[int]bool{}
	send("+OK fake")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		f.mu.Lock()
		f.cmds[n-1] += line + ";"
		f.mu.Unlock()
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "CAPA":
			send("+OK", "USER", "UIDL", "TOP", ".")
		case "USER", "PASS", "NOOP", "RSET":
			send("+OK")
		case "UIDL":
			send("+OK")
			for i, m := range box {
				send(fmt.Sprintf("%d %s", i+1, m.uid))
			}
			send(".")
		case "LIST":
			send("+OK")
			for i, m := range box {
				size := len(m.data)
				if m.listSize != 0 {
					size = m.listSize
				}
				send(fmt.Sprintf("%d %d", i+1, size))
			}
			send(".")
		case "RETR":
			m, ok := msg(arg)
			if !ok || f.retrErr.Load() {
				send("-ERR no such message")
				continue
			}
			send("+OK")
			f.sent.Add(int64(len(m.data)))
			if m.endless {
				lines(m.data)
				f.endless(w, r)
				return
			}
			if m.trickle > 0 {
				lines(m.data)
				w.Flush()
				for i := 0; i < 20; i++ {
					time.Sleep(m.trickle)
					if _, err := c.Write([]byte("x\r\n")); err != nil {
						return // cut off
					}
				}
				f.t.Error("fake POP3: the client took the whole trickled message")
				return
			}
			multi(m.data)
			if f.closeAfterRetr.Load() {
				return
			}
		case "TOP":
			a, _, _ := strings.Cut(arg, " ")
			m, ok := msg(a)
			if !ok {
				send("-ERR no such message")
				continue
			}
			hdr, _, _ := bytes.Cut(m.data, []byte("\r\n\r\n"))
			send("+OK")
			if f.endlessTop.Load() {
				lines(append(hdr, "\r\n\r\n"...))
				f.endless(w, r)
				return
			}
			multi(append(hdr, "\r\n\r\n"...))
		case "DELE":
			i, _ := strconv.Atoi(arg)
			if _, ok := msg(arg); !ok {
				send("-ERR no such message")
				continue
			}
			deleted[i] = true
			send("+OK")
		case "QUIT":
			f.mu.Lock()
			for i := range deleted {
				f.removed = append(f.removed, box[i-1].uid)
			}
			f.mu.Unlock()
			send("+OK bye")
			return
		default:
			send("-ERR unknown command")
		}
	}
}

// endless writes lines of x until fakeEndlessCap bytes are sent in all, never the
// terminating dot, then waits until the client gives up.
func (f *fakePOP3) endless(w *bufio.Writer, r *bufio.Reader) {
	x := strings.Repeat("x", 998) + "\r\n"
	for f.sent.Load() < fakeEndlessCap {
		if _, err := w.WriteString(x); err != nil {
			return
		}
		f.sent.Add(int64(len(x)))
	}
	w.Flush()
	r.ReadString('\n')
}
