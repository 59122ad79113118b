package spam

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer"
)

// fakeSpamd is a spamd on 127.0.0.1:0 that records requests and answers with a script.
type fakeSpamd struct {
	addr string
	mu   sync.Mutex
	reqs []fakeRequest
}

type fakeRequest struct {
	line    string            // "SYMBOLS SPAMC/1.5"
	headers map[string]string // lower-case names
	body    []byte
	err     error // the request could not be read
}

// startFake starts a fake spamd whose answer writes the answer to a request.
func startFake(t *testing.T, answer func(conn net.Conn, req fakeRequest)) *fakeSpamd {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeSpamd{addr: l.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				req := readRequest(bufio.NewReader(conn))
				f.mu.Lock()
				f.reqs = append(f.reqs, req)
				f.mu.Unlock()
				answer(conn, req)
			})
		}
	})
	return f
}

func (f *fakeSpamd) requests() []fakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeRequest(nil), f.reqs...)
}

func readRequest(br *bufio.Reader) fakeRequest {
	req := fakeRequest{headers: map[string]string{}}
	line, err := br.ReadString('\n')
	if err != nil {
		req.err = err
		return req
	}
	req.line = strings.TrimRight(line, "\r\n")
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			req.err = err
			return req
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			break
		}
		name, value, _ := strings.Cut(line, ":")
		req.headers[strings.ToLower(name)] = strings.TrimSpace(value)
	}
	n, err := strconv.Atoi(req.headers["content-length"])
	if err != nil {
		req.err = fmt.Errorf("content-length: %v", err)
		return req
	}
	req.body = make([]byte, n)
	_, req.err = io.ReadFull(br, req.body)
	return req
}

// reply answers every request with text.
func reply(text string) func(net.Conn, fakeRequest) {
	return func(conn net.Conn, _ fakeRequest) { io.WriteString(conn, text) }
}

const cleanMessage = "Return-Path: <bob@ok.example>\r\nFrom: Bob <bob@ok.example>\r\nTo: alice@example.com\r\n" +
	"Subject: lunch\r\nMessage-ID: <lunch@ok.example>\r\n\r\nShall we have lunch on Friday?\r\n"

// TestSpamdProtocol checks the spamc protocol against a fake spamd: answers, malformed
// answers, errors and timeouts.
func TestSpamdProtocol(t *testing.T) {
	for _, tc := range []struct {
		name      string
		answer    func(net.Conn, fakeRequest)
		want      importer.Verdict
		wantErr   string // the error's text, "" for none
		wantStage string
	}{
		{"spam with tests", reply("SPAMD/1.1 0 EX_OK\r\nContent-length: 20\r\nSpam: True ; 15.5 / 5.0\r\n\r\nBAYES_99,URIBL_BLACK"),
			importer.Verdict{Spam: true, Score: 15.5, Reason: "spamd 15.5/5.0 BAYES_99,URIBL_BLACK"}, "", ""},
		{"clean, CHECK-style answer", reply("SPAMD/1.1 0 EX_OK\r\nSpam: False ; 1.2 / 5.0\r\n\r\n"),
			importer.Verdict{Score: 1.2, Reason: "spamd 1.2/5.0"}, "", ""},
		{"old spamd, LF, Yes", reply("SPAMD/1.0 0 EX_OK\nSpam: Yes ; 7 / 5\n\n"),
			importer.Verdict{Spam: true, Score: 7, Reason: "spamd 7.0/5.0"}, "", ""},
		{"negative score", reply("SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\nSpam: False ; -1.9 / 5.0\r\n\r\n"),
			importer.Verdict{Score: -1.9, Reason: "spamd -1.9/5.0"}, "", ""},
		{"not spamd", reply("HTTP/1.1 200 OK\r\n\r\n"), importer.Verdict{}, "spamd: bad answer", "answer"},
		{"no Spam header", reply("SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\n\r\n"), importer.Verdict{}, "spamd: bad answer", "answer"},
		{"bad Spam header", reply("SPAMD/1.1 0 EX_OK\r\nSpam: Maybe ; 1 / 5\r\n\r\n"), importer.Verdict{}, "spamd: bad answer", "answer"},
		{"bad score", reply("SPAMD/1.1 0 EX_OK\r\nSpam: True ; lots / 5\r\n\r\n"), importer.Verdict{}, "spamd: bad answer", "answer"},
		{"error status", reply("SPAMD/1.0 76 Bad header line: (Content-length mismatch)\r\n"), importer.Verdict{}, "spamd: bad answer", "answer"},
		{"closed without answer", reply(""), importer.Verdict{}, "spamd: bad answer", "answer"},
		{"head cut short", reply("SPAMD/1.1 0 EX_OK\r\nSpam: True ; 9 / 5\r\n"), importer.Verdict{}, "spamd: bad answer", "answer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t, tc.answer)
			c, logs := newChecker(t, configs.Spam{Spamd: f.addr})
			v, err := classify(t, c, cleanMessage, nil)
			if tc.wantErr == "" {
				if err != nil || v != tc.want {
					t.Fatalf("Classify = %+v, %v; want %+v", v, err, tc.want)
				}
			} else {
				var se *SpamdError
				if err == nil || err.Error() != tc.wantErr || !errors.As(err, &se) || se.Stage != tc.wantStage {
					t.Fatalf("Classify = %+v, %v; want error %q", v, err, tc.wantErr)
				}
				evs := logs.events(t, "spam check failed; the message goes to the inbox unchecked")
				if len(evs) != 1 || evs[0]["component"] != "spam" || evs[0]["level"] != "warn" ||
					evs[0]["spamd"] != f.addr || evs[0]["stage"] != tc.wantStage || evs[0]["error"] == "" {
					t.Errorf("log events %v", evs)
				}
			}
			reqs := f.requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if r.err != nil || r.line != "SYMBOLS SPAMC/1.5" || r.headers["content-length"] != strconv.Itoa(len(cleanMessage)) || string(r.body) != cleanMessage {
				t.Errorf("request %q %v %q (%v)", r.line, r.headers, r.body, r.err)
			}
		})
	}
}

