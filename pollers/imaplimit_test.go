package pollers

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/pollers/imap"
)

// injectProxy forwards IMAP connections to a server. While armed, a client command
// containing trigger (in upper case) is not forwarded: the proxy answers it itself with an endless
// reply, prefix followed by "x" until the client stops reading (or 96 MiB), as a
// hostile server would.
type injectProxy struct {
	ln      net.Listener
	target  string
	trigger atomic.Pointer[string]
	prefix  string
	written atomic.Int64 // bytes of hostile replies that reached the client
}

func newInjectProxy(t *testing.T, target, prefix string) *injectProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &injectProxy{ln: ln, target: target, prefix: prefix}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { p.handle(c) })
		}
	})
	return p
}

func (p *injectProxy) arm(trigger string) { p.trigger.Store(&trigger) }
func (p *injectProxy) disarm()            { p.trigger.Store(nil) }

func (p *injectProxy) addr() (string, int) {
	a := p.ln.Addr().(*net.TCPAddr)
	return a.IP.String(), a.Port
}

func (p *injectProxy) handle(c net.Conn) {
	defer c.Close()
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer s.Close()
	var mu sync.Mutex // orders the server's replies and the injected one
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := s.Read(buf)
			mu.Lock()
			if n > 0 {
				c.Write(buf[:n])
			}
			mu.Unlock()
			if err != nil {
				c.Close()
				return
			}
		}
	}()
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if tr := p.trigger.Load(); tr != nil && strings.Contains(strings.ToUpper(line), *tr) {
			mu.Lock()
			p.inject(c)
			mu.Unlock()
			return
		}
		if _, err := io.WriteString(s, line); err != nil {
			return
		}
	}
}

func (p *injectProxy) inject(c net.Conn) {
	chunk := []byte(strings.Repeat("x", 32<<10))
	n, err := io.WriteString(c, p.prefix)
	p.written.Add(int64(n))
	for err == nil && p.written.Load() < 96<<20 {
		n, err = c.Write(chunk)
		p.written.Add(int64(n))
	}
}

// checkLimited checks that a cycle met a hostile reply as the poller should: a
// *imap.LimitError, logged with its reason, and the written bytes bounded.
func checkLimited(t *testing.T, e *env, p *Poller, proxy *injectProxy) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err := p.Cycle(ctx)
	var le *imap.LimitError
	if !errors.As(err, &le) {
		t.Fatalf("cycle error %v: not an imap.LimitError", err)
	}
	if n := proxy.written.Load(); n > 32<<20 {
		t.Fatalf("the poller read on: the server wrote %d MiB", n>>20)
	}
	if log := e.log.String(); !strings.Contains(log, `"reason":"server_reply_too_large"`) {
		t.Fatalf("the limit is not logged with its reason:\n%s", log)
	}
}

// A huge literal the server adds to the size listing ends the session with a
// LimitError after a bounded read; nothing is deleted, and the next cycle (the server
// behaving again) delivers and deletes as usual.
func TestIMAPHugeLiteralInSizeFetch(t *testing.T) {
	srv := newMemIMAP(t, nil)
	e := newEnv(t, "alice@example.com")
	srv.append(t, "INBOX", message("h1@x", "To: alice@example.com"))
	srv.append(t, "INBOX", message("h2@x", "To: alice@example.com"))
	proxy := newInjectProxy(t, net.JoinHostPort(srv.host, strconv.Itoa(srv.port)),
		"* 1 FETCH (UID 1 RFC822.SIZE 100 INTERNALDATE \"01-Mar-2025 10:00:00 +0000\" BODY[] {4000000000}\r\n")
	host, port := proxy.addr()
	p := e.poller(srv.pollerConfig(func(pc *configs.Poller) { pc.Host, pc.Port = host, port }))
	proxy.arm("RFC822.SIZE")
	checkLimited(t, e, p, proxy)
	if n := srv.count(t, "INBOX"); n != 2 || len(e.delivered("alice@example.com")) != 0 {
		t.Fatalf("after the hostile listing: server holds %d, delivered %q", n, e.delivered("alice@example.com"))
	}
	proxy.disarm()
	if st := e.cycle(p); st.Delivered != 2 || st.Deleted != 2 {
		t.Fatalf("next cycle: %+v", st)
	}
	e.wantDelivered("alice@example.com", "<h1@x>", "<h2@x>")
}

// After a UIDVALIDITY change the Message-IDs are fetched to recognise delivered
// messages; a huge Message-ID literal ends the session the same way.
func TestIMAPHugeMessageIDLiteral(t *testing.T) {
	srv := newMemIMAP(t, nil)
	e := newEnv(t, "alice@example.com")
	srv.append(t, "INBOX", message("v1@x"))
	proxy := newInjectProxy(t, net.JoinHostPort(srv.host, strconv.Itoa(srv.port)),
		"* 1 FETCH (UID 1 BODY[HEADER.FIELDS (MESSAGE-ID)] {4000000000}\r\nMessage-ID: <")
	host, port := proxy.addr()
	p := e.poller(srv.pollerConfig(func(pc *configs.Poller) { pc.Host, pc.Port, pc.Keep = host, port, "forever" }))
	e.cycle(p)
	srv.renumber(t, "INBOX", message("v1@x"), message("v2@x"))
	proxy.arm("MESSAGE-ID")
	checkLimited(t, e, p, proxy)
	if n := srv.count(t, "INBOX"); n != 2 {
		t.Fatalf("server holds %d, want 2", n)
	}
	e.wantDelivered("alice@example.com", "<v1@x>")
	proxy.disarm()
	if st := e.cycle(p); st.Delivered != 1 {
		t.Fatalf("next cycle: %+v", st)
	}
	e.wantDelivered("alice@example.com", "<v1@x>", "<v2@x>")
}

// A huge literal sent while the poller idles (RFC 2177) ends the session like one in a
// cycle, and the log says why: reason server_reply_too_large, not a bare "idle failed".
func TestIMAPHugeLiteralDuringIdle(t *testing.T) {
	srv := newMemIMAP(t, nil)
	e := newEnv(t, "alice@example.com")
	srv.append(t, "INBOX", message("d1@x", "To: alice@example.com"))
	proxy := newInjectProxy(t, net.JoinHostPort(srv.host, strconv.Itoa(srv.port)),
		"* 1 FETCH (UID 1 BODY[] {4000000000}\r\n")
	host, port := proxy.addr()
	yes := true
	p := e.poller(srv.pollerConfig(func(pc *configs.Poller) {
		pc.Host, pc.Port = host, port
		pc.IDLE, pc.Interval = &yes, configs.Duration(time.Hour)
	}))
	proxy.arm(" IDLE")
	defer runPoller(p)()
	waitFor(t, 30*time.Second, func() bool { return strings.Contains(e.log.String(), "idle failed") })
	for _, l := range strings.Split(e.log.String(), "\n") {
		if strings.Contains(l, "idle failed") && !strings.Contains(l, `"reason":"server_reply_too_large"`) {
			t.Errorf("idle failure logged without its reason: %s", l)
		}
	}
	if n := proxy.written.Load(); n > 32<<20 {
		t.Errorf("the poller read on: the server wrote %d MiB", n>>20)
	}
	e.wantDelivered("alice@example.com", "<d1@x>")
}
