package pollers

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func openTestState(t *testing.T, dir string) (*State, *StateProblem) {
	t.Helper()
	s, problem, err := OpenState(dir, "p", time.Unix(1000, 0), true)
	if err != nil {
		t.Fatal(err)
	}
	return s, problem
}

func TestStateScopes(t *testing.T) {
	dir := t.TempDir()
	s, problem := openTestState(t, dir)
	if problem != nil {
		t.Fatalf("first open reported %v", problem)
	}
	if ss, err := s.Scope("imap:INBOX"); err != nil || ss.Exists {
		t.Fatalf("unknown scope: %+v, %v", ss, err)
	}
	no, yes := false, true
	check := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	check(s.Apply("imap:INBOX", Change{Validity: 7, Complete: &no}))
	check(s.Apply("imap:INBOX", Change{Put: map[string]Entry{
		"1": {Status: StatusInFlight, First: 10},
		"2": {Status: StatusDone, First: 11, Done: 12, MessageID: "<a@x>"},
		"3": {Status: StatusTooLarge, First: 13, Size: 99},
	}}))
	check(s.Apply("imap:INBOX", Change{Delete: []string{"3"}, Complete: &yes}))
	ss, err := s.Scope("imap:INBOX")
	check(err)
	if !ss.Exists || ss.Validity != 7 || !ss.Complete || len(ss.Entries) != 2 {
		t.Fatalf("scope = %+v", ss)
	}
	if e := ss.Entries["2"]; e.Status != StatusDone || e.MessageID != "<a@x>" || e.First != 11 {
		t.Fatalf("entry 2 = %+v", e)
	}
	// A reset (new UIDVALIDITY) drops every entry.
	check(s.Apply("imap:INBOX", Change{Reset: true, Validity: 8, Put: map[string]Entry{"5": {Status: StatusDone}}, Complete: &no}))
	ss, err = s.Scope("imap:INBOX")
	check(err)
	if ss.Validity != 8 || ss.Complete || len(ss.Entries) != 1 || ss.Entries["5"].Status != StatusDone {
		t.Fatalf("after reset: %+v", ss)
	}
	// Scopes are separate.
	if ss, _ := s.Scope("pop3"); ss.Exists {
		t.Fatal("pop3 scope exists")
	}
	check(s.Close())

	// Everything survives a reopen.
	s, problem = openTestState(t, dir)
	defer s.Close()
	if problem != nil {
		t.Fatal(problem)
	}
	if ss, _ := s.Scope("imap:INBOX"); len(ss.Entries) != 1 || ss.Validity != 8 {
		t.Fatalf("after reopen: %+v", ss)
	}
}

func TestStateDups(t *testing.T) {
	s, _ := openTestState(t, t.TempDir())
	defer s.Close()
	k := DupKey("<m@x>", "alice@example.com")
	pa, pb := strings.Repeat("a", 64), strings.Repeat("b", 64)
	if seen, err := s.Seen(k, pa, time.Unix(0, 0)); err != nil || seen {
		t.Fatalf("unrecorded key seen=%v err=%v", seen, err)
	}
	if err := s.Apply("pop3", Change{Dups: map[string]int64{k: 100}, DupPrints: map[string]string{k: pa}}); err != nil {
		t.Fatal(err)
	}
	// A later record of the same key keeps the first time.
	if err := s.Apply("pop3", Change{Dups: map[string]int64{k: 500}, DupPrints: map[string]string{k: pa}}); err != nil {
		t.Fatal(err)
	}
	if seen, _ := s.Seen(k, pa, time.Unix(100, 0)); !seen {
		t.Fatal("key not seen within the window")
	}
	if seen, _ := s.Seen(k, pa, time.Unix(101, 0)); seen {
		t.Fatal("key seen although recorded before the window")
	}
	// Another message under the same Message-ID is not a duplicate, until recorded.
	if seen, _ := s.Seen(k, pb, time.Unix(100, 0)); seen {
		t.Fatal("key seen for other content")
	}
	s.Apply("pop3", Change{Dups: map[string]int64{k: 600}, DupPrints: map[string]string{k: pb}})
	if seen, _ := s.Seen(k, pb, time.Unix(100, 0)); !seen {
		t.Fatal("second content not recorded under the key")
	}
	other := DupKey("<m@x>", "bob@example.com")
	s.Apply("pop3", Change{Dups: map[string]int64{other: 300}, DupPrints: map[string]string{other: pa}})
	n, err := s.PruneDups(time.Unix(200, 0))
	if err != nil || n != 1 {
		t.Fatalf("pruned %d, %v; want 1", n, err)
	}
	if seen, _ := s.Seen(other, pa, time.Unix(0, 0)); !seen {
		t.Fatal("pruned a key inside the window")
	}
}

func TestStateLost(t *testing.T) {
	dir := t.TempDir()
	s, _ := openTestState(t, dir)
	s.Close()
	if err := os.Remove(filepath.Join(dir, "state.db")); err != nil {
		t.Fatal(err)
	}
	s, problem := openTestState(t, dir)
	defer s.Close()
	if problem == nil || problem.Kind != "lost" {
		t.Fatalf("problem = %v, want lost", problem)
	}
	if !strings.Contains(problem.Error(), "missing") {
		t.Errorf("message %q does not say the file is missing", problem.Error())
	}
}

func TestStateCorrupt(t *testing.T) {
	dir := t.TempDir()
	s, _ := openTestState(t, dir)
	s.Apply("pop3", Change{Put: map[string]Entry{"a": {Status: StatusDone}}})
	s.Close()
	path := filepath.Join(dir, "state.db")
	// Overwrite the two meta pages: bbolt rejects the file.
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(make([]byte, 8192), 0)
	f.Close()

	s, problem := openTestState(t, dir)
	defer s.Close()
	if problem == nil || problem.Kind != "corrupt" {
		t.Fatalf("problem = %v, want corrupt", problem)
	}
	if _, err := os.Stat(problem.Moved); err != nil {
		t.Fatalf("corrupt file not kept: %v", err)
	}
	if ss, _ := s.Scope("pop3"); ss.Exists {
		t.Fatal("new state has old content")
	}
}

func TestStateLocked(t *testing.T) {
	dir := t.TempDir()
	s, _ := openTestState(t, dir)
	defer s.Close()
	defer func(d time.Duration) { stateTimeout = d }(stateTimeout)
	stateTimeout = 50 * time.Millisecond
	_, _, err := OpenState(dir, "p", time.Unix(1000, 0), false)
	if !errors.Is(err, ErrStateLocked) {
		t.Fatalf("second open: %v, want ErrStateLocked", err)
	}
}