// TestSpamdUnreachable checks a refused connection.
func TestSpamdUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c, _ := newChecker(t, configs.Spam{Spamd: addr})
	_, err = classify(t, c, cleanMessage, nil)
	var se *SpamdError
	if !errors.As(err, &se) || se.Stage != "connect" || err.Error() != "spamd unreachable" {
		t.Fatalf("err = %v", err)
	}
	if got := c.Counts(); got.Unchecked != 1 || got.Checked != 0 {
		t.Errorf("counts %+v", got)
	}
}

// TestSpamdTimeout checks that spamd_timeout bounds a check whose answer never comes,
// and that the caller's context ends it too.
func TestSpamdTimeout(t *testing.T) {
	hang := make(chan struct{})
	f := startFake(t, func(net.Conn, fakeRequest) { <-hang })
	t.Cleanup(func() { close(hang) }) // before startFake's cleanup waits for the handlers
	c, _ := newChecker(t, configs.Spam{Spamd: f.addr, SpamdTimeout: configs.Duration(300 * time.Millisecond)})
	start := time.Now()
	_, err := classify(t, c, cleanMessage, nil)
	var se *SpamdError
	if !errors.As(err, &se) || !se.Timeout || !errors.Is(err, context.DeadlineExceeded) || err.Error() != "spamd timed out" {
		t.Fatalf("err = %v (%#v)", err, se)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 5*time.Second {
		t.Errorf("took %v with a 300ms timeout", d)
	}

	// The default timeout is long; the caller's cancellation ends the check at once.
	c, _ = newChecker(t, configs.Spam{Spamd: f.addr})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	h := parse(t, cleanMessage)
	start = time.Now()
	_, err = c.Classify(ctx, h, importer.Envelope{}, opener([]byte(cleanMessage), nil))
	if !errors.Is(err, context.Canceled) || !errors.As(err, &se) || se.Timeout {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("cancellation took %v", d)
	}
}

// TestSpamdAfterRules checks that spamd is asked only when the built-in rules do not
// fire, that a large message is not sent, and that the size is measured right however
// the message is opened.
func TestSpamdAfterRules(t *testing.T) {
	f := startFake(t, reply("SPAMD/1.1 0 EX_OK\r\nSpam: False ; 0.1 / 5.0\r\n\r\n"))
	c, _ := newChecker(t, configs.Spam{Spamd: f.addr, Words: []string{"viagra"}, BlockedSenders: []string{"@bad.example"}})
	for raw, want := range map[string]string{
		lf("From: a@bad.example", "Subject: x", "", "x", ""):     "blocked sender a@bad.example (From, @bad.example)",
		lf("From: a@ok.example", "Subject: x", "", "viagra", ""): `word "viagra" in body`,
	} {
		if v, err := classify(t, c, raw, &importer.Envelope{}); err != nil || v.Reason != want {
			t.Errorf("%+v %v, want %q", v, err, want)
		}
	}
	if n := len(f.requests()); n != 0 {
		t.Fatalf("spamd asked %d times after a built-in hit", n)
	}

	// The size from the body scan.
	if v, err := classify(t, c, cleanMessage, nil); err != nil || v.Spam || v.Score != 0.1 {
		t.Errorf("%+v %v", v, err)
	}
	// Too large: not sent.
	big := cleanMessage + strings.Repeat("Lorem ipsum dolor sit amet.\r\n", MaxSpamdSize/29+1)
	if v, err := classify(t, c, big, nil); err != nil || v.Spam || v.Score != 0 {
		t.Errorf("%+v %v", v, err)
	}
	// Without words, the size is measured: by reading, or by Stat for a file.
	noWords, _ := newChecker(t, configs.Spam{Spamd: f.addr})
	if v, err := classify(t, noWords, cleanMessage, nil); err != nil || v.Score != 0.1 {
		t.Errorf("%+v %v", v, err)
	}
	path := filepath.Join(t.TempDir(), "msg")
	if err := os.WriteFile(path, []byte(cleanMessage), 0o644); err != nil {
		t.Fatal(err)
	}
	opens := 0
	open := func() (io.ReadCloser, error) { opens++; return os.Open(path) }
	if v, err := noWords.Classify(t.Context(), parse(t, cleanMessage), importer.Envelope{}, open); err != nil || v.Score != 0.1 || opens != 2 {
		t.Errorf("%+v %v, %d opens", v, err, opens)
	}
	reqs := f.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3", len(reqs))
	}
	for _, r := range reqs {
		if r.err != nil || string(r.body) != cleanMessage {
			t.Errorf("request %v %q (%v)", r.headers, r.body, r.err)
		}
	}
	if got := c.Counts(); got.SpamdChecked != 1 || got.SpamdSkipped != 1 || got.Checked != 4 || got.Spam != 2 {
		t.Errorf("counts %+v", got)
	}
}

