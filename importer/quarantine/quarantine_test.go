package quarantine

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mxdrop/mxdrop/importer"
	"github.com/mxdrop/mxdrop/internal/testenv"
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
	return NewRecord("mx", "m.eml", importer.Result{
		Outcome: importer.OutcomeFailed, Reason: "no_deliverable_recipient", Detail: "no recipient could be delivered",
		MessageID: "<x@example.org>", Size: 123,
		Envelope: importer.Envelope{Sender: "bob@example.org", SenderKnown: true, Recipients: []string{"nobody@example.com"}},
		Failed:   []importer.Failure{{Recipient: "nobody@example.com", Status: "5.1.1", Reason: "mailbox unknown", Rule: "unknown"}},
		Ignored:  []string{"x@elsewhere.example"},
	})
}

func TestQuarantine(t *testing.T) {
	dir := t.TempDir()
	folder := filepath.Join(dir, "drop", FolderName)
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
	got, err := Folder(folder).Move(src, "", rec)
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
	if back.Source != "mx" || back.File != "m.eml" || back.Outcome != importer.OutcomeFailed || back.Reason != "no_deliverable_recipient" ||
		back.Sender != "bob@example.org" || back.Size != 123 || len(back.Recipients) != 1 || back.Recipients[0].Status != "5.1.1" ||
		!slices.Equal(back.Ignored, []string{"x@elsewhere.example"}) || time.Since(back.Time) > time.Minute {
		t.Errorf("record %+v", back)
	}
	if names := testenv.ListDir(t, folder); !slices.Equal(names, []string{"m.eml", "m.eml.json"}) {
		t.Errorf("folder holds %v (temporary files left?)", names)
	}
}

