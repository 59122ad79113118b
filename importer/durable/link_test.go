package durable

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/mxdrop/mxdrop/internal/testenv"
)

// nlink returns the link count of path.
func nlink(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return uint64(fi.Sys().(*syscall.Stat_t).Nlink)
}

// maildir makes dir/tmp and dir/new.
func maildir(t *testing.T, dir string) {
	t.Helper()
	for _, s := range []string{"tmp", "new"} {
		if err := os.MkdirAll(filepath.Join(dir, s), 0o700); err != nil {
			t.Fatal(err)
		}
	}
}

// helloFile writes dir/name holding "hello" (5 bytes, mode 0600: linkable) and
// returns its path.
func helloFile(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// openHello is helloFile, opened for reading as a source holds it (closed at the
// test's end).
func openHello(t *testing.T, dir, name string) (string, *os.File) {
	t.Helper()
	p := helloFile(t, dir, name)
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return p, f
}

// TestLink: the delivered name is the source's inode, the temporary name is gone, and
// the folder is left to the batch.
func TestLink(t *testing.T) {
	dir := t.TempDir()
	maildir(t, dir)
	src := helloFile(t, dir, "claim")
	syncs := countSyncs(t)
	var b Batch
	newDir := filepath.Join(dir, "new")
	if err := b.Link(src, nil, 5, filepath.Join(dir, "tmp"), "n", newDir, "n"); err != nil {
		t.Fatal(err)
	}
	a, _ := os.Stat(src)
	d, err := os.Stat(filepath.Join(newDir, "n"))
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(a, d) || nlink(t, src) != 2 {
		t.Errorf("new/n is not a second name of the source (same file %v, %d links)", os.SameFile(a, d), nlink(t, src))
	}
	if es, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(es) != 0 {
		t.Errorf("tmp/ holds %v", es)
	}
	if n := syncs(); len(n) != 0 || len(b.Pending()) != 1 || b.Pending()[0] != newDir {
		t.Errorf("synced %v, pending %v: want the folder left to the batch", n, b.Pending())
	}
	// The source may go away: the delivery stays.
	if err := os.Remove(src); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(newDir, "n")); string(got) != "hello" {
		t.Errorf("after the source is removed new/n holds %q", got)
	}
}

// A leftover of an interrupted link (same temporary name) is replaced, and so is a
// delivered name that exists already, with or without a batch: the source ends with
// exactly two names, tmp/ with none.
func TestLinkReplacesLeftover(t *testing.T) {
	for _, b := range []*Batch{nil, {}} {
		dir := t.TempDir()
		maildir(t, dir)
		src := filepath.Join(dir, "claim")
		os.WriteFile(src, []byte("whole"), 0o600)
		os.WriteFile(filepath.Join(dir, "tmp", "n"), []byte("half"), 0o600)
		os.WriteFile(filepath.Join(dir, "new", "n"), []byte("old"), 0o600)
		if err := b.Link(src, nil, -1, filepath.Join(dir, "tmp"), "n", filepath.Join(dir, "new"), "n"); err != nil {
			t.Fatal(err)
		}
		if b != nil {
			if err := b.Sync(); err != nil {
				t.Fatal(err)
			}
		}
		if got, _ := os.ReadFile(filepath.Join(dir, "new", "n")); string(got) != "whole" {
			t.Errorf("batch %v: new/n holds %q", b != nil, got)
		}
		if n := nlink(t, src); n != 2 {
			t.Errorf("batch %v: the source has %d names, want 2", b != nil, n)
		}
		if es, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(es) != 0 {
			t.Errorf("batch %v: tmp/ holds %v", b != nil, es)
		}
	}
}

// LinkTemp refuses what a link would deliver wrongly or expose, and leaves nothing.
func TestLinkTempRefuses(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, src string)
		size    int64
	}{
		{"symbolic link", func(t *testing.T, src string) {
			target := src + ".target"
			os.WriteFile(target, []byte("hello"), 0o600)
			os.Symlink(target, src)
		}, -1},
		{"another name exists", func(t *testing.T, src string) {
			os.WriteFile(src, []byte("hello"), 0o600)
			os.Link(src, src+".other")
		}, 5},
		{"size differs from the claim", func(t *testing.T, src string) {
			os.WriteFile(src, []byte("hello, longer"), 0o600)
		}, 5},
		{"readable by others", func(t *testing.T, src string) {
			os.WriteFile(src, []byte("hello"), 0o600)
			os.Chmod(src, 0o644)
		}, 5},
		{"writable by its group", func(t *testing.T, src string) {
			os.WriteFile(src, []byte("hello"), 0o600)
			os.Chmod(src, 0o660)
		}, 5},
		{"owned by another user", func(t *testing.T, src string) {
			os.WriteFile(src, []byte("hello"), 0o600)
			if err := os.Lchown(src, 65534, 65534); err != nil {
				testenv.Unavailable(t, "giving a file away needs root: %v", err)
			}
		}, 5},
		{"fifo", func(t *testing.T, src string) {
			syscall.Mkfifo(src, 0o600)
		}, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			maildir(t, dir)
			src := filepath.Join(dir, "claim")
			tc.prepare(t, src)
			tmp := filepath.Join(dir, "tmp", "n")
			err := LinkTemp(src, nil, tmp, tc.size, nil)
			if err == nil {
				t.Fatal("linked")
			}
			if tc.name != "symbolic link" && !errors.Is(err, ErrNotLinkable) {
				t.Errorf("err = %v, want ErrNotLinkable", err)
			}
			if _, err := os.Lstat(tmp); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("tmp left behind: %v", err)
			}
		})
	}
}