// TestImporterWithFakeSpamd runs the importer with a Checker whose spamd says spam, then
// with spamd gone: spam goes to Junk, and a failed check to the inbox marked unchecked.
func TestImporterWithFakeSpamd(t *testing.T) {
	f := startFake(t, reply("SPAMD/1.1 0 EX_OK\r\nContent-length: 5\r\nSpam: True ; 12.3 / 5.0\r\n\r\nGTUBE"))
	root := t.TempDir()
	maildir := filepath.Join(root, "alice")
	accounts := []configs.Account{{Address: "alice@example.com", Maildir: maildir}}
	run := func(spamd string) string {
		t.Helper()
		c, _ := newChecker(t, configs.Spam{Spamd: spamd})
		im, err := importer.New(importer.Options{Accounts: accounts, Domains: []string{"example.com"}, Spam: c, SpamCheckAll: true})
		if err != nil {
			t.Fatal(err)
		}
		raw := []byte("Delivered-To: alice@example.com\r\n" + cleanMessage)
		res, err := im.Import(t.Context(), importer.Message{
			ID: "fake-" + spamd, Name: "m", Size: int64(len(raw)), Arrived: time.Unix(1704186901, 0),
			Open: opener(raw, nil),
		})
		if err != nil || res.Outcome != importer.OutcomeDelivered || len(res.Delivered) != 1 {
			t.Fatalf("Import = %+v, %v", res, err)
		}
		b, err := os.ReadFile(res.Delivered[0].Path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	got := run(f.addr)
	if !strings.Contains(got, "X-Spam-Flag: YES\r\nX-Spam-Status: Yes, score=12.3 reason=spamd 12.3/5.0 GTUBE\r\n") {
		t.Errorf("spam copy:\n%s", got)
	}
	if n, _ := filepath.Glob(filepath.Join(maildir, ".Junk", "new", "*")); len(n) != 1 {
		t.Errorf("Junk holds %d messages", len(n))
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	gone := l.Addr().String()
	l.Close()
	got = run(gone)
	if !strings.Contains(got, "X-Spam-Status: Unchecked, spam check failed: spamd unreachable\r\n") {
		t.Errorf("unchecked copy:\n%s", got)
	}
	if n, _ := filepath.Glob(filepath.Join(maildir, "new", "*")); len(n) != 1 {
		t.Errorf("the inbox holds %d messages", len(n))
	}
}
