package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/internal/sharetest"
	"github.com/mxdrop/mxdrop/watcher"
)

// shareEnv is an mxdrop whose drop folder is a FUSE mount of share, with the
// connector settings at their defaults unless extra sets them; its Maildirs are under
// mail (shared by several instances playing several hosts).
func shareEnv(t *testing.T, mount, mail, extra string) *env {
	t.Helper()
	root := t.TempDir()
	e := &env{t: t, root: root, drop: mount, mail: mail, cfgPath: filepath.Join(root, "mxdrop.yaml")}
	e.writeConfig(fmt.Sprintf(`state_dir: ./state
workers: 4
log:
  level: info
  format: json
accounts:
  - address: alice@example.com
    maildir: %s/alice
  - address: bob@example.com
    maildir: %s/bob
connectors:
  - name: mx
    drop_folder: %s
    subdomains: [example.com]
    bounce: false
%s`, mail, mail, mount, extra))
	return e
}

// TestShareDaemonRenamedIn: the MTA on "another host" renames files into the share;
// mxdrop at the defaults says it polls and why, and delivers each file once.
func TestShareDaemonRenamedIn(t *testing.T) {
	share := sharetest.New(t)
	mail := t.TempDir()
	e := shareEnv(t, share.Mount(), mail, "")
	var out, errb bytes.Buffer
	if err := execMxdrop(e, &out, &errb, "check-config").Run(); err != nil {
		t.Fatalf("check-config: %v\n%s", err, errb.String())
	}
	if !strings.Contains(out.String(), "mx  poll every 1s (auto: fuse (0x65735546) is a network or FUSE file system") {
		t.Errorf("check-config does not say the share is polled and why:\n%s", out.String())
	}
	p := e.start("run")
	p.waitLog(t, "mxdrop started", 10*time.Second)
	p.waitLog(t, `"watch":"poll"`, 10*time.Second)
	const n = 20
	for i := 0; i < n; i++ {
		share.Deliver(".", fmt.Sprintf("m%02d", i), msg(fmt.Sprintf("share-%d@test", i), "X-Original-To", "alice@example.com"))
	}
	waitUntil(t, "renamed-in files delivered", 15*time.Second, func() bool {
		ids, _ := maildirIDs(t, filepath.Join(mail, "alice"))
		return len(ids) == n
	})
	out.Reset()
	if err := execMxdrop(e, &out, &errb, "status").Run(); err != nil {
		t.Fatalf("status: %v", err)
	}
	if !strings.Contains(out.String(), "watch           poll (auto: fuse") {
		t.Errorf("status does not show the watch mode:\n%s", out.String())
	}
	p.stop(t)
	ids, _ := maildirIDs(t, filepath.Join(mail, "alice"))
	for id, c := range ids {
		if c != 1 {
			t.Errorf("%s delivered %d times", id, c)
		}
	}
}

// TestShareTwoHostsKill9: two instances on two mounts of one share (flock does not
// cross them), the MTA writing a stream of messages; one is killed with SIGKILL
// mid-work and never restarted. The other delivers everything, each message once.
func TestShareTwoHostsKill9(t *testing.T) {
	share := sharetest.New(t)
	mail := t.TempDir()
	const lease = "    claim_lease: 3s\n"
	a := shareEnv(t, share.Mount(), mail, lease)
	b := shareEnv(t, share.Mount(), mail, lease)
	pa, pb := a.start("run"), b.start("run")
	pa.waitLog(t, "mxdrop started", 10*time.Second)
	pb.waitLog(t, "mxdrop started", 10*time.Second)
	// Enough messages that host a is still busy when it is killed: on a fast machine two
	// hosts drained 300 before a poll of a's log came round, and nothing was left to adopt.
	const total = 1000
	for i := 0; i < total; i++ {
		share.Deliver(".", fmt.Sprintf("m%04d", i), msg(fmt.Sprintf("two-%d@test", i), "X-Original-To", "alice@example.com"))
	}
	// Kill a in the middle of the backlog, after its tenth delivery and at an instant
	// when it holds a claim: a polled share hands a's workers files in bursts, and
	// between bursts a can hold none. Its claims (its instance id, the name of its
	// claims folder, holds its pid) are looked at every millisecond.
	aClaims := func() int {
		dirs, _ := filepath.Glob(filepath.Join(share.Backing, ".mxdrop", "claims", fmt.Sprintf("*-%d-*", pa.cmd.Process.Pid)))
		n := 0
		for _, d := range dirs {
			n += len(watcher.ClaimedBy(share.Backing, filepath.Base(d)))
		}
		return n
	}
	deadline := time.Now().Add(15 * time.Second)
	for strings.Count(pa.Logs(), `"outcome":"delivered"`) < 10 || aClaims() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("host a never held a claim after 10 deliveries within 15s")
		}
		time.Sleep(time.Millisecond)
	}
	pa.kill()
	waitUntil(t, "everything delivered by host b", 60*time.Second, func() bool {
		left, claimed := dropLeft(t, share.Backing)
		return len(left) == 0 && len(claimed) == 0
	})
	pb.stop(t)
	ids, tmp := maildirIDs(t, filepath.Join(mail, "alice"))
	if len(ids) != total {
		t.Errorf("%d distinct messages delivered, want %d", len(ids), total)
	}
	for id, c := range ids {
		if c != 1 {
			t.Errorf("%s delivered %d times", id, c)
		}
	}
	if tmp != 0 {
		t.Errorf("%d files left in tmp/", tmp)
	}
	if !strings.Contains(pb.Logs(), "recovering claimed file") {
		t.Error("host b adopted no claim of the killed host a: the test did not kill mid-work")
	}
}

// TestShareRunOnceAfterCopy: cp of many files into the share (written in place, as cp
// does), then run --once at once: every file is taken, none left waiting.
func TestShareRunOnceAfterCopy(t *testing.T) {
	share := sharetest.New(t)
	mail := t.TempDir()
	e := shareEnv(t, share.Mount(), mail, "")
	src := t.TempDir()
	const n = 20
	for i := 0; i < n; i++ {
		os.WriteFile(filepath.Join(src, fmt.Sprintf("m%02d.eml", i)), msg(fmt.Sprintf("cp-%d@test", i), "X-Original-To", "alice@example.com"), 0o640)
	}
	cp := exec.Command("sh", "-c", `cp "$1"/*.eml "$2"/`, "sh", src, share.Backing)
	if out, err := cp.CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	var out, errb bytes.Buffer
	if err := execMxdrop(e, &out, &errb, "run", "--once").Run(); err != nil {
		t.Fatalf("run --once: %v\n%s", err, errb.String())
	}
	if !strings.HasPrefix(out.String(), fmt.Sprintf("imported %d, failed 0, skipped 0, retry 0, waiting 0", n)) {
		t.Errorf("summary = %q", out.String())
	}
	ids, _ := maildirIDs(t, filepath.Join(mail, "alice"))
	if len(ids) != n {
		t.Errorf("%d messages delivered, want %d", len(ids), n)
	}
}
