package pollers

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"
)

func readAll(t *testing.T, g spooled) string {
	t.Helper()
	r, err := g.open()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func newTestSpool(t *testing.T) *spool {
	t.Helper()
	sp, err := newSpool(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

func spillFiles(t *testing.T, sp *spool) int {
	t.Helper()
	ents, err := os.ReadDir(sp.dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestLFWriter(t *testing.T) {
	for _, tc := range []struct {
		chunks []string
		want   string
	}{
		{[]string{"a\r\nb\r\n"}, "a\nb\n"},
		{[]string{"a\r", "\nb"}, "a\nb"},
		{[]string{"a\rb"}, "a\rb"},
		{[]string{"a\r", "b\r"}, "a\rb\r"},
		{[]string{"\r\n\r\n", "\r", "\r\n"}, "\n\n\r\n"},
	} {
		sp := newTestSpool(t)
		w := &lfWriter{w: sp.create(remoteMsg{Size: -1})}
		for _, c := range tc.chunks {
			if n, err := w.Write([]byte(c)); err != nil || n != len(c) {
				t.Fatalf("Write(%q) = %d, %v", c, n, err)
			}
		}
		if err := w.flush(); err != nil {
			t.Fatal(err)
		}
		g, err := w.w.finish()
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, g); got != tc.want || g.size != int64(len(tc.want)) {
			t.Errorf("%q: got %q (size %d), want %q", tc.chunks, got, g.size, tc.want)
		}
	}
}

// TestSpoolMemoryAndSpill checks where messages go: small ones into memory, one over
// spoolMemMax into a file, and ones past the batch's memory budget into files too;
// and that releasing gives back the memory and removes the files.
func TestSpoolMemoryAndSpill(t *testing.T) {
	sp := newTestSpool(t)
	write := func(size int64, hint int64, chunk int) spooled {
		t.Helper()
		w := sp.create(remoteMsg{Key: "k", Size: hint})
		data := bytes.Repeat([]byte("x"), int(size))
		for len(data) > 0 {
			n := min(chunk, len(data))
			if _, err := w.Write(data[:n]); err != nil {
				t.Fatal(err)
			}
			data = data[n:]
		}
		g, err := w.finish()
		if err != nil {
			t.Fatal(err)
		}
		if g.size != size || int64(len(readAll(t, g))) != size || g.m.Key != "k" {
			t.Fatalf("message of %d bytes came back with size %d", size, g.size)
		}
		return g
	}

	small := write(4000, 4000, 1000)
	if small.path != "" || small.data == nil {
		t.Errorf("a 4 kB message spilled into %s", small.path)
	}
	unknown := write(10000, -1, 3000) // no size hint: grows in memory
	if unknown.path != "" {
		t.Errorf("a 10 kB message of unknown size spilled into %s", unknown.path)
	}
	big := write(spoolMemMax+1, spoolMemMax+1, 64<<10)
	if big.path == "" {
		t.Error("a message over spoolMemMax stayed in memory")
	}
	wrongHint := write(spoolMemMax+100, 1000, 64<<10) // the server understated its size
	if wrongHint.path == "" {
		t.Error("a message that outgrew spoolMemMax stayed in memory")
	}
	if n := spillFiles(t, sp); n != 2 {
		t.Errorf("%d spill files, want 2", n)
	}
	held := sp.inMem
	if held < 14000 || held > 4000+2*10000+4096 {
		t.Errorf("memory held %d bytes for 14 kB of messages", held)
	}

	// Fill the budget: what does not fit goes to files, and nothing is lost.
	var all []spooled
	for sp.inMem+spoolMemMax <= spoolMemBudget {
		all = append(all, write(spoolMemMax, spoolMemMax, 32<<10))
	}
	over := write(spoolMemMax, spoolMemMax, 32<<10)
	if over.path == "" {
		t.Errorf("a message past the memory budget (%d of %d held) stayed in memory", sp.inMem, spoolMemBudget)
	}
	if sp.inMem > spoolMemBudget {
		t.Errorf("memory held %d > budget %d", sp.inMem, spoolMemBudget)
	}
	released := map[*byte]bool{&small.data[:1][0]: true, &unknown.data[:1][0]: true}
	for _, g := range append(all, small, unknown, big, wrongHint, over) {
		sp.release(g)
	}
	if sp.inMem != 0 {
		t.Errorf("memory held after releasing everything: %d", sp.inMem)
	}
	if n := spillFiles(t, sp); n != 0 {
		t.Errorf("%d spill files left after release", n)
	}
	// Released small buffers are reused.
	again := write(3000, 3000, 3000)
	if !released[&again.data[:1][0]] {
		t.Errorf("a released small buffer was not reused (cap %d)", cap(again.data))
	}
	sp.release(again)
}

func TestSpoolDiscard(t *testing.T) {
	sp := newTestSpool(t)
	w := sp.create(remoteMsg{Size: spoolMemMax * 2})
	w.Write([]byte(strings.Repeat("y", spoolMemMax+10)))
	if spillFiles(t, sp) != 1 {
		t.Fatal("no spill file")
	}
	w.discard()
	m := sp.create(remoteMsg{Size: 100})
	m.Write([]byte("part"))
	m.discard()
	if n := spillFiles(t, sp); n != 0 || sp.inMem != 0 {
		t.Errorf("after discard: %d files, %d bytes held", n, sp.inMem)
	}
}

// TestSpoolLimit: a writer refuses the write that takes its message past the spool's
// limit, whatever size was announced, in memory and once spilled, and keeps refusing;
// finish then fails and nothing is left behind. An announced size past the limit is
// refused before any write.
func TestSpoolLimit(t *testing.T) {
	for _, tc := range []struct {
		name  string
		limit int64
		hint  int64
	}{
		{"memory", 10000, 100},
		{"spilled", spoolMemMax + 5000, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sp := newTestSpool(t)
			sp.limit = tc.limit
			w := sp.create(remoteMsg{Key: "k", Size: tc.hint})
			chunk := bytes.Repeat([]byte("z"), 4096)
			var written int64
			var err error
			for err == nil {
				var n int
				n, err = w.Write(chunk)
				written += int64(n)
			}
			tl := asTooLarge(err)
			if tl == nil || tl.Key != "k" || tl.Limit != tc.limit || tl.Received != written+int64(len(chunk)) {
				t.Fatalf("error %v (%+v) after %d bytes", err, tl, written)
			}
			if written > tc.limit || written <= tc.limit-int64(len(chunk)) {
				t.Errorf("%d bytes taken for a limit of %d", written, tc.limit)
			}
			if _, err := w.Write([]byte("z")); asTooLarge(err) == nil {
				t.Errorf("a write after the refusal: %v", err)
			}
			if _, err := w.finish(); asTooLarge(err) == nil {
				t.Errorf("finish: %v", err)
			}
			if n := spillFiles(t, sp); n != 0 || sp.inMem != 0 {
				t.Errorf("after the refusal: %d files, %d bytes held", n, sp.inMem)
			}
			if err := sp.refuse(remoteMsg{Key: "a", Size: tc.limit + 1}); asTooLarge(err) == nil {
				t.Errorf("refuse of an announced size past the limit: %v", err)
			}
			if err := sp.refuse(remoteMsg{Key: "a", Size: tc.limit}); err != nil {
				t.Errorf("refuse of an announced size at the limit: %v", err)
			}
		})
	}
}
