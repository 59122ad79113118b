package importer

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"
)

// readRecord decodes the reason file beside path, both as a Record and as a map (to see
// the JSON keys the documentation promises).
func readRecord(t *testing.T, path string) (Record, map[string]any) {
	t.Helper()
	b, err := os.ReadFile(path + ".json")
	if err != nil {
		t.Fatal(err)
	}
	var rec Record
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return rec, m
}

func sampleRecord() Record {
	return NewRecord("mx", "m.eml", Result{
		Outcome: OutcomeFailed, Reason: "no_deliverable_recipient", Detail: "no recipient could be delivered",
		MessageID: "<x@example.org>", Size: 123,
		Envelope: Envelope{Sender: "bob@example.org", SenderKnown: true, Recipients: []string{"nobody@example.com"}},
		Failed:   []Failure{{Recipient: "nobody@example.com", Status: "5.1.1", Reason: "mailbox unknown", Rule: "unknown"}},
		Ignored:  []string{"x@elsewhere.example"},
	})
}

func TestQuarantine(t *testing.T) {
	dir := t.TempDir()
	folder := filepath.Join(dir, "drop", FailedFolder)
	src := filepath.Join(dir, "drop", "m.eml")
	if err := os.MkdirAll(filepath.Dir(src), 0o755); err != nil {
		t.Fatal(err)
	}
	content := []byte(lf("Subject: bad", "", "x"))
	if err := os.WriteFile(src, content, 0o644); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(src)
	rec := sampleRecord()
	got, err := Quarantine(folder, src, rec)
	if err != nil {
		t.Fatal(err)
	}
	if got != filepath.Join(folder, "m.eml") {
		t.Errorf("path %s", got)
	}
	if _, err := os.Stat(src); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the original is still there: %v", err)
	}
	after, err := os.Stat(got)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Error("the message was copied, not moved")
	}
	if b, _ := os.ReadFile(got); !bytes.Equal(b, content) {
		t.Error("content changed")
	}
	back, m := readRecord(t, got)
	for _, k := range []string{"time", "source", "file", "outcome", "reason", "detail", "message_id", "sender", "size", "recipients", "ignored"} {
		if _, ok := m[k]; !ok {
			t.Errorf("reason file lacks %q: %v", k, m)
		}
	}
	if back.Source != "mx" || back.File != "m.eml" || back.Outcome != OutcomeFailed || back.Reason != "no_deliverable_recipient" ||
		back.Sender != "bob@example.org" || back.Size != 123 || len(back.Recipients) != 1 || back.Recipients[0].Status != "5.1.1" ||
		!slices.Equal(back.Ignored, []string{"x@elsewhere.example"}) || time.Since(back.Time) > time.Minute {
		t.Errorf("record %+v", back)
	}
	if names := listDir(t, folder); !slices.Equal(names, []string{"m.eml", "m.eml.json"}) {
		t.Errorf("folder holds %v (temporary files left?)", names)
	}
}

func TestQuarantineCollisions(t *testing.T) {
	dir := t.TempDir()
	folder := filepath.Join(dir, FailedFolder)
	var paths []string
	for i := range 3 {
		src := filepath.Join(dir, "in", string(rune('a'+i)), "m")
		if err := os.MkdirAll(filepath.Dir(src), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(src, []byte{byte('0' + i)}, 0o644); err != nil {
			t.Fatal(err)
		}
		p, err := Quarantine(folder, src, sampleRecord())
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, filepath.Base(p))
	}
	if !slices.Equal(paths, []string{"m", "m.1", "m.2"}) {
		t.Fatalf("names %v", paths)
	}
	for i, p := range paths {
		if b, _ := os.ReadFile(filepath.Join(folder, p)); string(b) != string(rune('0'+i)) {
			t.Errorf("%s holds %q", p, b)
		}
		readRecord(t, filepath.Join(folder, p))
	}
}

// A quarantined message whose name is another's reason file name must not be overwritten
// by that reason file.
func TestQuarantineReasonFileNameClash(t *testing.T) {
	dir := t.TempDir()
	folder := filepath.Join(dir, FailedFolder)
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// First a message called "m.json", then one called "m".
	if _, err := Quarantine(folder, write("m.json", "the first message"), sampleRecord()); err != nil {
		t.Fatal(err)
	}
	p, err := Quarantine(folder, write("m", "the second message"), sampleRecord())
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(folder, "m.json")); string(b) != "the first message" {
		t.Fatalf("the quarantined message m.json was overwritten by the reason of %s: %.40q", filepath.Base(p), b)
	}
	readRecord(t, p)
}

// A reason file without its message (a crash between the two) is reused.
func TestQuarantineLeftoverReason(t *testing.T) {
	dir := t.TempDir()
	folder := filepath.Join(dir, FailedFolder)
	if err := os.MkdirAll(folder, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(folder, "m.json"), []byte("{}"), 0o640); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "m")
	if err := os.WriteFile(src, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := Quarantine(folder, src, sampleRecord())
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(p) != "m" {
		t.Errorf("quarantined as %s", p)
	}
	if rec, _ := readRecord(t, p); rec.Reason != "no_deliverable_recipient" {
		t.Errorf("reason file not rewritten: %+v", rec)
	}
}

