package testenv

import (
	"strings"
	"testing"
)

// recorder is a testing.TB that records how a test ended instead of ending it.
type recorder struct {
	testing.TB
	fatal, skip string
}

func (r *recorder) Helper()           {}
func (r *recorder) Fatal(args ...any) { r.fatal = args[0].(string) }
func (r *recorder) Skip(args ...any)  { r.skip = args[0].(string) }

func TestUnavailable(t *testing.T) {
	for _, ci := range []string{"true", ""} {
		t.Setenv("CI", ci)
		r := &recorder{TB: t}
		Unavailable(r, "spamd %s", "missing")
		switch {
		case ci == "true" && (r.fatal == "" || r.skip != ""):
			t.Errorf("under CI=true: fatal %q, skip %q; want a failure", r.fatal, r.skip)
		case ci == "" && (r.skip == "" || r.fatal != ""):
			t.Errorf("without CI: fatal %q, skip %q; want a skip", r.fatal, r.skip)
		}
		if got := r.fatal + r.skip; got[:13] != "spamd missing" {
			t.Errorf("message %q", got)
		}
	}
}

func TestLogBuffer(t *testing.T) {
	var l LogBuffer
	l.Write([]byte(`{"message":"a","n":1}` + "\n"))
	l.Write([]byte(`{"message":"b"}` + "\n" + `{"message":"a","n":2}` + "\n"))
	if got := l.Events(t, "message", "a"); len(got) != 2 || got[1]["n"] != 2.0 {
		t.Errorf("Events(message, a) = %v", got)
	}
	if got := l.Events(t, "message", ""); len(got) != 3 {
		t.Errorf("Events(message, \"\") = %v", got)
	}
	if !strings.Contains(l.String(), `"message":"b"`) {
		t.Errorf("String() = %q", l.String())
	}
}
