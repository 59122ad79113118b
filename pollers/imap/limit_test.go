package imap

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/pollers/pace"
)

// hostileServer speaks just enough IMAP4rev1 for the Client: a greeting with caps,
// CAPABILITY, LOGIN, SELECT of a folder of three messages (UIDs 1-3), NOOP and
// LOGOUT. Every other command goes to answer, which writes the reply. It writes at
// most hostileCap bytes in all, then closes, so that a client without limits ends too.
type hostileServer struct {
	addr    string
	written atomic.Int64
}

const hostileCap = 96 << 20

func newHostileServer(t *testing.T, caps string, answer func(w io.Writer, tag, cmd string)) *hostileServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &hostileServer{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		w := &cappedWriter{w: c, n: &s.written}
		fmt.Fprintf(w, "* OK [CAPABILITY %s] hostile\r\n", caps)
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil || w.err != nil {
				return
			}
			tag, cmd, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
			verb, _, _ := strings.Cut(cmd, " ")
			switch strings.ToUpper(verb) {
			case "LOGIN", "NOOP":
				fmt.Fprintf(w, "%s OK done\r\n", tag)
			case "CAPABILITY":
				fmt.Fprintf(w, "* CAPABILITY %s\r\n%s OK done\r\n", caps, tag)
			case "SELECT":
				fmt.Fprintf(w, "* 3 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT 4] ok\r\n%s OK [READ-WRITE] done\r\n", tag)
			case "LOGOUT":
				fmt.Fprintf(w, "* BYE bye\r\n%s OK done\r\n", tag)
				return
			default:
				answer(w, tag, cmd)
			}
		}
	})
	return s
}

// cappedWriter counts what reaches the client and fails past hostileCap.
type cappedWriter struct {
	w   io.Writer
	n   *atomic.Int64
	err error
}

func (c *cappedWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if c.n.Load()+int64(len(p)) > hostileCap {
		c.err = errors.New("hostile server: cap reached")
		return 0, c.err
	}
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	c.err = err
	return n, err
}

// endless writes s, then fill repeated until the writer fails.
func endless(w io.Writer, s string, fill func(i int) string) {
	if _, err := io.WriteString(w, s); err != nil {
		return
	}
	var b strings.Builder
	for i := 0; ; i++ {
		b.WriteString(fill(i))
		if b.Len() < 32<<10 {
			continue
		}
		if _, err := io.WriteString(w, b.String()); err != nil {
			return
		}
		b.Reset()
	}
}

func xs(int) string { return strings.Repeat("x", 1024) }

const date = `INTERNALDATE "01-Mar-2025 10:00:00 +0000"`

// peakHeap runs f and returns the largest growth of the heap in use seen while it
// ran, sampled every few milliseconds.
func peakHeap(f func()) uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > base && ms.HeapInuse-base > peak.Load() {
				peak.Store(ms.HeapInuse - base)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	})
	f()
	close(stop)
	wg.Wait()
	return peak.Load()
}

