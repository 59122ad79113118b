package watcher

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// record builds one struct inotify_event with name padded by pad NULs.
func record(mask uint32, name string, pad int) []byte {
	b := make([]byte, unix.SizeofInotifyEvent, unix.SizeofInotifyEvent+len(name)+pad)
	binary.NativeEndian.PutUint32(b[0:4], 1)
	binary.NativeEndian.PutUint32(b[4:8], mask)
	binary.NativeEndian.PutUint32(b[12:16], uint32(len(name)+pad))
	b = append(b, name...)
	return append(b, make([]byte, pad)...)
}

func TestParseInotify(t *testing.T) {
	var buf []byte
	buf = append(buf, record(unix.IN_CREATE, "a", 15)...)
	buf = append(buf, record(unix.IN_MOVED_TO, "b", 3)...)
	buf = append(buf, record(unix.IN_MODIFY, "c", 0)...)
	buf = append(buf, record(unix.IN_MOVED_FROM, "d", 7)...) // not asked for: ignored
	buf = append(buf, record(unix.IN_DELETE, "e", 1)...)     // not asked for: ignored
	buf = append(buf, record(unix.IN_CREATE|unix.IN_ISDIR, "new", 1)...)
	buf = append(buf, record(unix.IN_ATTRIB, "f", 3)...) // not asked for: ignored
	buf = append(buf, record(unix.IN_CREATE, "", 0)...)  // no name: ignored
	buf = append(buf, record(unix.IN_Q_OVERFLOW, "", 0)...)
	buf = append(buf, record(unix.IN_DELETE_SELF, "", 0)...)
	buf = append(buf, record(unix.IN_IGNORED, "", 0)...)
	var got []dirEvent
	if err := parseInotify(buf, func(ev dirEvent) { got = append(got, ev) }); err != nil {
		t.Fatal(err)
	}
	want := []dirEvent{
		{opCreate, "a"}, {opMovedIn, "b"}, {opWrite, "c"},
		{opCreate, "new"},
		{op: opOverflow}, {op: opFolderGone}, {op: opFolderGone},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d events %v, want %v", len(got), got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("event %d: %+v, want %+v", i, got[i], want[i])
		}
	}

	// A read that ends inside a record is an error, after the whole records before it.
	full := record(unix.IN_CREATE, "abc", 5)
	for _, short := range [][]byte{full[:10], full[:len(full)-1]} {
		n := 0
		err := parseInotify(append(record(unix.IN_CREATE, "x", 3), short...), func(dirEvent) { n++ })
		if !errors.Is(err, errInotifyShort) || n != 1 {
			t.Errorf("short record of %d bytes: err %v after %d events, want errInotifyShort after 1", len(short), err, n)
		}
	}
	// A length beyond what was read, however large, is refused without reading past it.
	huge := record(unix.IN_CREATE, "x", 0)
	binary.NativeEndian.PutUint32(huge[12:16], ^uint32(0))
	if err := parseInotify(huge, func(dirEvent) {}); !errors.Is(err, errInotifyShort) {
		t.Errorf("length 2^32-1: %v, want errInotifyShort", err)
	}
}

// FuzzParseInotify: any buffer parses without a panic; every event's name lies within
// the buffer and ends in no NUL, and a buffer without error is whole records.
func FuzzParseInotify(f *testing.F) {
	f.Add(record(unix.IN_CREATE, "msg", 13))
	f.Add(append(record(unix.IN_MOVED_TO, "a", 3), record(unix.IN_Q_OVERFLOW, "", 0)...))
	f.Add(record(unix.IN_DELETE, "x", 0)[:17])
	f.Fuzz(func(t *testing.T, buf []byte) {
		names := 0
		err := parseInotify(buf, func(ev dirEvent) {
			if ev.op < opCreate || ev.op > opOverflow {
				t.Fatalf("event with no operation: %+v", ev)
			}
			if len(ev.name) > 0 && ev.name[len(ev.name)-1] == 0 {
				t.Fatalf("name ends in NUL: %q", ev.name)
			}
			if !bytes.Contains(buf, []byte(ev.name)) {
				t.Fatalf("name %q not from the buffer", ev.name)
			}
			names += len(ev.name)
		})
		if names > len(buf) {
			t.Fatalf("names of %d bytes from a buffer of %d", names, len(buf))
		}
		if err == nil && len(buf) > 0 && len(buf) < unix.SizeofInotifyEvent {
			t.Fatal("a buffer shorter than one record parsed")
		}
	})
}

