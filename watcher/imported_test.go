package watcher

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// TestMoveIntoImportedByLink: where renames cannot refuse to replace (NFS), files of one
// name moved into Imported/ at once, as by instances on several hosts (no lock shared
// between them), each keep a name of their own; none replaces another.
func TestMoveIntoImportedByLink(t *testing.T) {
	old := moveRename
	moveRename = moveByLink // the NFS path: the renameat2 flag refused
	t.Cleanup(func() { moveRename = old })
	dir := t.TempDir()
	folder := filepath.Join(dir, ImportedFolder)
	const n = 16
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		src := filepath.Join(dir, ".mxdrop-claim.x."+strconv.Itoa(i)+".m")
		if err := os.WriteFile(src, []byte(strconv.Itoa(i)), 0o640); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = moveInto(folder, src, "m")
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("move %d: %v", i, err)
		}
	}
	entries, err := os.ReadDir(folder)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(folder, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		seen[string(b)] = true
	}
	if len(entries) != n || len(seen) != n {
		t.Errorf("Imported/ holds %d files, %d distinct; want %d of each", len(entries), len(seen), n)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".mxdrop-claim.*")); len(left) != 0 {
		t.Errorf("claimed files left: %v", left)
	}
}

// TestMoveByLinkTaken: a name taken by another file is refused and the source stays;
// a name that is the source's own file already (an NFS link retransmitted after a lost
// reply, or an attempt a crash cut short) completes the move.
func TestMoveByLinkTaken(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	os.WriteFile(src, []byte("mine"), 0o640)
	os.WriteFile(dst, []byte("another"), 0o640)
	if err := moveByLink(src, dst); !errors.Is(err, os.ErrExist) {
		t.Fatalf("onto another file: %v", err)
	}
	if b, _ := os.ReadFile(src); string(b) != "mine" {
		t.Fatalf("source %q", b)
	}
	if b, _ := os.ReadFile(dst); string(b) != "another" {
		t.Fatalf("destination %q", b)
	}
	os.Remove(dst)
	if err := os.Link(src, dst); err != nil {
		t.Fatal(err)
	}
	if err := moveByLink(src, dst); err != nil {
		t.Fatalf("onto its own link: %v", err)
	}
	if _, err := os.Lstat(src); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("source left: %v", err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "mine" {
		t.Errorf("destination %q", b)
	}
}

// TestMoveIntoLongName: a second file of a name of 255 bytes (NAME_MAX) goes into
// Imported/ under a variant that fits.
func TestMoveIntoLongName(t *testing.T) {
	dir := t.TempDir()
	folder := filepath.Join(dir, ImportedFolder)
	long := strings.Repeat("x", 255)
	for i := range 2 {
		src := filepath.Join(dir, "src"+strconv.Itoa(i))
		if err := os.WriteFile(src, []byte(strconv.Itoa(i)), 0o640); err != nil {
			t.Fatal(err)
		}
		if err := moveInto(folder, src, long); err != nil {
			t.Fatalf("move %d: %v", i, err)
		}
	}
	if entries, _ := os.ReadDir(folder); len(entries) != 2 {
		t.Errorf("Imported/ holds %d files, want 2", len(entries))
	}
}
