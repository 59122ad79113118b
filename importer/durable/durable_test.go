package durable

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func write(s string) WriteFunc {
	return func(w io.Writer) error {
		_, err := io.WriteString(w, s)
		return err
	}
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		prepare func(t *testing.T)
		write   WriteFunc
		want    string // content of dir/f afterwards; "" = absent
		wantErr bool
	}{
		{"new file", nil, write("hello"), "hello", false},
		{"replaces a leftover temporary file", func(t *testing.T) {
			os.WriteFile(filepath.Join(tmp, "t"), []byte("half written and longer"), 0o600)
		}, write("whole"), "whole", false},
		{"a failing write leaves no trace", func(t *testing.T) {
			os.Remove(filepath.Join(dir, "f"))
		}, func(w io.Writer) error {
			io.WriteString(w, strings.Repeat("x", 200_000))
			return errors.New("source gone")
		}, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.prepare != nil {
				tc.prepare(t)
			}
			err := WriteFile(tmp, "t", dir, "f", 0o640, tc.write)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v", err)
			}
			b, rerr := os.ReadFile(filepath.Join(dir, "f"))
			if tc.want == "" {
				if !errors.Is(rerr, os.ErrNotExist) {
					t.Errorf("dir/f exists: %q", b)
				}
			} else if string(b) != tc.want {
				t.Errorf("content %q, want %q", b, tc.want)
			}
			if es, _ := os.ReadDir(tmp); len(es) != 0 {
				t.Errorf("temporary file left: %v", es)
			}
			if tc.want != "" {
				if fi, _ := os.Stat(filepath.Join(dir, "f")); fi.Mode().Perm() != 0o640 {
					t.Errorf("mode %v", fi.Mode())
				}
			}
		})
	}
}

// A failed write never touches an existing file of the same name.
func TestWriteFileKeepsOldOnError(t *testing.T) {
	dir := t.TempDir()
	if err := WriteFile(dir, ".t", dir, "f", 0o600, write("old")); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(dir, ".t", dir, "f", 0o600, func(io.Writer) error { return errors.New("x") }); err == nil {
		t.Fatal("no error")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "f")); string(b) != "old" {
		t.Errorf("content %q", b)
	}
}

func TestSyncDirConcurrent(t *testing.T) {
	dir := t.TempDir()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := "f" + string(rune('A'+i%26)) + string(rune('a'+i/26))
			errs <- WriteFile(dir, "."+name, dir, name, 0o600, write(name))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if es, _ := os.ReadDir(dir); len(es) != 64 {
		t.Errorf("%d files", len(es))
	}
	if err := SyncDir(filepath.Join(dir, "missing")); err == nil {
		t.Error("SyncDir of a missing folder succeeded")
	}
	// A failure does not poison the syncer of that folder.
	if err := os.Mkdir(filepath.Join(dir, "missing"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := SyncDir(filepath.Join(dir, "missing")); err != nil {
		t.Errorf("SyncDir after the folder appeared: %v", err)
	}
}

func TestMkdirAll(t *testing.T) {
	dir := t.TempDir()
	deep := filepath.Join(dir, "a", "b", "c")
	if err := MkdirAll(deep, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Join(dir, "a"), filepath.Join(dir, "a", "b"), deep} {
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v %v", d, fi, err)
		}
	}
	if err := MkdirAll(deep, 0o700); err != nil {
		t.Errorf("again: %v", err)
	}
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	if err := MkdirAll(file, 0o700); err == nil {
		t.Error("a file accepted as a folder")
	}
	if err := MkdirAll(filepath.Join(file, "sub"), 0o700); err == nil {
		t.Error("a folder under a file")
	}
	// Concurrent creators of one tree all succeed.
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := MkdirAll(filepath.Join(dir, "x", "y", "z"), 0o700); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
}

// countSyncs counts the folder fsyncs, per folder, until the test ends.
func countSyncs(t *testing.T) func() map[string]int {
	var mu sync.Mutex
	n := map[string]int{}
	synced = func(dir string) {
		mu.Lock()
		n[dir]++
		mu.Unlock()
	}
	t.Cleanup(func() { synced = nil })
	return func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		out := maps.Clone(n)
		clear(n)
		return out
	}
}

