package pollers

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer"

	"github.com/mxdrop/mxdrop/internal/testenv"
)

// fakeClock is a settable clock for keep_days and the duplicate window.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// logBuffer collects JSON log events, safely for concurrent writers.
type logBuffer = testenv.LogBuffer

// recordingBouncer records every Bounce call.
type recordingBouncer struct {
	mu    sync.Mutex
	calls [][]string // failed recipients per call
}

func (b *recordingBouncer) Bounce(ctx context.Context, source string, msg importer.Message, res importer.Result) ([]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, res.FailedRecipients())
	return []byte("DSN for " + msg.Name + "\r\n"), nil
}

func (b *recordingBouncer) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.calls)
}

// env is a test world: a state folder, local accounts with Maildirs, a clock, a log.
type env struct {
	t       *testing.T
	dir     string
	cfg     *configs.Config
	clock   *fakeClock
	log     *logBuffer
	bouncer *recordingBouncer
}

func newEnv(t *testing.T, addresses ...string) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{t: t, dir: dir, clock: newFakeClock(), log: &logBuffer{}, bouncer: &recordingBouncer{}}
	// Several import workers, as in a loaded configuration, so that the tests (and the
	// race detector) see a batch imported concurrently.
	e.cfg = &configs.Config{StateDir: filepath.Join(dir, "state"), Workers: 8}
	for _, a := range addresses {
		e.cfg.Accounts = append(e.cfg.Accounts, configs.Account{Address: a, Maildir: e.maildir(a)})
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", e.log.String())
		}
	})
	return e
}

func (e *env) maildir(addr string) string { return filepath.Join(e.dir, "mail", addr) }

func (e *env) deps() Deps {
	return Deps{
		Bouncer: e.bouncer,
		Logger:  zerolog.New(e.log).With().Timestamp().Logger(),
		Clock:   e.clock.Now,
	}
}

// poller builds a poller of pc (defaults applied here as the loader would).
func (e *env) poller(pc configs.Poller) *Poller {
	e.t.Helper()
	if pc.Name == "" {
		pc.Name = "test"
	}
	if pc.TLS == "" {
		pc.TLS = "none"
	}
	if pc.Timeout == 0 {
		pc.Timeout = configs.Duration(10 * time.Second)
	}
	if pc.Username == "" {
		pc.Username = "user"
		pc.Auth.Password = "secret"
	}
	p, err := New(e.cfg, pc, e.deps())
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// cycle runs one cycle and fails the test on error.
func (e *env) cycle(p *Poller) CycleStats {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := p.Cycle(ctx)
	if err != nil {
		e.t.Fatalf("cycle: %v", err)
	}
	return st
}

// delivered returns the Message-IDs in addr's Maildir (new/ and cur/), sorted by the
// delivery file name (which starts with the arrival time).
func (e *env) delivered(addr string) []string {
	e.t.Helper()
	return maildirIDs(e.t, e.maildir(addr))
}

func maildirIDs(t *testing.T, md string) []string {
	t.Helper()
	var files []string
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(md, sub))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		for _, en := range ents {
			files = append(files, filepath.Join(md, sub, en.Name()))
		}
	}
	sort.Strings(files)
	ids := []string{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m, err := mail.ReadMessage(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		ids = append(ids, m.Header.Get("Message-Id"))
	}
	return ids
}

func (e *env) wantDelivered(addr string, want ...string) {
	e.t.Helper()
	got := e.delivered(addr)
	sort.Strings(got)
	w := append([]string{}, want...)
	sort.Strings(w)
	if strings.Join(got, ",") != strings.Join(w, ",") {
		e.t.Fatalf("%s holds %q, want %q", addr, got, w)
	}
}

// message returns a small message with CRLF line endings.
func message(id string, headers ...string) []byte {
	var b strings.Builder
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	fmt.Fprintf(&b, "From: sender@remote.example\r\nSubject: test %s\r\nDate: Sat, 01 Mar 2025 10:00:00 +0000\r\nMessage-ID: <%s>\r\n\r\nbody of %s\r\n", id, id, id)
	return []byte(b.String())
}

// cutProxy forwards TCP connections to target and, while armed, closes a connection
// once the server has sent limit bytes through it: a server that drops the connection
// mid-message.
type cutProxy struct {
	ln     net.Listener
	target string
	limit  atomic.Int64 // 0: unlimited
	cuts   atomic.Int32
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close() })
	go p.serve()
	return p
}

func (p *cutProxy) addr() (string, int) {
	a := p.ln.Addr().(*net.TCPAddr)
	return a.IP.String(), a.Port
}

func (p *cutProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.handle(c)
	}
}

func (p *cutProxy) handle(c net.Conn) {
	defer c.Close()
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer s.Close()
	go func() {
		io.Copy(s, c)
		s.Close()
	}()
	limit := p.limit.Load()
	if limit <= 0 {
		io.Copy(c, s)
		return
	}
	if n, _ := io.CopyN(c, s, limit); n == limit {
		p.cuts.Add(1)
	}
}