// A server's reply larger than the command needs (a huge literal, a list or a stream
// without end) ends in a *LimitError after a bounded read, with bounded memory,
// whatever command it answers.
func TestReplyTooLarge(t *testing.T) {
	tests := []struct {
		name string
		caps string
		// answer writes the hostile reply to cmd
		answer func(w io.Writer, tag, cmd string)
		run    func(c *Client) error
		max    int64  // Options.MaxMessageSize
		what   string // LimitError.What; "" for an error of another kind
	}{{
		name: "unsolicited BODY[] literal in the size fetch",
		answer: func(w io.Writer, tag, cmd string) {
			endless(w, "* 1 FETCH (UID 1 RFC822.SIZE 100 "+date+" BODY[] {4000000000}\r\n", xs)
		},
		run:  func(c *Client) error { _, err := c.Infos([]uint32{1, 2, 3}); return err },
		what: "uid fetch sizes",
	}, {
		// go-imap rejects an unknown item before its literal: bounded before this
		// change too, kept as a guard.
		name: "unknown X-FOO literal in the size fetch",
		answer: func(w io.Writer, tag, cmd string) {
			endless(w, "* 1 FETCH (UID 1 X-FOO {4000000000}\r\n", xs)
		},
		run: func(c *Client) error { _, err := c.Infos([]uint32{1, 2, 3}); return err },
	}, {
		name: "string literal in an unsolicited ENVELOPE",
		answer: func(w io.Writer, tag, cmd string) {
			endless(w, "* 1 FETCH (UID 1 ENVELOPE ({4000000000}\r\n", xs)
		},
		run:  func(c *Client) error { _, err := c.Infos([]uint32{1, 2, 3}); return err },
		what: "uid fetch sizes",
	}, {
		name: "endless stream of FETCH responses",
		answer: func(w io.Writer, tag, cmd string) {
			endless(w, "", func(i int) string {
				return fmt.Sprintf("* %d FETCH (UID %d RFC822.SIZE 100 %s)\r\n", i+1, i+10, date)
			})
		},
		run:  func(c *Client) error { _, err := c.Infos([]uint32{1, 2, 3}); return err },
		what: "uid fetch sizes",
	}, {
		name: "huge Message-ID literal",
		answer: func(w io.Writer, tag, cmd string) {
			endless(w, "* 1 FETCH (UID 1 BODY[HEADER.FIELDS (MESSAGE-ID)] {4000000000}\r\nMessage-ID: <", xs)
		},
		run:  func(c *Client) error { _, err := c.MessageIDs([]uint32{1, 2, 3}); return err },
		what: "uid fetch message-id",
	}, {
		name: "endless SEARCH list",
		answer: func(w io.Writer, tag, cmd string) {
			endless(w, "* SEARCH", func(i int) string { return " " + strconv.Itoa(2*i+1) })
		},
		run:  func(c *Client) error { _, err := c.UIDs(); return err },
		what: "uid search",
	}, {
		name: "ESEARCH range of three million UIDs",
		caps: "ESEARCH",
		answer: func(w io.Writer, tag, cmd string) {
			fmt.Fprintf(w, "* ESEARCH (TAG %q) UID ALL 1:3000000\r\n%s OK done\r\n", tag, tag)
		},
		run:  func(c *Client) error { _, err := c.UIDs(); return err },
		what: "uid search",
	}, {
		name: "endless body past max_message_size",
		answer: func(w io.Writer, tag, cmd string) {
			endless(w, "* 1 FETCH (UID 1 BODY[] {99999999999}\r\n", xs)
		},
		max: 1 << 20,
		run: func(c *Client) error {
			return c.FetchBodies([]uint32{1},
				func(uint32, uint32, int64) (io.Writer, error) { return io.Discard, nil },
				func(uint32, uint32, int64) error { return nil })
		},
		what: "uid fetch bodies",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newHostileServer(t, strings.TrimSpace("IMAP4rev1 "+tt.caps), tt.answer)
			c, err := Dial(context.Background(), Options{Addr: srv.addr, TLS: TLSNone, Timeout: 5 * time.Second, MaxMessageSize: tt.max})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Login("user", "secret"); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Select("INBOX"); err != nil {
				t.Fatal(err)
			}
			peak := peakHeap(func() { err = tt.run(c) })
			t.Logf("error: %v; server wrote %d KiB; heap grew at most %d KiB", err, srv.written.Load()>>10, peak>>10)
			if err == nil {
				t.Fatal("the hostile reply was accepted")
			}
			var le *LimitError
			if tt.what != "" && (!errors.As(err, &le) || le.What != tt.what) {
				t.Fatalf("error %v: want a *LimitError for %q", err, tt.what)
			}
			if n := srv.written.Load(); n > 32<<20 {
				t.Fatalf("the client read on: the server wrote %d MiB", n>>20)
			}
			if peak > 64<<20 {
				t.Fatalf("heap grew by %d MiB", peak>>20)
			}
			if tt.what != "" {
				// The connection is done: every later call reports the same limit.
				if _, err := c.Select("INBOX"); !errors.As(err, &le) {
					t.Fatalf("select after the limit: %v", err)
				}
			}
		})
	}
}

// TestFetchBodyTrickle: a server that sends a message body a few bytes at a time, each
// just before the idle timeout would end the read, is cut off once it has fallen behind
// pace.MinRate for about the timeout, with a *pace.SlowError, not after the whole
// literal; the connection is unusable after it (nothing can be flagged). Other replies keep the plain idle
// timeout: the LOGIN, SELECT and NOOP answers come at once anyway.
func TestFetchBodyTrickle(t *testing.T) {
	const timeout = time.Second
	srv := newHostileServer(t, "IMAP4rev1", func(w io.Writer, tag, cmd string) {
		if _, err := io.WriteString(w, "* 1 FETCH (UID 1 BODY[] {1000}\r\nSubject: slow\r\n\r\n"); err != nil {
			return
		}
		for i := 0; i < 15; i++ { // 9 seconds in all; the client leaves long before
			time.Sleep(timeout * 6 / 10)
			if _, err := io.WriteString(w, "x\r\n"); err != nil {
				return // cut off
			}
		}
		t.Error("hostile server: the client took the whole trickled body")
	})
	c := dial(t, srv.addr, timeout)
	if err := c.Login("user", "secret"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := c.FetchBodies([]uint32{1},
		func(uint32, uint32, int64) (io.Writer, error) { return io.Discard, nil },
		func(uint32, uint32, int64) error { return nil })
	var slow *pace.SlowError
	if !errors.As(err, &slow) {
		t.Fatalf("trickled body: %v, want a *pace.SlowError", err)
	}
	if d := time.Since(start); d > 5*timeout {
		t.Errorf("cut off after %v, want within a few idle timeouts", d)
	}
	if err := c.FlagDeleted([]uint32{1}); !errors.As(err, &slow) {
		t.Errorf("flagging after the cut: %v, want the same *pace.SlowError", err)
	}
}