func TestQuarantineCollisions(t *testing.T) {
	dir := t.TempDir()
	folder := filepath.Join(dir, FolderName)
	var paths []string
	for i := range 3 {
		src := filepath.Join(dir, "in", string(rune('a'+i)), "m")
		if err := os.MkdirAll(filepath.Dir(src), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(src, []byte{byte('0' + i)}, 0o644); err != nil {
			t.Fatal(err)
		}
		p, err := Folder(folder).Move(src, "", sampleRecord())
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
	folder := filepath.Join(dir, FolderName)
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// First a message called "m.json", then one called "m".
	if _, err := Folder(folder).Move(write("m.json", "the first message"), "", sampleRecord()); err != nil {
		t.Fatal(err)
	}
	p, err := Folder(folder).Move(write("m", "the second message"), "", sampleRecord())
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
	folder := filepath.Join(dir, FolderName)
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
	p, err := Folder(folder).Move(src, "", sampleRecord())
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
	folder := filepath.Join(dir, FolderName)
	if _, err := Folder(folder).Move(filepath.Join(dir, "gone"), "", sampleRecord()); err == nil {
		t.Fatal("no error for a missing source")
	}
	if names := testenv.ListDir(t, folder); len(names) != 0 {
		t.Errorf("left %v behind", names)
	}
}

func TestQuarantineStream(t *testing.T) {
	folder := filepath.Join(t.TempDir(), FolderName)
	content := strings.Repeat("line\r\n", 50_000)
	var names []string
	for range 2 {
		p, err := Folder(folder).Write("pop3-alice-17.eml", strings.NewReader(content), sampleRecord())
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
	if got := testenv.ListDir(t, folder); len(got) != 4 {
		t.Errorf("folder holds %v", got)
	}
}

// A source that fails half way leaves nothing behind: no message, no reason file, no
// temporary file.
func TestQuarantineStreamReaderError(t *testing.T) {
	folder := filepath.Join(t.TempDir(), FolderName)
	r := io.MultiReader(strings.NewReader("Subject: x\n\npartial"), errReader{syscall.ECONNRESET})
	if _, err := Folder(folder).Write("m", r, sampleRecord()); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("err = %v", err)
	}
	if got := testenv.ListDir(t, folder); len(got) != 0 {
		t.Errorf("left %v behind", got)
	}
}

func TestNewRecordSender(t *testing.T) {
	for _, tc := range []struct {
		env  importer.Envelope
		want string
	}{
		{importer.Envelope{Sender: "bob@example.org", SenderKnown: true}, "bob@example.org"},
		{importer.Envelope{Sender: "", SenderKnown: true}, "<>"},
		{importer.Envelope{}, ""},
	} {
		if got := NewRecord("s", "f", importer.Result{Envelope: tc.env}).Sender; got != tc.want {
			t.Errorf("sender of %+v = %q, want %q", tc.env, got, tc.want)
		}
	}
}

func TestWriteDSN(t *testing.T) {
	dir := filepath.Join(t.TempDir(), FolderName)
	f := Folder(dir)
	p, err := f.WriteDSN("1772596800.M1P2.mx.1", []byte("dsn"))
	if err != nil || p != filepath.Join(dir, "1772596800.M1P2.mx.1.dsn.eml") {
		t.Fatalf("WriteDSN = %s, %v", p, err)
	}
	if b, _ := os.ReadFile(p); string(b) != "dsn" {
		t.Errorf("content %q", b)
	}
	if _, err := f.WriteDSN("1772596800.M1P2.mx.1", []byte("again")); err != nil {
		t.Errorf("replace: %v", err)
	}
	for _, bad := range []string{"", "..", "a/b"} {
		if _, err := f.WriteDSN(bad, nil); err == nil {
			t.Errorf("WriteDSN accepted name %q", bad)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("folder holds %d files (temporary files left?)", len(entries))
	}
}

// List and Count see messages only: not reason files, DSN copies (of a quarantined
// message, or unsent ones), temporary files; but a message named like a reason file is
// one.
func TestListCountRemove(t *testing.T) {
	dir := t.TempDir()
	f := ForConnector(filepath.Join(dir, "drop"))
	src := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("Subject: x\n\nx"), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rec := sampleRecord()
	rec.ID, rec.Arrived = "m.eml|13|1|2", time.Unix(1772596800, 0).UTC()
	if _, err := f.Move(src("m.eml"), "", rec); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteDSN("m.eml", []byte("dsn")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Move(src("n.json"), "", sampleRecord()); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteDSN("unsent", []byte("dsn")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.Path(), ".x.tmp"), nil, 0o640); err != nil {
		t.Fatal(err)
	}
	if n := f.Count(); n != 2 {
		t.Errorf("Count = %d, want 2", n)
	}
	l, err := f.List()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Entry{}
	for _, e := range l {
		byName[e.Name] = e
	}
	m, ok := byName["m.eml"]
	if len(l) != 2 || !ok || byName["n.json"].Record == nil {
		t.Fatalf("List = %+v", l)
	}
	if !m.DSN || m.Record == nil || m.Record.ID != rec.ID || !m.Record.Arrived.Equal(rec.Arrived) || m.Record.Source != "mx" {
		t.Errorf("entry %+v record %+v", m, m.Record)
	}
	if err := f.Remove("m.eml"); err != nil {
		t.Fatal(err)
	}
	if got := testenv.ListDir(t, f.Path()); !slices.Equal(got, []string{".x.tmp", "n.json", "n.json.json", "unsent.dsn.eml"}) {
		t.Errorf("after Remove the folder holds %v", got)
	}
	if ForConnector(filepath.Join(dir, "none")).Count() != 0 {
		t.Error("a missing folder is not empty")
	}
}

// A replayed message that fails again stays where it is, with its new reason.
func TestMoveInPlace(t *testing.T) {
	f := Folder(filepath.Join(t.TempDir(), FolderName))
	p, err := f.Write("m", strings.NewReader("x"), sampleRecord())
	if err != nil {
		t.Fatal(err)
	}
	rec := sampleRecord()
	rec.Reason = "again"
	q, err := f.Move(p, "", rec)
	if err != nil || q != p {
		t.Fatalf("Move = %s, %v", q, err)
	}
	if back, _ := readRecord(t, p); back.Reason != "again" {
		t.Errorf("reason %q", back.Reason)
	}
	if got := testenv.ListDir(t, f.Path()); !slices.Equal(got, []string{"m", "m.json"}) {
		t.Errorf("folder holds %v", got)
	}
}

func TestRestore(t *testing.T) {
	dir := t.TempDir()
	f := Folder(filepath.Join(dir, FolderName))
	if _, err := f.Write("m", strings.NewReader("x"), sampleRecord()); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteDSN("m", []byte("dsn")); err != nil {
		t.Fatal(err)
	}
	if err := f.Restore("m", dir, ""); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "m")); string(b) != "x" {
		t.Errorf("restored %q", b)
	}
	if got := testenv.ListDir(t, f.Path()); len(got) != 0 {
		t.Errorf("left %v", got)
	}
	if err := f.Restore("m", dir, ""); err == nil {
		t.Error("restored a message that is not there")
	}
	// A message quarantined as m.1 (m was taken there) goes back as m, its own name.
	os.Remove(filepath.Join(dir, "m"))
	if p, err := f.Write("m", strings.NewReader("y"), sampleRecord()); err != nil || p != filepath.Join(f.Path(), "m") {
		t.Fatalf("Write = %s, %v", p, err)
	}
	if p, err := f.Write("m", strings.NewReader("z"), sampleRecord()); err != nil || p != filepath.Join(f.Path(), "m.1") {
		t.Fatalf("Write = %s, %v", p, err)
	}
	if err := f.Restore("m.1", dir, "m"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "m")); string(b) != "z" {
		t.Errorf("restored m holds %q", b)
	}
	if !f.Has("m") || f.Has("m.1") {
		t.Error("the other m moved, or m.1 stayed")
	}
}

