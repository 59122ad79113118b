package importer

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/internal/testenv"
)

func TestMaildirFolder(t *testing.T) {
	md := Maildir(filepath.Join(t.TempDir(), "alice"))
	f, err := md.Folder("Junk")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(string(md), ".Junk"); string(f) != want {
		t.Errorf("Folder = %s, want %s", f, want)
	}
	for _, sub := range []string{"tmp", "new", "cur"} {
		if fi, err := os.Stat(filepath.Join(string(f), sub)); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s/%s: %v %v", f, sub, fi, err)
		}
	}
	if _, err := os.Stat(filepath.Join(string(f), "maildirfolder")); err != nil {
		t.Errorf("no maildirfolder marker: %v", err)
	}
	nested, err := md.Folder("Archive/2024")
	if err != nil || filepath.Base(string(nested)) != ".Archive.2024" {
		t.Errorf("nested folder %s %v", nested, err)
	}
	if _, err := md.Folder("a/../../b"); err == nil {
		t.Error("a folder name with .. accepted")
	}
}

// A marker that could not be written the first time is written on the next call.
func TestMaildirFolderRetriesMarker(t *testing.T) {
	dir := mountTmpfs(t, "size=1m")
	md := Maildir(filepath.Join(dir, "alice"))
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := os.MkdirAll(filepath.Join(string(md), ".Junk", sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_REMOUNT|syscall.MS_RDONLY, "size=1m"); err != nil {
		skipUnlessCI(t, "remount: %v", err)
	}
	if _, err := md.Folder("Junk"); err == nil {
		t.Fatal("no error on a read-only file system")
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_REMOUNT, "size=1m"); err != nil {
		t.Fatal(err)
	}
	if _, err := md.Folder("Junk"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(string(md), ".Junk", "maildirfolder")); err != nil {
		t.Errorf("marker still missing after the retry: %v", err)
	}
}

func TestMaildirDeliverReplacesLeftoverTemp(t *testing.T) {
	md := Maildir(filepath.Join(t.TempDir(), "alice"))
	if err := md.Init(); err != nil {
		t.Fatal(err)
	}
	// A crash left tmp/name half written.
	if err := os.WriteFile(filepath.Join(string(md), "tmp", "n1"), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := md.Deliver("n1", func(w io.Writer) error {
		_, err := io.WriteString(w, "Subject: whole\n\nbody\n")
		return err
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "Subject: whole\n\nbody\n" {
		t.Errorf("delivered %q", b)
	}
	if names := testenv.ListDir(t, filepath.Join(string(md), "tmp")); len(names) != 0 {
		t.Errorf("tmp/ holds %v", names)
	}
}

func TestMaildirDeliverWriteError(t *testing.T) {
	md := Maildir(filepath.Join(t.TempDir(), "alice"))
	if err := md.Init(); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	_, err := md.Deliver("n1", func(w io.Writer) error {
		io.WriteString(w, strings.Repeat("x", 100_000))
		return boom
	}, nil)
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	for _, sub := range []string{"tmp", "new"} {
		if names := testenv.ListDir(t, filepath.Join(string(md), sub)); len(names) != 0 {
			t.Errorf("%s/ holds %v", sub, names)
		}
	}
}

func TestMaildirFind(t *testing.T) {
	md := Maildir(filepath.Join(t.TempDir(), "alice"))
	if err := md.Init(); err != nil {
		t.Fatal(err)
	}
	const name = "1704186901.Xabcdef0123456789abcdef01.mxdrop"
	if _, ok := md.Find(name); ok {
		t.Fatal("found in an empty Maildir")
	}
	// Another delivery whose name merely starts like this one does not count.
	touch(t, filepath.Join(string(md), "cur", name+"0:2,S"))
	touch(t, filepath.Join(string(md), "new", name[:len(name)-1]))
	if p, ok := md.Find(name); ok {
		t.Fatalf("found %s", p)
	}
	want := touch(t, filepath.Join(string(md), "cur", name+":2,FS"))
	if p, ok := md.Find(name); !ok || p != want {
		t.Errorf("Find = %s %v, want %s", p, ok, want)
	}
	// Many other files in cur/ (more than one read chunk).
	md2 := Maildir(filepath.Join(t.TempDir(), "bob"))
	if err := md2.Init(); err != nil {
		t.Fatal(err)
	}
	for i := range 1100 { // more than one Readdirnames chunk
		touch(t, filepath.Join(string(md2), "cur", "1704186901.X"+itoa(int64(i))+".other:2,S"))
	}
	want = touch(t, filepath.Join(string(md2), "cur", name+":2,"))
	if p, ok := md2.Find(name); !ok || p != want {
		t.Errorf("Find among many = %s %v", p, ok)
	}
}

func touch(t *testing.T, p string) string {
	t.Helper()
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLookup checks that FindIn with a Lookup finds what Find finds, lists a settled
// cur/ once for many lookups, lists it again once it changed, and does not keep the
// listing of a folder that changed just now.
func TestLookup(t *testing.T) {
	md := Maildir(filepath.Join(t.TempDir(), "alice"))
	if err := md.Init(); err != nil {
		t.Fatal(err)
	}
	cur := filepath.Join(string(md), "cur")
	names := make([]string, 20)
	for i := range names {
		names[i] = fmt.Sprintf("1704186901.X%024d.mxdrop", i)
		suffix := []string{":2,S", ",S=748,W=760:2,RS", ""}[i%3]
		if err := os.WriteFile(filepath.Join(cur, names[i]+suffix), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// settle ages cur/'s modification time, as if the last change were ago.
	settle := func(ago time.Duration) {
		old := time.Now().Add(-ago)
		if err := os.Chtimes(cur, old, old); err != nil {
			t.Fatal(err)
		}
	}
	settle(time.Minute)
	lk := &Lookup{}
	for _, n := range names {
		want, wantOK := md.Find(n)
		got, ok := md.FindIn(n, lk)
		if !ok || !wantOK || got != want {
			t.Errorf("%s: FindIn = %s %v, Find = %s %v", n, got, ok, want, wantOK)
		}
	}
	if _, ok := md.FindIn("1704186901.X999999999999999999999999.mxdrop", lk); ok {
		t.Error("found a delivery that is not there")
	}
	if lk.scans != 1 {
		t.Errorf("%d listings of cur/ for 21 lookups, want 1", lk.scans)
	}

	// A reader moves another delivery into cur/: the folder changed, so it is listed
	// again and the delivery is found.
	late := "1704186901.X100000000000000000000000.mxdrop"
	if err := os.WriteFile(filepath.Join(cur, late+":2,S"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Just changed: not listed into the Lookup, scanned directly.
	if _, ok := md.FindIn(late, lk); !ok || lk.scans != 1 {
		t.Errorf("a delivery moved in just now: found %v, listings %d (want found, 1)", ok, lk.scans)
	}
	settle(30 * time.Second)
	if _, ok := md.FindIn(late, lk); !ok || lk.scans != 2 {
		t.Errorf("after the change settled: found %v, listings %d (want found, 2)", ok, lk.scans)
	}
}
