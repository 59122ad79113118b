package watcher

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer"
	"github.com/mxdrop/mxdrop/importer/intake"
	"github.com/mxdrop/mxdrop/importer/quarantine"
)

// testConnector returns a connector over a fresh drop folder delivering to two accounts.
func testConnector(t *testing.T) (*Connector, string) {
	t.Helper()
	root := t.TempDir()
	drop := filepath.Join(root, "drop")
	if err := os.MkdirAll(drop, 0o750); err != nil {
		t.Fatal(err)
	}
	im, err := importer.New(importer.Options{
		Accounts: []configs.Account{
			{Address: "alice@example.com", Maildir: filepath.Join(root, "mail", "alice")},
			{Address: "bob@example.com", Maildir: filepath.Join(root, "mail", "bob")},
		},
		Domains: []string{"example.com"},
	})
	if err != nil {
		t.Fatal(err)
	}
	in := &intake.Intake{Source: "mx", Kind: intake.KindConnector, Importer: im, Quarantine: quarantine.ForConnector(drop), Log: zerolog.Nop()}
	return &Connector{Name: "mx", DropFolder: drop, Settle: 300 * time.Millisecond, Intake: in, Log: zerolog.Nop()}, root
}

func message(id int, rcpts ...string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "Return-Path: <sender@remote.test>\n")
	fmt.Fprintf(&b, "Envelope-to: %s\n", strings.Join(rcpts, ", "))
	fmt.Fprintf(&b, "From: sender@remote.test\nTo: %s\nSubject: test %d\nMessage-ID: <m%d@remote.test>\n\nbody %d\n", strings.Join(rcpts, ", "), id, id, id)
	return []byte(b.String())
}

// dropRename writes a message the way Maildir-style writers do: a dot-file, renamed into place.
func dropRename(t *testing.T, drop, name string, data []byte) {
	t.Helper()
	tmp := filepath.Join(drop, "."+name+".tmp")
	if err := os.WriteFile(tmp, data, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(drop, name)); err != nil {
		t.Fatal(err)
	}
}

// countNew returns the number of messages in a Maildir's new/ and whether tmp/ is empty.
func countNew(t *testing.T, md string) int {
	t.Helper()
	entries, _ := os.ReadDir(filepath.Join(md, "new"))
	return len(entries)
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestClaimRaceOneWinner(t *testing.T) {
	drop := t.TempDir()
	const files, instances = 200, 4
	for i := 0; i < files; i++ {
		os.WriteFile(filepath.Join(drop, fmt.Sprintf("f%03d", i)), []byte("x"), 0o640)
	}
	var cls []*claims
	for i := 0; i < instances; i++ {
		cl, err := testClaims(t, drop, fmt.Sprintf("inst%d", i))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.close()
		cls = append(cls, cl)
	}
	var mu sync.Mutex
	won := map[string]int{}
	var wg sync.WaitGroup
	for _, cl := range cls {
		wg.Add(1)
		go func(cl *claims) {
			defer wg.Done()
			for i := 0; i < files; i++ {
				name := fmt.Sprintf("f%03d", i)
				if _, ok, err := cl.claim(filepath.Join(drop, name)); err != nil {
					t.Error(err)
				} else if ok {
					mu.Lock()
					won[name]++
					mu.Unlock()
				}
			}
		}(cl)
	}
	wg.Wait()
	if len(won) != files {
		t.Fatalf("%d files claimed, want %d", len(won), files)
	}
	for name, n := range won {
		if n != 1 {
			t.Errorf("%s claimed %d times", name, n)
		}
	}
}

func TestClaimNeverReplaces(t *testing.T) {
	drop := t.TempDir()
	cl, err := testClaims(t, drop, "me")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.close()
	var paths []string
	for i := 0; i < 3; i++ {
		os.WriteFile(filepath.Join(drop, "same"), []byte(fmt.Sprint(i)), 0o640)
		p, ok, err := cl.claim(filepath.Join(drop, "same"))
		if err != nil || !ok {
			t.Fatalf("claim %d: ok=%v err=%v", i, ok, err)
		}
		paths = append(paths, p)
	}
	for i, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil || string(b) != fmt.Sprint(i) {
			t.Errorf("claim %d at %s holds %q, %v", i, p, b, err)
		}
	}
}

