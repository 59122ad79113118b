package watcher

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/internal/sharetest"
)

// fakeClock is a monotonic clock the test moves.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time      { return c.t }
func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }

// foreign is a lease written by an instance on another host.
func foreign(host string) *lease {
	return &lease{owner: leaseOwner{host: host, boot: "other-boot-" + host, pid: 4242, start: 7}}
}

func TestLeaseForeignHostOnShare(t *testing.T) {
	dir := t.TempDir()
	clk := &fakeClock{t: time.Unix(1000, 0)}
	o := newLeaseObserver()
	o.now = clk.now
	ttl := time.Minute
	l := foreign("mta-b")
	l.dir = dir
	if err := l.renew(ttl / 3); err != nil {
		t.Fatal(err)
	}
	if dead, why := o.dead(dir, true, ttl); dead {
		t.Fatalf("a lease seen for the first time counts as dead: %s", why)
	}
	// A live host renews every ttl/3; the observer never sees it unchanged for ttl,
	// however long it watches.
	for i := 0; i < 10; i++ {
		clk.add(ttl / 3)
		if err := l.renew(ttl / 3); err != nil {
			t.Fatal(err)
		}
		if dead, why := o.dead(dir, true, ttl); dead {
			t.Fatalf("live lease judged dead after %d renewals: %s", i, why)
		}
	}
	// It stops renewing: dead only once unchanged for a whole ttl.
	clk.add(ttl - time.Second)
	if dead, why := o.dead(dir, true, ttl); dead {
		t.Fatalf("dead before the lease ran out: %s", why)
	}
	clk.add(time.Second)
	if dead, why := o.dead(dir, true, ttl); !dead {
		t.Fatalf("lease unchanged for ttl is not dead: %s", why)
	}
}

