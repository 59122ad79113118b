package bounce

import (
	"bufio"
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxdrop/mxdrop/importer"

	"github.com/mxdrop/mxdrop/internal/testenv"
)

// t0 is the fixed "now" of the tests.
var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.FixedZone("CET", 3600))

// parseHeader reads a header block from text (LF or CRLF).
func parseHeader(t *testing.T, text string) *importer.Header {
	t.Helper()
	h, err := importer.ReadHeader(bufio.NewReader(strings.NewReader(text)))
	if err != nil {
		t.Fatalf("read header: %v", err)
	}
	return h
}

// fixture returns the message and result of testdata/original.eml with two failed
// recipients, as the importer would hand them over.
func fixture(t *testing.T) (importer.Message, importer.Result) {
	t.Helper()
	raw, err := os.ReadFile("testdata/original.eml")
	if err != nil {
		t.Fatal(err)
	}
	h := parseHeader(t, string(raw))
	msg := importer.Message{
		ID:      "1772596800.M1P2.mx|1234|1772596800000000000|42",
		Name:    "1772596800.M1P2.mx",
		Arrived: time.Date(2026, 3, 4, 5, 0, 0, 0, time.FixedZone("CET", 3600)),
	}
	res := importer.Result{
		Outcome:   importer.OutcomePartial,
		MessageID: "<20260304045958.123@sender.example>",
		Subject:   "=?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=",
		Envelope: importer.Envelope{
			Sender: "alice@sender.example", SenderKnown: true,
			Recipients: []string{"nobody@example.com", "ghost@example.com", "bob@example.com"},
			Source:     importer.ConvOriginalTo,
		},
		Failed: []importer.Failure{
			{Recipient: "nobody@example.com", Status: "5.1.1", Reason: "mailbox unknown", Rule: "unknown"},
			{Recipient: "ghost@example.com", Status: "5.1.1", Reason: "mailbox unknown", Rule: "unknown"},
		},
		Header: h,
	}
	return msg, res
}

// testMessage returns a message and result from sender with one failed recipient and
// the given header block.
func testMessage(t *testing.T, id, sender, header string) (importer.Message, importer.Result) {
	t.Helper()
	msg := importer.Message{ID: id, Name: id, Arrived: t0.Add(-time.Minute)}
	res := importer.Result{
		Outcome:  importer.OutcomeFailed,
		Envelope: importer.Envelope{Sender: sender, SenderKnown: true, Recipients: []string{"nobody@example.com"}},
		Failed:   []importer.Failure{{Recipient: "nobody@example.com", Status: "5.1.1", Reason: "mailbox unknown", Rule: "unknown"}},
		Header:   parseHeader(t, header),
	}
	res.MessageID, _ = res.Header.Get("message-id")
	res.Subject, _ = res.Header.Get("subject")
	return msg, res
}

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *clock { return &clock{t: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fakeSender is a scripted Sender: each Send takes the next error of script (nil
// when the script is used up) and records the DSNs that were accepted.
type fakeSender struct {
	mu       sync.Mutex
	script   []error
	always   error // when set, every Send fails with it
	calls    int
	accepted []sent
}

type sent struct {
	rcpt string
	data []byte
}

func (f *fakeSender) Send(_ context.Context, rcpt string, data []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.always != nil {
		return f.always
	}
	if len(f.script) > 0 {
		err := f.script[0]
		f.script = f.script[1:]
		if err != nil {
			return err
		}
	}
	f.accepted = append(f.accepted, sent{rcpt, append([]byte(nil), data...)})
	return nil
}

func (f *fakeSender) counts() (calls, accepted int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls, len(f.accepted)
}

// Errors a relay gives.
var (
	errTemp = &SendError{Stage: StageRcpt, Code: 451, Enhanced: "4.3.0", Message: "try later"}
	errPerm = &SendError{Stage: StageRcpt, Code: 550, Enhanced: "5.1.1", Message: "no such user"}
	errNet  = &SendError{Stage: StageConnect, Err: errors.New("connection refused")}
)

// logBuffer collects JSON log events.
type logBuffer struct{ testenv.LogBuffer }

func (l *logBuffer) logger() zerolog.Logger { return zerolog.New(l) }

// events returns the logged events whose outcome is outcome ("" = all).
func (l *logBuffer) events(t *testing.T, outcome string) []map[string]any {
	t.Helper()
	return l.Events(t, "outcome", outcome)
}