// TestAdoptDeadInstanceOnly: a dead instance's claims, under claim names in the drop
// folder (and its new/) and in its claims folder (the layout of earlier releases), and
// claim names whose instance has no claims folder, are adopted as this instance's under
// their own names; a live instance's claims are never touched.
func TestAdoptDeadInstanceOnly(t *testing.T) {
	drop := t.TempDir()
	os.Mkdir(filepath.Join(drop, "new"), 0o750)
	alive, err := testClaims(t, drop, "alive")
	if err != nil {
		t.Fatal(err)
	}
	defer alive.close()
	dead, err := testClaims(t, drop, "dead")
	if err != nil {
		t.Fatal(err)
	}
	write := func(p string) string {
		t.Helper()
		if err := os.WriteFile(p, []byte(filepath.Base(p)), 0o640); err != nil {
			t.Fatal(err)
		}
		return p
	}
	claim := func(cl *claims, p string) string {
		t.Helper()
		c, ok, err := cl.claim(write(p))
		if !ok || err != nil {
			t.Fatalf("claim %s: %v %v", p, ok, err)
		}
		return c
	}
	aliveFiles := []string{write(filepath.Join(alive.dir, "a-old")), claim(alive, filepath.Join(drop, "a-new"))}
	write(filepath.Join(dead.dir, "d-old"))
	claim(dead, filepath.Join(drop, "d-new"))
	claim(dead, filepath.Join(drop, "new", "d-maildir"))
	write(filepath.Join(drop, claimName(instanceTag("gone"), 3, "orphan")))
	dead.close() // the process died: its lock is gone

	me, err := testClaims(t, drop, "me")
	if err != nil {
		t.Fatal(err)
	}
	defer me.close()
	got, err := me.adopt()
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(got)
	want := []string{
		filepath.Join(drop, claimName(me.tag, 0, "d-new")),
		filepath.Join(drop, claimName(me.tag, 0, "d-old")),
		filepath.Join(drop, claimName(me.tag, 0, "orphan")),
		filepath.Join(drop, "new", claimName(me.tag, 0, "d-maildir")),
	}
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Fatalf("adopted %v\nwant %v", got, want)
	}
	for _, p := range got {
		if b, err := os.ReadFile(p); err != nil || string(b) != OriginalName(p) && !strings.HasSuffix(string(b), "."+OriginalName(p)) {
			t.Errorf("%s holds %q, %v", p, b, err)
		}
	}
	for _, p := range aliveFiles {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("a live instance's claim was touched: %v", err)
		}
	}
	if _, err := os.Stat(dead.dir); !os.IsNotExist(err) {
		t.Errorf("dead claims folder not removed: %v", err)
	}
	if again, err := me.adopt(); len(again) != 0 || err != nil {
		t.Errorf("adopted again: %v %v", again, err)
	}
}

func TestOnceImportsAndQuarantines(t *testing.T) {
	c, root := testConnector(t)
	c.Settle = 0
	for i := 0; i < 20; i++ {
		dropRename(t, c.DropFolder, fmt.Sprintf("msg%02d", i), message(i, "alice@example.com", "bob@example.com"))
	}
	dropRename(t, c.DropFolder, "unknown", message(100, "nobody@example.com"))
	dropRename(t, c.DropFolder, "empty", nil)
	m := NewManager("once", 4, zerolog.Nop())
	if err := m.Once(context.Background(), []*Connector{c}); err != nil {
		t.Fatal(err)
	}
	if n := m.Counts().Imported.Load(); n != 20 {
		t.Errorf("imported %d, want 20", n)
	}
	if n := m.Counts().Quarantined.Load(); n != 2 {
		t.Errorf("quarantined %d, want 2", n)
	}
	for _, a := range []string{"alice", "bob"} {
		if n := countNew(t, filepath.Join(root, "mail", a)); n != 20 {
			t.Errorf("%s has %d messages, want 20", a, n)
		}
	}
	left, _ := os.ReadDir(c.DropFolder)
	for _, e := range left {
		if e.Name() != quarantine.FolderName && e.Name() != WorkDir {
			t.Errorf("left in drop folder: %s", e.Name())
		}
	}
	for _, n := range []string{"unknown", "unknown.json", "empty", "empty.json"} {
		if _, err := os.Stat(filepath.Join(c.DropFolder, quarantine.FolderName, n)); err != nil {
			t.Errorf("ImportFailed/%s: %v", n, err)
		}
	}
	claimsLeft, _ := os.ReadDir(claimsRoot(c.DropFolder))
	if len(claimsLeft) != 0 {
		t.Errorf("claims folders left: %d", len(claimsLeft))
	}
}