// TestLinkAcrossFileSystems: a source on another file system (tmpfs /dev/shm) is not
// linked (EXDEV) and leaves nothing.
func TestLinkAcrossFileSystems(t *testing.T) {
	shm, err := os.MkdirTemp("/dev/shm", "mxdrop-link-")
	if err != nil {
		testenv.Unavailable(t, "no tmpfs at /dev/shm: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	dir := t.TempDir()
	maildir(t, dir)
	src := filepath.Join(shm, "claim")
	os.WriteFile(src, []byte("hello"), 0o600)
	err = (*Batch)(nil).Link(src, nil, 5, filepath.Join(dir, "tmp"), "n", filepath.Join(dir, "new"), "n")
	if !errors.Is(err, syscall.EXDEV) {
		t.Fatalf("err = %v, want EXDEV", err)
	}
	for _, s := range []string{"tmp", "new"} {
		if es, _ := os.ReadDir(filepath.Join(dir, s)); len(es) != 0 {
			t.Errorf("%s/ holds %v", s, es)
		}
	}
}

// TestLinkDataSync: without a batch the drop file's data is synced before its second
// name exists; with a batch the copy is in new/ first and its data is synced by Sync,
// before the folder, and Close gives up what Sync did not do. A found delivery's data
// (SyncData) is synced by Sync too.
func TestLinkDataSync(t *testing.T) {
	dir := t.TempDir()
	maildir(t, dir)
	newDir, tmpDir := filepath.Join(dir, "new"), filepath.Join(dir, "tmp")
	var events []string
	datasynced = func(name string) {
		_, err := os.Stat(filepath.Join(newDir, filepath.Base(name)))
		events = append(events, "data "+filepath.Base(name)+" in new/ "+map[bool]string{true: "yes", false: "no"}[err == nil])
	}
	synced = func(d string) { events = append(events, "folder "+filepath.Base(d)) }
	t.Cleanup(func() { datasynced, synced = nil, nil })
	write := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("message "+name), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	check := func(step string, want ...string) {
		t.Helper()
		if got := strings.Join(events, ", "); got != strings.Join(want, ", ") {
			t.Errorf("%s: %q, want %q", step, got, strings.Join(want, ", "))
		}
		events = nil
	}

	if err := (*Batch)(nil).Link(write("a"), nil, -1, tmpDir, "a", newDir, "a"); err != nil {
		t.Fatal(err)
	}
	check("no batch", "data a in new/ no", "folder new")

	var b Batch
	if err := b.Link(write("b"), nil, -1, tmpDir, "b", newDir, "b"); err != nil {
		t.Fatal(err)
	}
	if err := b.SyncData(filepath.Join(newDir, "a")); err != nil {
		t.Fatal(err)
	}
	check("batch, before Sync")
	if got, err := os.ReadFile(filepath.Join(newDir, "b")); err != nil || string(got) != "message b" {
		t.Errorf("new/b before Sync: %q, %v", got, err)
	}
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	check("batch, Sync", "data b in new/ yes", "data a in new/ yes", "folder new")
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	check("batch, second Sync")

	var c Batch
	if err := c.Link(write("c"), nil, -1, tmpDir, "c", newDir, "c"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := c.Sync(); err != nil {
		t.Fatal(err)
	}
	check("batch closed")
}

// TestLinkFile: a file its caller holds open is linked through that descriptor and
// stays the caller's: open after a refusal, after the batch's data sync and after the
// batch is closed, and after a link without a batch.
func TestLinkFile(t *testing.T) {
	dir := t.TempDir()
	maildir(t, dir)
	src, f := openHello(t, dir, "claim")
	open := func(when string) {
		t.Helper()
		if _, err := f.Stat(); err != nil {
			t.Fatalf("%s: the caller's file was closed: %v", when, err)
		}
	}
	tmpDir, newDir := filepath.Join(dir, "tmp"), filepath.Join(dir, "new")

	var b Batch
	if err := b.Link(src, f, 4, tmpDir, "refused", newDir, "refused"); !errors.Is(err, ErrNotLinkable) {
		t.Fatalf("wrong size: %v, want ErrNotLinkable", err)
	}
	open("after a refusal")
	if err := b.Link(src, f, 5, tmpDir, "n", newDir, "n"); err != nil {
		t.Fatal(err)
	}
	a, _ := os.Stat(src)
	d, err := os.Stat(filepath.Join(newDir, "n"))
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(a, d) {
		t.Error("new/n is not a second name of the source")
	}
	if os.Geteuid() == 0 && noLinkByDescriptor.Load() {
		t.Error("root (CAP_DAC_READ_SEARCH) could not link through the descriptor")
	}
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	open("after Sync")
	b.Close()
	open("after Close")

	// Without a batch, on a second file (the first has two names now, which a link
	// refuses).
	src2, f := openHello(t, dir, "claim2")
	if err := (*Batch)(nil).Link(src2, f, 5, tmpDir, "m", newDir, "m"); err != nil {
		t.Fatal(err)
	}
	open("after a link without a batch")
	if nlink(t, src2) != 2 {
		t.Errorf("%d names, want 2 (claim2, new/m)", nlink(t, src2))
	}
}

// TestLinkReplacedName: a name replaced after the open is never what gets delivered.
// The opened file has no name left then, which a link through its descriptor cannot
// give it (ENOENT); the link by name finds the replacement, which is refused
// (ErrNotLinkable) and removed from the temporary name. That ENOENT is not taken for
// a kernel that refuses links through descriptors: the next delivery still tries one.
func TestLinkReplacedName(t *testing.T) {
	dir := t.TempDir()
	maildir(t, dir)
	src, f := openHello(t, dir, "claim")
	if err := os.Rename(helloFile(t, dir, "other"), src); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "tmp", "n")
	if err := LinkTemp(src, f, tmp, 5, nil); !errors.Is(err, ErrNotLinkable) {
		t.Fatalf("replaced name: %v, want ErrNotLinkable", err)
	}
	if _, err := os.Lstat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused, but %s is there: %v", tmp, err)
	}
	// linkOpen itself, past the checks that refuse a file without a name: the link
	// through the descriptor fails (ENOENT), the link by name is made (the caller's
	// same-file check refuses it), and links through descriptors stay on.
	byDescriptor, err := linkOpen(f, src, tmp)
	if err != nil || byDescriptor {
		t.Fatalf("linkOpen of a file without a name: by descriptor %v, %v; want a link by name", byDescriptor, err)
	}
	if noLinkByDescriptor.Load() {
		t.Error("a file without a name turned links through descriptors off")
	}
}

// TestLinkStraightIntoPlace: a file linked through its descriptor gets its delivered
// name at once, without a temporary name (its tmp folder need not even exist); where
// the descriptor cannot be linked, or the delivered name is taken, the link goes
// through tmp/ as before and the delivered name ends up the source's inode.
func TestLinkStraightIntoPlace(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "links through descriptors are certain with CAP_DAC_READ_SEARCH only (root)")
	}
	dir := t.TempDir()
	maildir(t, dir)
	newDir := filepath.Join(dir, "new")
	missing := filepath.Join(dir, "no-tmp")
	same := func(src, name string) {
		t.Helper()
		a, _ := os.Stat(src)
		d, err := os.Stat(filepath.Join(newDir, name))
		if err != nil || !os.SameFile(a, d) {
			t.Errorf("new/%s is not a second name of %s (%v)", name, filepath.Base(src), err)
		}
	}

	var b Batch
	src, f := openHello(t, dir, "claim")
	if err := b.Link(src, f, 5, missing, "n", newDir, "n"); err != nil {
		t.Fatalf("link through the descriptor with no tmp folder: %v", err)
	}
	same(src, "n")
	if got := b.Pending(); len(got) != 1 || got[0] != newDir {
		t.Errorf("folders to sync: %v, want only %s", got, newDir)
	}
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}

	// The delivered name taken (an earlier attempt's): through tmp/, which replaces it.
	src2, f2 := openHello(t, dir, "claim2")
	helloFile(t, newDir, "m")
	if err := b.Link(src2, f2, 5, missing, "m", newDir, "m"); err == nil {
		t.Fatal("name taken and no tmp folder: linked anyway")
	}
	tmpDir := filepath.Join(dir, "tmp")
	if err := b.Link(src2, f2, 5, tmpDir, "m", newDir, "m"); err != nil {
		t.Fatal(err)
	}
	same(src2, "m")

	// Links through descriptors off (a kernel that refuses them): through tmp/.
	noLinkByDescriptor.Store(true)
	defer noLinkByDescriptor.Store(false)
	src3, f3 := openHello(t, dir, "claim3")
	if err := b.Link(src3, f3, 5, missing, "k", newDir, "k"); err == nil {
		t.Fatal("descriptor links off and no tmp folder: linked anyway")
	}
	if err := b.Link(src3, f3, 5, tmpDir, "k", newDir, "k"); err != nil {
		t.Fatal(err)
	}
	same(src3, "k")
	if entries, _ := os.ReadDir(tmpDir); len(entries) != 0 {
		t.Errorf("tmp/ keeps %d entries", len(entries))
	}
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	b.Close()
}