// TestDirWatch: the watch tells a file created in the folder from one renamed into it,
// reports writes and the folder's own removal, and nothing of what goes away (mxdrop's
// claims are such renames); Close returns with the reader ended.
func TestDirWatch(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "drop")
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	w, err := newDirWatch(dir, 16)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	next := func() dirEvent {
		t.Helper()
		select {
		case ev := <-w.events:
			return ev
		case err := <-w.errs:
			t.Fatal(err)
		case <-time.After(5 * time.Second):
			t.Fatal("no event")
		}
		return dirEvent{}
	}
	expect := func(op dirOp, name string) {
		t.Helper()
		if ev := next(); ev.op != op || ev.name != name {
			t.Fatalf("event %v %q, want %v %q", ev.op, ev.name, op, name)
		}
	}

	f, err := os.Create(filepath.Join(dir, "inplace"))
	if err != nil {
		t.Fatal(err)
	}
	expect(opCreate, "inplace")
	f.WriteString("x")
	expect(opWrite, "inplace")
	f.Close() // no event: closes are not asked for

	// Renamed in from another folder, and within the folder from a writer's dot-file.
	if err := os.WriteFile(filepath.Join(root, "outside"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(root, "outside"), filepath.Join(dir, "from-outside")); err != nil {
		t.Fatal(err)
	}
	expect(opMovedIn, "from-outside")
	if err := os.WriteFile(filepath.Join(dir, ".tmp"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	expect(opCreate, ".tmp")
	if err := os.Rename(filepath.Join(dir, ".tmp"), filepath.Join(dir, "within")); err != nil {
		t.Fatal(err)
	}
	expect(opMovedIn, "within")                                           // its old name's rename away is not reported
	if err := os.Chmod(filepath.Join(dir, "within"), 0o644); err != nil { // no event
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "within")); err != nil {
		t.Fatal(err)
	}
	// The removals of the three files are not reported; the folder's is.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if ev := next(); ev.op != opFolderGone {
		t.Fatalf("event %v %q, want the folder gone", ev.op, ev.name)
	}
	done := make(chan error, 1)
	go func() { done <- w.Close() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
}

// TestDirWatchTake: the events a take function returns true for are taken on the
// reader and never reach the events channel; the others reach it in the kernel's order.
func TestDirWatchTake(t *testing.T) {
	dir := t.TempDir()
	w, err := newDirWatch(dir, 16)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	took := make(chan dirEvent, 16)
	w.SetTake(func(ev dirEvent) bool {
		if ev.op == opMovedIn && ev.name[0] == 't' {
			took <- ev
			return true
		}
		return false
	})
	write := func(name string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rename := func(from, to string) {
		t.Helper()
		if err := os.Rename(filepath.Join(dir, from), filepath.Join(dir, to)); err != nil {
			t.Fatal(err)
		}
	}
	write(".a") // create and write, then renamed in: taken
	rename(".a", "taken")
	write("inplace") // left: create, write
	write(".b")      // left: create, write; its rename in is not taken (no "t")
	rename(".b", "other")
	want := []dirEvent{
		{opCreate, ".a"}, {opWrite, ".a"},
		{opCreate, "inplace"}, {opWrite, "inplace"},
		{opCreate, ".b"}, {opWrite, ".b"}, {opMovedIn, "other"},
	}
	for i, wv := range want {
		select {
		case ev := <-w.events:
			if ev != wv {
				t.Fatalf("event %d: %v %q, want %v %q", i, ev.op, ev.name, wv.op, wv.name)
			}
		case err := <-w.errs:
			t.Fatal(err)
		case <-time.After(5 * time.Second):
			t.Fatalf("event %d (%v %q) never came", i, wv.op, wv.name)
		}
	}
	select {
	case ev := <-took:
		if ev != (dirEvent{opMovedIn, "taken"}) {
			t.Fatalf("took %v %q, want the rename in of taken", ev.op, ev.name)
		}
	default:
		t.Fatal("the rename in of taken was not taken")
	}
	select {
	case ev := <-w.events:
		t.Fatalf("taken event also on the channel, or an extra one: %v %q", ev.op, ev.name)
	case ev := <-took:
		t.Fatalf("took %v %q as well", ev.op, ev.name)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestRenamedInTakenAtOnce: a file renamed into the drop folder is complete by the
// writers' convention and is taken without the write-lease check, even while a
// descriptor its writer opened is still open; a file created in place is not taken
// while it is open for writing.
func TestRenamedInTakenAtOnce(t *testing.T) {
	c, root := testConnector(t)
	c.Settle = time.Hour // only the event can make a file be taken here
	m := NewManager("daemon", 2, zerolog.Nop())
	runManager(t, m, c)
	waitFor(t, "the watch", 5*time.Second, func() bool {
		h := m.Health()
		return len(h) == 1 && h[0].Running
	})
	alice := filepath.Join(root, "mail", "alice")

	inplace, err := os.Create(filepath.Join(c.DropFolder, "inplace"))
	if err != nil {
		t.Fatal(err)
	}
	defer inplace.Close()
	inplace.Write(message(1, "alice@example.com"))

	tmp := filepath.Join(c.DropFolder, ".renamed.tmp")
	w, err := os.Create(tmp)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Write(message(2, "alice@example.com"))
	if err := os.Rename(tmp, filepath.Join(c.DropFolder, "renamed")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "renamed file imported", 5*time.Second, func() bool { return countNew(t, alice) == 1 })
	time.Sleep(200 * time.Millisecond)
	if n := countNew(t, alice); n != 1 {
		t.Fatalf("alice has %d messages, want 1: a file open for writing in place was taken", n)
	}
	if _, err := os.Stat(filepath.Join(c.DropFolder, "inplace")); err != nil {
		t.Fatalf("in-place file: %v", err)
	}
}