// TestLeaseClockSkew: the renewing host's clock is an hour behind (its "renewed"
// times are all in this host's past); only content changes count, so it stays alive.
func TestLeaseClockSkew(t *testing.T) {
	dir := t.TempDir()
	clk := &fakeClock{t: time.Unix(1000, 0)}
	o := newLeaseObserver()
	o.now = clk.now
	ttl := time.Minute
	for seq := uint64(1); seq < 20; seq++ {
		body := "mxdrop-lease 1\nhost far\nboot b-far\npid 9\nstart 1\nseq " + itoa(seq) + "\nrenewed 1999-01-01T00:00:00Z\n"
		if err := os.WriteFile(filepath.Join(dir, leaseFile), []byte(body), 0o640); err != nil {
			t.Fatal(err)
		}
		if dead, why := o.dead(dir, true, ttl); dead {
			t.Fatalf("a renewing host with a skewed clock judged dead: %s", why)
		}
		clk.add(ttl / 2)
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

func TestLeaseNoLeaseFile(t *testing.T) {
	dir := t.TempDir()
	clk := &fakeClock{t: time.Unix(1000, 0)}
	o := newLeaseObserver()
	o.now = clk.now
	if dead, why := o.dead(dir, false, time.Minute); !dead {
		t.Fatalf("local file system, free lock, no lease: not adopted: %s", why)
	}
	if dead, why := o.dead(dir, true, time.Minute); dead {
		t.Fatalf("share, no lease: adopted at once: %s", why)
	}
	clk.add(time.Minute)
	if dead, why := o.dead(dir, true, time.Minute); !dead {
		t.Fatalf("share, no lease for a whole claim_lease: not adopted: %s", why)
	}
}

// TestLeaseSameKernel: a lease written on this kernel is judged by its process, at once,
// on any file system.
func TestLeaseSameKernel(t *testing.T) {
	live, gone := t.TempDir(), t.TempDir()
	l := &lease{dir: live, owner: self()}
	if err := l.renew(time.Second); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	// A process of this boot that has ended (its pid, a start time it never had).
	d := &lease{dir: gone, owner: leaseOwner{host: self().host, boot: self().boot, pidNS: self().pidNS, pid: cmd.Process.Pid, start: 1}}
	if err := d.renew(time.Second); err != nil {
		t.Fatal(err)
	}
	// The same pid in another pid namespace (a container on this kernel) proves
	// nothing: on a share its lease must expire first.
	other := &lease{dir: t.TempDir(), owner: leaseOwner{host: "container", boot: self().boot, pidNS: "pid:[1]", pid: cmd.Process.Pid, start: 1}}
	if err := other.renew(time.Second); err != nil {
		t.Fatal(err)
	}
	o := newLeaseObserver()
	if dead, why := o.dead(other.dir, true, time.Hour); dead {
		t.Errorf("another pid namespace's lease judged by a pid of this one: %s", why)
	}
	for _, shared := range []bool{false, true} {
		if dead, why := o.dead(live, shared, time.Hour); dead {
			t.Errorf("shared=%v: this live process judged dead: %s", shared, why)
		}
		if dead, why := o.dead(gone, shared, time.Hour); !dead {
			t.Errorf("shared=%v: an ended process of this kernel not judged dead: %s", shared, why)
		}
	}
}

func TestRunLeaseRenews(t *testing.T) {
	dir := t.TempDir()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		runLease(dir, 60*time.Millisecond, self(), stop, func(err error) { t.Error(err) }, func(time.Time) {})
	}()
	first := waitLease(t, dir, "")
	waitLease(t, dir, first)
	close(stop)
	<-done
	if _, err := os.Stat(filepath.Join(dir, leaseFile+".tmp")); err == nil {
		t.Error("temporary lease file left behind")
	}
}

func waitLease(t *testing.T, dir, not string) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if c, _ := readLease(dir); c != "" && c != not {
			return c
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("lease not written or not renewed")
	return ""
}

// testClaims opens a claims folder with a one-minute lease.
func testClaims(t *testing.T, drop, id string) (*claims, error) {
	t.Helper()
	return openClaims(drop, id, time.Minute, func(err error) { t.Error(err) })
}

// crash ends a claims folder's instance as kill -9 does: the lease is no longer renewed
// and the flock goes, but nothing is released.
func (c *claims) crash() {
	close(c.stop)
	<-c.done
	c.lock.Close()
}

// TestAdoptAcrossHosts runs two "hosts" on two FUSE mounts of one share, where flock
// does not cross: a live host's claims are never adopted, however long the other
// watches; once it dies they are adopted after the lease, once.
func TestAdoptAcrossHosts(t *testing.T) {
	share := sharetest.New(t)
	mntA, mntB := share.Mount(), share.Mount()
	const ttl = 600 * time.Millisecond
	hostA := leaseOwner{host: "mta-a", boot: "boot-a", pid: 4242, start: 7}
	a, err := openClaimsAs(mntA, "a", ttl, func(err error) { t.Error(err) }, hostA)
	if err != nil {
		t.Fatal(err)
	}
	b, err := openClaimsAs(mntB, "b", ttl, func(err error) { t.Error(err) }, leaseOwner{host: "mta-b", boot: "boot-b", pid: 4343, start: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	if !a.shared || !b.shared {
		t.Fatal("a FUSE mount is not taken for a share")
	}
	if err := os.WriteFile(filepath.Join(share.Backing, "m1"), []byte("x"), 0o640); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := a.claim(filepath.Join(mntA, "m1")); !ok || err != nil {
		t.Fatalf("claim: %v %v", ok, err)
	}
	deadline := time.Now().Add(4 * ttl)
	for time.Now().Before(deadline) {
		got, err := b.adopt()
		if err != nil || len(got) > 0 {
			t.Fatalf("a live host's claims adopted through a free flock: %v %v", got, err)
		}
		time.Sleep(ttl / 5)
	}
	a.crash()
	start := time.Now()
	var got []string
	for len(got) == 0 && time.Since(start) < 10*ttl {
		time.Sleep(ttl / 5)
		got, err = b.adopt()
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 1 || got[0] != filepath.Join(mntB, claimName(b.tag, 0, "m1")) {
		t.Fatalf("dead host's claim not adopted as b's: %v", got)
	}
	if waited := time.Since(start); waited < ttl-ttl/5 {
		t.Errorf("adopted %s after the crash, before the lease of %s ran out", waited, ttl)
	}
	if more, _ := b.adopt(); len(more) != 0 {
		t.Errorf("adopted again: %v", more)
	}
}

// TestClaimFencedByStaleLease: a host whose lease has not been renewed for half of
// claim_lease (share away, host paused) claims nothing: another host may be about to
// adopt its claims folder.
func TestClaimFencedByStaleLease(t *testing.T) {
	share := sharetest.New(t)
	mnt := share.Mount()
	cl, err := testClaims(t, mnt, "me")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.close()
	os.WriteFile(filepath.Join(share.Backing, "m1"), []byte("x"), 0o640)
	cl.renewed.Store(time.Now().Add(-cl.ttl).UnixNano())
	if _, ok, err := cl.claim(filepath.Join(mnt, "m1")); ok || !errors.Is(err, errLeaseStale) {
		t.Fatalf("claimed with a stale lease: ok=%v err=%v", ok, err)
	}
	cl.renewed.Store(time.Now().UnixNano())
	if _, ok, err := cl.claim(filepath.Join(mnt, "m1")); !ok || err != nil {
		t.Fatalf("no claim with a fresh lease: ok=%v err=%v", ok, err)
	}
}
