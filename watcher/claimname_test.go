package watcher

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestParseClaimName(t *testing.T) {
	tag := instanceTag("mx1.example.com-4242-abc")
	if len(tag) != tagLen {
		t.Fatalf("tag %q", tag)
	}
	for _, name := range []string{"m1", "1733475000.M1P2.mx1.example.com", "a.b.c", "x~1", ".hidden", claimName(tag, 0, "nested")} {
		for _, n := range []int{0, 7, 999} {
			cn := claimName(tag, n, name)
			gotTag, gotName, ok := parseClaimName(cn)
			if !ok || gotTag != tag || gotName != name {
				t.Errorf("parse %q: %q %q %v", cn, gotTag, gotName, ok)
			}
			if n == 999 && len(cn) != maxClaimNameLen(name) {
				t.Errorf("%q is %d long, maxClaimNameLen says %d", cn, len(cn), maxClaimNameLen(name))
			}
			if OriginalName(filepath.Join("/drop", cn)) != name || !IsClaimName(cn) {
				t.Errorf("OriginalName(%q) = %q", cn, OriginalName(cn))
			}
		}
	}
	for _, s := range []string{
		"m1", ".mxdrop", ".lock", claimPrefix, claimPrefix + tag, claimPrefix + tag + ".0",
		claimPrefix + tag + ".0.", claimPrefix + tag + "..m1", claimPrefix + tag + ".x.m1",
		claimPrefix + strings.ToUpper(tag) + ".0.m1", claimPrefix + tag[1:] + ".0.m1",
		claimPrefix + "zz" + tag[2:] + ".0.m1",
	} {
		if _, _, ok := parseClaimName(s); ok {
			t.Errorf("%q taken for a claim name", s)
		}
		if IsClaimName(s) || OriginalName("/drop/"+s) != s {
			t.Errorf("%q: not a claim name, yet OriginalName gives %q", s, OriginalName("/drop/"+s))
		}
	}
}

// FuzzParseClaimName: whatever a drop folder's names are, a claim name is recognised
// only with its whole form, its file's own name is what follows it, and every claim
// name mxdrop makes is read back as the name it was made from.
func FuzzParseClaimName(f *testing.F) {
	tag := instanceTag("fuzz")
	f.Add(claimName(tag, 0, "m1"), "m1", uint16(0))
	f.Add(claimPrefix+tag+".01.x.y", "a.b", uint16(12))
	f.Add(".mxdrop-claim..0.m", "", uint16(1))
	f.Fuzz(func(t *testing.T, s, name string, n uint16) {
		if gotTag, gotName, ok := parseClaimName(s); ok {
			if len(gotTag) != tagLen || gotName == "" || !strings.HasSuffix(s, "."+gotName) ||
				!strings.HasPrefix(s, claimPrefix+gotTag+".") {
				t.Fatalf("%q parsed as %q %q", s, gotTag, gotName)
			}
		}
		if name == "" || strings.ContainsAny(name, "/\x00") {
			return
		}
		if gotTag, gotName, ok := parseClaimName(claimName(tag, int(n), name)); !ok || gotTag != tag || gotName != name {
			t.Fatalf("claim name of %q read back as %q %q %v", name, gotTag, gotName, ok)
		}
	})
}

// TestLongNameClaimedIntoFolder: a file whose claim name would pass NAME_MAX is
// claimed into the claims folder instead, keeps its name, and is imported.
func TestLongNameClaimedIntoFolder(t *testing.T) {
	c, root := testConnector(t)
	c.Settle = 0
	long := strings.Repeat("n", 240)
	dropRename(t, c.DropFolder, long, message(1, "alice@example.com"))
	m := NewManager("me", 1, zerolog.Nop())
	cl, err := m.claimsFor(c)
	if err != nil {
		t.Fatal(err)
	}
	p, ok, err := cl.claim(filepath.Join(c.DropFolder, long))
	if !ok || err != nil || p != filepath.Join(cl.dir, long) {
		t.Fatalf("claim: %q %v %v", p, ok, err)
	}
	if got := ClaimedBy(c.DropFolder, "me"); len(got) != 1 || got[0] != p {
		t.Errorf("ClaimedBy: %v", got)
	}
	// The next instance adopts it (this one stops with it claimed) and imports it.
	cl.close()
	m2 := NewManager("next", 1, zerolog.Nop())
	if err := m2.Once(context.Background(), []*Connector{c}); err != nil {
		t.Fatal(err)
	}
	if n := m2.Counts().Imported.Load(); n != 1 {
		t.Errorf("imported %d, want 1", n)
	}
	if n := countNew(t, filepath.Join(root, "mail", "alice")); n != 1 {
		t.Errorf("alice has %d messages, want 1", n)
	}
	if left := ClaimedFiles(c.DropFolder); len(left) != 0 {
		t.Errorf("claims left: %v", left)
	}
}