// TestQuarantineLongName: a file whose name is 255 bytes (NAME_MAX) is quarantined, its
// variants too, and each name leaves room for its companions (.json, the DSN copy and
// their temporary names); the record keeps the original name.
func TestQuarantineLongName(t *testing.T) {
	dir := t.TempDir()
	folder := filepath.Join(dir, FolderName)
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
		p, err := Folder(folder).Move(src, "", rec)
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
	folder := filepath.Join(dir, FolderName)
	for _, n := range []int{251, 252, 253, 254, 255} {
		for _, unit := range []string{"é", "日", "𝄞"} {
			name := strings.Repeat(unit, n/len(unit))
			name += strings.Repeat("x", n-len(name))
			src := filepath.Join(dir, name)
			if err := os.WriteFile(src, []byte("m"), 0o644); err != nil {
				t.Fatal(err)
			}
			p, err := Folder(folder).Move(src, "", NewRecord("mx", name, importer.Result{Outcome: importer.OutcomeFailed}))
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

func lf(lines ...string) string { return strings.Join(lines, "\n") }

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// TestQuarantineConcurrentSameName: files of one name quarantined at once (a writer
// that reuses names, several workers or hosts) each keep their own message and reason;
// none replaces another.
func TestQuarantineConcurrentSameName(t *testing.T) {
	for _, how := range []string{"move", "write", "move without links"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			f := Folder(filepath.Join(dir, FolderName))
			if strings.HasSuffix(how, "without links") {
				// A share without hard links: reserved by an O_EXCL create.
				link = func(string, string) error { return syscall.ENOTSUP }
				old := link
				t.Cleanup(func() { link = old })
			}
			const n = 16
			var wg sync.WaitGroup
			errs := make([]error, n)
			for i := range n {
				content := "message " + strconv.Itoa(i)
				rec := sampleRecord()
				rec.ID = "id-" + strconv.Itoa(i)
				src := filepath.Join(dir, "in", strconv.Itoa(i), "m")
				if err := os.MkdirAll(filepath.Dir(src), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(src, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					if strings.HasPrefix(how, "move") {
						_, errs[i] = f.Move(src, "m", rec)
					} else {
						_, errs[i] = f.Write("m", strings.NewReader(content), rec)
					}
				}()
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("quarantine %d: %v", i, err)
				}
			}
			entries, err := f.List()
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for _, e := range entries {
				b, err := os.ReadFile(e.Path)
				if err != nil {
					t.Fatal(err)
				}
				if e.Record == nil {
					t.Errorf("%s has no reason", e.Name)
					continue
				}
				if want := "message " + strings.TrimPrefix(e.Record.ID, "id-"); string(b) != want {
					t.Errorf("%s holds %q under the reason of %s", e.Name, b, e.Record.ID)
				}
				seen[string(b)] = true
			}
			if len(entries) != n || len(seen) != n {
				t.Errorf("%d quarantined, %d distinct messages; want %d of each", len(entries), len(seen), n)
			}
		})
	}
}

// TestQuarantineReservationLeftover: a name reserved by a quarantine that a crash
// interrupted is taken again by the same message only; reservations (also one cut short,
// an empty file without a reason) are not listed as messages, but an empty message with
// its reason is, and so is a message that reads like a reservation.
func TestQuarantineReservationLeftover(t *testing.T) {
	dir := t.TempDir()
	f := Folder(filepath.Join(dir, FolderName))
	if err := os.MkdirAll(f.Path(), 0o750); err != nil {
		t.Fatal(err)
	}
	left := sampleRecord()
	left.ID = "the-first"
	if err := f.writeRecord("m", left); err != nil {
		t.Fatal(err)
	}
	for n, content := range map[string]string{"m": reservedFor + "the-first\n", "x": reservedFor + "someone\n", "z": ""} {
		if err := os.WriteFile(filepath.Join(f.Path(), n), []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	// An empty message quarantined as such (its reason says size 0) is listed.
	empty := sampleRecord()
	empty.Size = 0
	if _, err := f.Write("e", strings.NewReader(""), empty); err != nil {
		t.Fatal(err)
	}
	mimic := sampleRecord()
	mimic.Size = int64(len(reservedFor + "the-first\n"))
	if _, err := f.Write("y", strings.NewReader(reservedFor+"the-first\n"), mimic); err != nil {
		t.Fatal(err)
	}
	if f.Has("m") || !f.Has("y") {
		t.Errorf("Has: reservation m %v, message y %v", f.Has("m"), f.Has("y"))
	}
	entries, err := f.List()
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, e := range entries {
		listed = append(listed, e.Name)
	}
	if slices.Sort(listed); !slices.Equal(listed, []string{"e", "y"}) {
		t.Errorf("listed %v; want e and y (m and x are reservations)", listed)
	}
	if names, _ := f.names(); slices.Contains(names, "x") || slices.Contains(names, "z") {
		t.Errorf("counted a reservation without a reason (x, or z cut short): %v", names)
	}
	if tmps, _ := filepath.Glob(filepath.Join(f.Path(), ".*")); len(tmps) != 0 {
		t.Errorf("temporary files left: %v", tmps)
	}
	move := func(id, content string) string {
		t.Helper()
		src := filepath.Join(dir, "m")
		if err := os.WriteFile(src, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		rec := sampleRecord()
		rec.ID = id
		p, err := f.Move(src, "", rec)
		if err != nil {
			t.Fatal(err)
		}
		if back, _ := readRecord(t, p); back.ID != id {
			t.Errorf("%s: reason of %s", p, back.ID)
		}
		return filepath.Base(p)
	}
	if got := move("another", "other message"); got != "m.1" {
		t.Errorf("another message took %s; want m.1", got)
	}
	if got := move("the-first", "first message"); got != "m" {
		t.Errorf("the interrupted message took %s; want its reservation m", got)
	}
	if b, _ := os.ReadFile(filepath.Join(f.Path(), "m")); string(b) != "first message" {
		t.Errorf("m holds %q", b)
	}
	if got := move("third", "third message"); got != "m.2" {
		t.Errorf("a third message took %s; want m.2", got)
	}
}

// TestRestoreNameTaken: a file that took the message's name in the drop folder stays
// as it is, and the quarantined message stays quarantined.
func TestRestoreNameTaken(t *testing.T) {
	dir := t.TempDir()
	f := Folder(filepath.Join(dir, FolderName))
	if _, err := f.Write("m", strings.NewReader("quarantined"), sampleRecord()); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "m"), []byte("new arrival"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := f.Restore("m", dir, ""); err == nil {
		t.Fatal("restored over a file of the same name")
	}
	old := link
	link = func(string, string) error { return syscall.EPERM } // no hard links: look, then rename
	defer func() { link = old }()
	if err := f.Restore("m", dir, ""); err == nil {
		t.Fatal("restored over a file of the same name without links")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "m")); string(b) != "new arrival" {
		t.Errorf("drop file holds %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(f.Path(), "m")); string(b) != "quarantined" {
		t.Errorf("quarantined message holds %q", b)
	}
	if !f.Has("m") || f.Count() != 1 {
		t.Error("message no longer quarantined")
	}
}