func TestBatch(t *testing.T) {
	root := t.TempDir()
	a, b := filepath.Join(root, "a"), filepath.Join(root, "b")
	for _, d := range []string{a, b} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	syncs := countSyncs(t)

	// Without a batch every file fsyncs its folder.
	if err := WriteFile(a, ".x", a, "x", 0o600, write("x")); err != nil {
		t.Fatal(err)
	}
	if got := syncs(); got[a] != 1 {
		t.Errorf("WriteFile: folder fsyncs %v, want one of %s", got, a)
	}

	// With one, six files in two folders: no folder fsync until Sync, then one each.
	batch := &Batch{}
	for i, d := range []string{a, a, a, b, b, b} {
		name := fmt.Sprintf("f%d", i)
		if err := batch.WriteFile(d, "."+name, d, name, 0o600, write(name)); err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(filepath.Join(d, name)); err != nil || string(b) != name {
			t.Fatalf("%s: %q, %v", name, b, err)
		}
	}
	if got := syncs(); len(got) != 0 {
		t.Errorf("folder fsyncs before Sync: %v", got)
	}
	if got := batch.Pending(); !slices.Equal(got, []string{a, b}) {
		t.Errorf("Pending() = %v, want %v", got, []string{a, b})
	}
	if err := batch.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := syncs(); got[a] != 1 || got[b] != 1 || len(got) != 2 {
		t.Errorf("Sync: folder fsyncs %v, want one each of %s and %s", got, a, b)
	}
	if err := batch.Sync(); err != nil || len(syncs()) != 0 {
		t.Errorf("a second Sync fsynced again (err %v)", err)
	}

	// A folder that cannot be fsynced stays pending.
	gone := filepath.Join(root, "gone")
	if err := batch.SyncDir(gone); err != nil {
		t.Fatal(err)
	}
	if err := batch.Sync(); err == nil {
		t.Error("Sync of a missing folder succeeded")
	}
	if got := batch.Pending(); !slices.Equal(got, []string{gone}) {
		t.Errorf("after a failed Sync Pending() = %v", got)
	}
	// A nil batch fsyncs at once.
	if err := (*Batch)(nil).SyncDir(b); err != nil || syncs()[b] != 1 {
		t.Errorf("nil Batch SyncDir did not fsync (err %v)", err)
	}
}

// setGroupCommit sets the group-commit wait and busy time of SyncDir for one test.
func setGroupCommit(t *testing.T, wait, busy time.Duration) {
	w, b := groupWait, groupBusy
	groupWait, groupBusy = wait, busy
	t.Cleanup(func() { groupWait, groupBusy = w, b })
}

// TestSyncDirGroupCommit: Batches that recorded a folder are expected by its syncer.
// The first to sync waits for the others (arriving one by one, each after the fsync
// it would otherwise have had), all share one fsync, each returns only after it, and
// the group closes when the last one has arrived, not at the end of the wait. Then,
// the folder being busy (its last fsync shared), callers that did not announce
// themselves are gathered too.
func TestSyncDirGroupCommit(t *testing.T) {
	setGroupCommit(t, 3*time.Second, time.Minute)
	var n atomic.Int32
	synced = func(string) { n.Add(1) }
	t.Cleanup(func() { synced = nil })
	dir := t.TempDir()
	batches := make([]*Batch, 8)
	for i := range batches {
		batches[i] = &Batch{}
		if err := batches[i].SyncDir(dir); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	var wg sync.WaitGroup
	for i, b := range batches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer b.Close()
			time.Sleep(time.Duration(i) * 10 * time.Millisecond)
			if err := b.Sync(); err != nil {
				t.Error(err)
			}
			if n.Load() < 1 {
				t.Errorf("batch %d: Sync returned before the folder's fsync", i)
			}
		}()
	}
	wg.Wait()
	if got := n.Load(); got != 1 {
		t.Errorf("8 announced batches: %d fsyncs, want 1", got)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the group waited %v: it should close when the last batch arrives", d)
	}

	// Busy now: two plain callers 50 ms apart share the next fsync.
	setGroupCommit(t, 500*time.Millisecond, time.Minute)
	n.Store(0)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 50 * time.Millisecond)
			if err := SyncDir(dir); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got := n.Load(); got != 1 {
		t.Errorf("busy folder, 2 callers 50 ms apart: %d fsyncs, want 1", got)
	}
}

// TestSyncDirAloneAtOnce: a caller alone never waits for a group: plain calls one
// after another, a Batch alone, and a Batch after another gave up (Close) without
// syncing the folder it had recorded.
func TestSyncDirAloneAtOnce(t *testing.T) {
	setGroupCommit(t, 5*time.Second, time.Minute)
	dir := t.TempDir()
	start := time.Now()
	for range 5 {
		if err := SyncDir(dir); err != nil {
			t.Fatal(err)
		}
	}
	gaveUp := &Batch{}
	if err := gaveUp.SyncDir(dir); err != nil {
		t.Fatal(err)
	}
	gaveUp.Close()
	b := &Batch{}
	if err := b.SyncDir(dir); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("callers alone took %v: one waited for a group", d)
	}
}