// TestOrphanClaimsOnShare: claim names whose instance has no claims folder are adopted
// at once on a local file system, but on a share (where a cached listing may not show
// a new instance's folder yet) only once seen orphaned for claim_lease.
func TestOrphanClaimsOnShare(t *testing.T) {
	for _, shared := range []bool{false, true} {
		drop := t.TempDir()
		orphan := filepath.Join(drop, claimName(instanceTag("gone"), 0, "m1"))
		if err := os.WriteFile(orphan, []byte("x"), 0o640); err != nil {
			t.Fatal(err)
		}
		me, err := testClaims(t, drop, "me")
		if err != nil {
			t.Fatal(err)
		}
		me.shared = shared
		clock := time.Unix(1000, 0)
		me.obs.now = func() time.Time { return clock }
		want := filepath.Join(drop, claimName(me.tag, 0, "m1"))
		got, err := me.adopt()
		if !shared {
			if err != nil || len(got) != 1 || got[0] != want {
				t.Errorf("local: adopted %v, %v; want %s at once", got, err, want)
			}
			me.close()
			continue
		}
		if len(got) != 0 || err != nil {
			t.Fatalf("share: adopted %v %v at first sight", got, err)
		}
		clock = clock.Add(me.ttl - time.Second)
		if got, _ := me.adopt(); len(got) != 0 {
			t.Fatalf("share: adopted %v before claim_lease", got)
		}
		clock = clock.Add(time.Second)
		if got, _ := me.adopt(); len(got) != 1 || got[0] != want {
			t.Errorf("share: adopted %v after claim_lease, want %s", got, want)
		}
		me.shared = false
		me.close()
	}
}

// TestIdentityKeptThroughAdoption: a file's identity (which its delivery names are
// made from) is the same under the claim name of the instance that claimed it and
// under that of the one that adopted it, so a recovery finds the copies already made.
func TestIdentityKeptThroughAdoption(t *testing.T) {
	drop := t.TempDir()
	a, err := testClaims(t, drop, "a")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(drop, "m1"), []byte("x"), 0o640); err != nil {
		t.Fatal(err)
	}
	pa, ok, err := a.claim(filepath.Join(drop, "m1"))
	if !ok || err != nil {
		t.Fatalf("claim: %v %v", ok, err)
	}
	idA, _, _, err := identity(pa)
	if err != nil {
		t.Fatal(err)
	}
	a.close()
	b, err := testClaims(t, drop, "b")
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	got, err := b.adopt()
	if err != nil || len(got) != 1 || got[0] == pa {
		t.Fatalf("adopted %v %v", got, err)
	}
	idB, _, _, err := identity(got[0])
	if err != nil {
		t.Fatal(err)
	}
	if idA != idB || !strings.HasPrefix(idA, "m1|") {
		t.Errorf("identity %q under a's claim, %q under b's", idA, idB)
	}
}

// TestRenameIfFreeOneWinner: where the file system has no RENAME_NOREPLACE, goroutines
// renaming different files to one free name leave exactly one there and every other
// file where it was: none replaced, none lost.
func TestRenameIfFreeOneWinner(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, claimName(instanceTag("me"), 0, "m1"))
	const n = 32
	// Each goroutine dawdles between its check and its rename, so that without the
	// lock every one of them would find the name free.
	checkedFree = func() { time.Sleep(time.Millisecond) }
	defer func() { checkedFree = nil }()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		src := filepath.Join(dir, "src"+strconv.Itoa(i))
		if err := os.WriteFile(src, []byte(strconv.Itoa(i)), 0o640); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = renameIfFree(src, dst)
		}()
	}
	wg.Wait()
	won := -1
	for i, err := range errs {
		switch {
		case err == nil && won >= 0:
			t.Errorf("%d and %d both renamed to one name", won, i)
		case err == nil:
			won = i
		case !errors.Is(err, os.ErrExist):
			t.Errorf("%d: %v", i, err)
		}
	}
	if b, err := os.ReadFile(dst); err != nil || string(b) != strconv.Itoa(won) {
		t.Errorf("%s holds %q (%v), want the winner %d's", dst, b, err, won)
	}
	for i := 0; i < n; i++ {
		if i == won {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "src"+strconv.Itoa(i))); err != nil {
			t.Errorf("file %d lost: %v", i, err)
		}
	}
}