func TestKeepImported(t *testing.T) {
	c, _ := testConnector(t)
	c.Settle, c.KeepImported = 0, true
	dropRename(t, c.DropFolder, "m1", message(1, "alice@example.com"))
	m := NewManager("once", 1, zerolog.Nop())
	if err := m.Once(context.Background(), []*Connector{c}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(c.DropFolder, ImportedFolder, "m1")); err != nil {
		t.Fatalf("imported file not kept: %v", err)
	}
}

func TestTransientErrorKeepsFileAndRecovers(t *testing.T) {
	c, root := testConnector(t)
	c.Settle = 0
	// alice's Maildir cannot be created: its parent is a regular file.
	block := filepath.Join(root, "mail")
	os.WriteFile(block, []byte("not a folder"), 0o640)
	dropRename(t, c.DropFolder, "m1", message(1, "alice@example.com"))
	m := NewManager("first", 1, zerolog.Nop())
	m.Once(context.Background(), []*Connector{c})
	if n := m.Counts().Retry.Load(); n != 1 {
		t.Fatalf("retry count %d, want 1", n)
	}
	// The file is still claimed in the drop folder, nowhere lost.
	matches := ClaimedFiles(c.DropFolder)
	if len(matches) != 1 || OriginalName(matches[0]) != "m1" {
		t.Fatalf("claimed file not kept: %v", matches)
	}
	// Its claims folder stays with it: its released lease lets the next run adopt
	// the claim at once, on a share too.
	if _, err := os.Stat(filepath.Join(claimsRoot(c.DropFolder), "first", leaseFile)); err != nil {
		t.Errorf("claims folder of the run that left a claim: %v", err)
	}
	// Fixed: the next run adopts the claim and delivers once.
	os.Remove(block)
	m2 := NewManager("second", 1, zerolog.Nop())
	if err := m2.Once(context.Background(), []*Connector{c}); err != nil {
		t.Fatal(err)
	}
	if n := countNew(t, filepath.Join(root, "mail", "alice")); n != 1 {
		t.Fatalf("alice has %d messages, want 1", n)
	}
}

func TestRunRenamedAndWrittenInPlace(t *testing.T) {
	c, root := testConnector(t)
	m := NewManager("daemon", 2, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, []*Connector{c}) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	alice := filepath.Join(root, "mail", "alice")

	// Renamed in: taken at once (well before the settle time).
	time.Sleep(100 * time.Millisecond) // the watch is set up
	dropRename(t, c.DropFolder, "renamed", message(1, "alice@example.com"))
	waitFor(t, "renamed file imported", 5*time.Second, func() bool { return countNew(t, alice) == 1 })

	// Written in place slowly: never taken while the writer has it open.
	f, err := os.Create(filepath.Join(c.DropFolder, "inplace"))
	if err != nil {
		t.Fatal(err)
	}
	data := message(2, "alice@example.com")
	for i, b := range data {
		f.Write([]byte{b})
		if i%16 == 0 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	if countNew(t, alice) != 1 {
		t.Fatal("a file still being written was taken")
	}
	f.Close()
	waitFor(t, "in-place file imported", 5*time.Second, func() bool { return countNew(t, alice) == 2 })
	entries, _ := os.ReadDir(filepath.Join(alice, "new"))
	for _, e := range entries {
		b, _ := os.ReadFile(filepath.Join(alice, "new", e.Name()))
		if strings.Contains(string(b), "test 2") && !strings.HasSuffix(string(b), "body 2\n") {
			t.Errorf("in-place file imported incomplete: %q", b)
		}
	}
}