func TestQuarantineMissingSource(t *testing.T) {
	dir := t.TempDir()
	folder := filepath.Join(dir, FailedFolder)
	if _, err := Quarantine(folder, filepath.Join(dir, "gone"), sampleRecord()); err == nil {
		t.Fatal("no error for a missing source")
	}
	if names := listDir(t, folder); len(names) != 0 {
		t.Errorf("left %v behind", names)
	}
}

func TestQuarantineStream(t *testing.T) {
	folder := filepath.Join(t.TempDir(), FailedFolder)
	content := strings.Repeat("line\r\n", 50_000)
	var names []string
	for range 2 {
		p, err := QuarantineStream(folder, "pop3-alice-17.eml", strings.NewReader(content), sampleRecord())
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, filepath.Base(p))
		if b, _ := os.ReadFile(p); string(b) != content {
			t.Errorf("%s: content differs", p)
		}
		readRecord(t, p)
	}
	if !slices.Equal(names, []string{"pop3-alice-17.eml", "pop3-alice-17.eml.1"}) {
		t.Errorf("names %v", names)
	}
	if got := listDir(t, folder); len(got) != 4 {
		t.Errorf("folder holds %v", got)
	}
}

// A source that fails half way leaves nothing behind: no message, no reason file, no
// temporary file.
func TestQuarantineStreamReaderError(t *testing.T) {
	folder := filepath.Join(t.TempDir(), FailedFolder)
	r := io.MultiReader(strings.NewReader("Subject: x\n\npartial"), errReader{syscall.ECONNRESET})
	if _, err := QuarantineStream(folder, "m", r, sampleRecord()); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("err = %v", err)
	}
	if got := listDir(t, folder); len(got) != 0 {
		t.Errorf("left %v behind", got)
	}
}

func TestNewRecordSender(t *testing.T) {
	for _, tc := range []struct {
		env  Envelope
		want string
	}{
		{Envelope{Sender: "bob@example.org", SenderKnown: true}, "bob@example.org"},
		{Envelope{Sender: "", SenderKnown: true}, "<>"},
		{Envelope{}, ""},
	} {
		if got := NewRecord("s", "f", Result{Envelope: tc.env}).Sender; got != tc.want {
			t.Errorf("sender of %+v = %q, want %q", tc.env, got, tc.want)
		}
	}
}

// TestQuarantineLongName: a file whose name is 255 bytes (NAME_MAX) is quarantined, its
// variants too, and each name leaves room for its companions (.json, the DSN copy and
// their temporary names); the record keeps the original name.
func TestQuarantineLongName(t *testing.T) {
	dir := t.TempDir()
	folder := filepath.Join(dir, FailedFolder)
	long := strings.Repeat("n", 251) + ".eml" // 255 bytes
	var names []string
	for i := range 2 {
		src := filepath.Join(dir, "in", string(rune('a'+i)), long)
		if err := os.MkdirAll(filepath.Dir(src), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(src, []byte("m"), 0o644); err != nil {
			t.Fatal(err)
		}
		rec := sampleRecord()
		rec.File = long
		p, err := Quarantine(folder, src, rec)
		if err != nil {
			t.Fatalf("quarantine of a %d-byte name: %v", len(long), err)
		}
		name := filepath.Base(p)
		names = append(names, name)
		if got, _ := readRecord(t, p); got.File != long {
			t.Errorf("record file %q, want the original name", got.File)
		}
		// The longest companion: the DSN copy's temporary file.
		if err := os.WriteFile(filepath.Join(folder, "."+name+".dsn.eml.tmp"), nil, 0o640); err != nil {
			t.Errorf("no room for the DSN copy beside %s: %v", name, err)
		}
	}
	if names[0] == names[1] || !strings.HasPrefix(names[1], names[0]) {
		t.Errorf("names %q", names)
	}
}

// TestQuarantineLongNameUTF8: a 251- to 255-byte name of multi-byte UTF-8 characters is
// shortened at a character boundary: the quarantined name stays valid UTF-8 and starts
// with the original's beginning.
func TestQuarantineLongNameUTF8(t *testing.T) {
	dir := t.TempDir()
	folder := filepath.Join(dir, FailedFolder)
	for _, n := range []int{251, 252, 253, 254, 255} {
		for _, unit := range []string{"é", "日", "𝄞"} {
			name := strings.Repeat(unit, n/len(unit))
			name += strings.Repeat("x", n-len(name))
			src := filepath.Join(dir, name)
			if err := os.WriteFile(src, []byte("m"), 0o644); err != nil {
				t.Fatal(err)
			}
			p, err := Quarantine(folder, src, NewRecord("mx", name, Result{Outcome: OutcomeFailed}))
			if err != nil {
				t.Fatalf("%d bytes of %q: %v", n, unit, err)
			}
			base := filepath.Base(p)
			if !utf8.ValidString(base) || !strings.HasPrefix(base, name[:150]) {
				t.Errorf("%d bytes of %q quarantined as %q: not valid UTF-8, or not recognisable", n, unit, base)
			}
			if got, _ := readRecord(t, p); got.File != name {
				t.Errorf("record file %q, want the original name", got.File)
			}
		}
	}
}
