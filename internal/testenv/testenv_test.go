package testenv

import (
	"os"
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

func TestReachableDir(t *testing.T) {
	_, tmp := BelowClosedFolder(t)
	for _, tc := range []struct {
		name, tmpdir string
		below        bool // the folder is inside tmpdir
	}{
		{"closed TMPDIR", tmp, false},
		{"open TMPDIR", "/tmp", true},
		{"long TMPDIR", "/tmp/" + strings.Repeat("x", maxReachableBase), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.below {
				os.MkdirAll(tc.tmpdir, 0o755)
			}
			t.Setenv("TMPDIR", tc.tmpdir)
			var dir string
			t.Run("make", func(t *testing.T) {
				dir = ReachableDir(t, "testenv-")
				if !SearchableByOthers(dir) {
					t.Errorf("%s is not searchable by others all the way up", dir)
				}
				if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o711 {
					t.Errorf("%s: %v, %v; want mode 0711", dir, fi, err)
				}
				if got := strings.HasPrefix(dir, tc.tmpdir+"/"); got != tc.below {
					t.Errorf("%s below TMPDIR %s: %v, want %v", dir, tc.tmpdir, got, tc.below)
				}
			})
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("%s is still there after its test: %v", dir, err)
			}
		})
	}
	if SearchableByOthers(tmp) {
		t.Errorf("SearchableByOthers(%s) below a 0700 folder = true", tmp)
	}
}
