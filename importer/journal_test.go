package importer

import (
	"fmt"
	"os"
	"testing"
)

// TestJournalIndex: a recovered message finds the recipients noted for it in the
// journals of finished deliveries, including lines appended after the index was first
// built and a line that was still being written at the first lookup; a message noted
// nowhere reads no journal at all.
func TestJournalIndex(t *testing.T) {
	dir := t.TempDir()
	var notes, other doneNotes
	for i := range 1000 {
		n := &notes
		if i%2 == 1 {
			n = &other // a second Importer's journal (a reload)
		}
		if err := n.add(dir, fmt.Sprintf("id%04d", i), map[string]bool{fmt.Sprintf("r%d@example.com", i): true}); err != nil {
			t.Fatal(err)
		}
	}
	lookup := func(id string) map[string]bool {
		done := map[string]bool{}
		readJournals(dir, id, done)
		return done
	}
	for _, i := range []int{0, 1, 998, 999} {
		if got := lookup(fmt.Sprintf("id%04d", i)); len(got) != 1 || !got[fmt.Sprintf("r%d@example.com", i)] {
			t.Errorf("id%04d: %v", i, got)
		}
	}
	if c := indexFor(dir).candidates(dir, "absent"); len(c) != 0 {
		t.Errorf("a message noted nowhere would read %v", c)
	}
	if got := lookup("absent"); len(got) != 0 {
		t.Errorf("absent: %v", got)
	}

	// Appended after the index was built.
	if err := notes.add(dir, "late", map[string]bool{"a@example.com": true, "b@example.com": true}); err != nil {
		t.Fatal(err)
	}
	if got := lookup("late"); len(got) != 2 || !got["a@example.com"] || !got["b@example.com"] {
		t.Errorf("late: %v", got)
	}

	// A line being written: not yet whole at the first lookup, whole at the second.
	f, err := os.OpenFile(notes.name, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString("half\x00c@exa")
	if got := lookup("half"); got["c@example.com"] {
		t.Errorf("half a line read as whole: %v", got)
	}
	f.WriteString("mple.com\n")
	if got := lookup("half"); len(got) != 1 || !got["c@example.com"] {
		t.Errorf("half, once whole: %v", got)
	}

	// A swept journal leaves the index.
	if err := os.Remove(other.name); err != nil {
		t.Fatal(err)
	}
	if got := lookup("id0001"); len(got) != 0 {
		t.Errorf("id0001 after its journal was swept: %v", got)
	}
	if n := len(indexFor(dir).files); n != 1 {
		t.Errorf("the index holds %d journals, want 1", n)
	}
}

// BenchmarkJournalLookupMiss is the journal lookup of a message retried after a
// temporary error that no journal notes, with 100,000 finished deliveries noted.
func BenchmarkJournalLookupMiss(b *testing.B) {
	dir := b.TempDir()
	var notes doneNotes
	for i := range 100_000 {
		if err := notes.add(dir, fmt.Sprintf("<%d.bench@example.net>", i), map[string]bool{"alice@example.com": true}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		done := map[string]bool{}
		readJournals(dir, fmt.Sprintf("<retry%d@example.net>", i), done)
		if len(done) != 0 {
			b.Fatal(done)
		}
	}
}
