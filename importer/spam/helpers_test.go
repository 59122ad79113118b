package spam

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer"

	"github.com/mxdrop/mxdrop/internal/testenv"
)

// testWords is the word table of the rule tests.
var testWords = []string{"viagra", "cheap pills", "casino", "казино", "größe", "free money now"}

// logBuffer collects a Checker's log events.
type logBuffer struct{ testenv.LogBuffer }

// events returns the logged events with the given message ("" = all).
func (l *logBuffer) events(t testing.TB, msg string) []map[string]any {
	return l.Events(t, "message", msg)
}

// newChecker builds a Checker from cfg that logs at debug level into the returned buffer.
func newChecker(t testing.TB, cfg configs.Spam) (*Checker, *logBuffer) {
	t.Helper()
	var lb logBuffer
	c, err := New(cfg, zerolog.New(&lb).Level(zerolog.DebugLevel))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c, &lb
}

// lf and crlf write a message from lines.
func lf(lines ...string) string   { return strings.Join(lines, "\n") }
func crlf(lines ...string) string { return strings.Join(lines, "\r\n") }

// parse reads the header block of raw as the importer does.
func parse(t testing.TB, raw string) *importer.Header {
	t.Helper()
	h, err := importer.ReadHeader(bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		t.Fatalf("ReadHeader: %v", err)
	}
	return h
}

// opener returns an open function over b that counts its calls.
func opener(b []byte, calls *int) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) {
		if calls != nil {
			*calls++
		}
		return io.NopCloser(bytes.NewReader(b)), nil
	}
}

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }

// classify runs c over raw with the envelope read from its header, or env when not nil.
func classify(t testing.TB, c *Checker, raw string, env *importer.Envelope) (importer.Verdict, error) {
	t.Helper()
	h := parse(t, raw)
	e := importer.ExtractEnvelope(h, nil)
	if env != nil {
		e = *env
	}
	return c.Classify(context.Background(), h, e, opener([]byte(raw), nil))
}
