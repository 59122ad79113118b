package main

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/internal/testenv"
)

func TestRunOnceSummary(t *testing.T) {
	e := newEnv(t, "")
	for i := 0; i < 10; i++ {
		dropFile(t, e.drop, fmt.Sprintf("m%d", i), msg(fmt.Sprintf("once-%d@test", i), "Envelope-to", "alice@example.com", "bob@example.com"))
	}
	dropFile(t, e.drop, "unknown", msg("unknown@test", "X-Original-To", "nobody@example.com"))
	old := time.Now().Add(-time.Minute)
	entries, _ := os.ReadDir(e.drop)
	for _, en := range entries {
		os.Chtimes(filepath.Join(e.drop, en.Name()), old, old)
	}
	var out, errb bytes.Buffer
	cmd := execMxdrop(e, &out, &errb, "run", "--once")
	if err := cmd.Run(); err != nil {
		t.Fatalf("run --once: %v\n%s", err, errb.String())
	}
	if !strings.HasPrefix(out.String(), "imported 10, failed 1, skipped 0, retry 0") {
		t.Errorf("summary = %q", out.String())
	}
	for _, a := range []string{"alice", "bob"} {
		ids, tmp := maildirIDs(t, filepath.Join(e.mail, a))
		if len(ids) != 10 || tmp != 0 {
			t.Errorf("%s: %d messages, %d tmp files", a, len(ids), tmp)
		}
	}
	// One JSON event per message with the documented fields.
	events := strings.Count(errb.String(), `"message":"message"`)
	if events != 11 {
		t.Errorf("%d message events, want 11:\n%s", events, errb.String())
	}
	for _, field := range []string{`"file":`, `"message_id":`, `"from":`, `"recipients":`, `"accounts":`, `"outcome":`, `"size":`, `"duration_ms":`} {
		if !strings.Contains(errb.String(), field) {
			t.Errorf("log lacks %s", field)
		}
	}
}

func TestDaemonImportsRenamedAndWrittenInPlace(t *testing.T) {
	e := newEnv(t, "")
	p := e.start("run")
	p.waitLog(t, "mxdrop started", 10*time.Second)
	time.Sleep(100 * time.Millisecond)
	dropFile(t, e.drop, "renamed", msg("renamed@test", "X-Original-To", "alice@example.com"))
	// A pickup writer writing in place, slowly, to two recipients.
	f, err := os.Create(filepath.Join(e.drop, "inplace.eml"))
	if err != nil {
		t.Fatal(err)
	}
	data := msg("inplace@test", "Envelope-to", "a.smith@example.com", "bob@example.com", "carol@example.org")
	for i := 0; i < len(data); i += 64 {
		f.Write(data[i:min(i+64, len(data))])
		time.Sleep(10 * time.Millisecond)
	}
	f.Close()
	waitUntil(t, "three Maildirs filled", 10*time.Second, func() bool {
		a, _ := maildirIDs(t, filepath.Join(e.mail, "alice"))
		b, _ := maildirIDs(t, filepath.Join(e.mail, "bob"))
		c, _ := maildirIDs(t, filepath.Join(e.mail, "carol"))
		return a["renamed@test"] == 1 && a["inplace@test"] == 1 && b["inplace@test"] == 1 && c["inplace@test"] == 1
	})
	p.stop(t)
	left, claimed := dropLeft(t, e.drop)
	if len(left)+len(claimed) != 0 {
		t.Errorf("left behind: %v %v", left, claimed)
	}
	// The in-place copy was complete: its last body line is there.
	a, _ := os.ReadDir(filepath.Join(e.mail, "bob", "new"))
	b, _ := os.ReadFile(filepath.Join(e.mail, "bob", "new", a[0].Name()))
	if !bytes.HasSuffix(b, []byte("body line of inplace@test\n")) {
		t.Errorf("incomplete copy: %q", tail(string(b), 200))
	}
}

// TestCrashKill9 kills mxdrop with SIGKILL at random moments while messages arrive, at
// least 20 times, and checks that in the end every message is in its Maildir exactly
// once, nothing is left in the drop folder but the expected quarantined files, and no
// temporary file is left behind.
func TestCrashKill9(t *testing.T) {
	if testing.Short() && !testenv.CI() {
		t.Skip("crash test is long (never skipped under CI=true)")
	}
	e := newEnv(t, "")
	const total = 2000
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	seed := rng.Int63()
	t.Logf("seed %d", seed)
	rng = rand.New(rand.NewSource(seed))

	want := map[string]map[string]int{"alice": {}, "bob": {}, "carol": {}}
	var wantFailed int
	produce := func(i int) {
		id := fmt.Sprintf("crash-%d@test", i)
		var data []byte
		switch i % 10 {
		case 0:
			data = msg(id, "X-Original-To", "nobody@example.com") // quarantined
			wantFailed++
		case 1, 2, 3:
			data = msg(id, "Envelope-to", "alice@example.com", "bob@example.com", "carol@example.org")
			want["alice"][id], want["bob"][id], want["carol"][id] = 1, 1, 1
		default:
			data = msg(id, "X-Original-To", []string{"alice@example.com", "bob@example.com", "carol@example.org"}[i%3])
			want[[]string{"alice", "bob", "carol"}[i%3]][id] = 1
		}
		dropFile(t, e.drop, fmt.Sprintf("m%05d", i), data)
	}
	// handled counts what the daemon has finished with: deliveries and quarantines.
	handled := func() int {
		n := 0
		for _, d := range []string{"alice/new", "bob/new", "carol/new"} {
			ents, _ := os.ReadDir(filepath.Join(e.mail, d))
			n += len(ents)
		}
		ents, _ := os.ReadDir(filepath.Join(e.drop, "ImportFailed"))
		return n + len(ents)
	}

	killRuns(t, e, rng, total, produce, handled)

	for acct, ids := range want {
		got, tmp := maildirIDs(t, filepath.Join(e.mail, acct))
		if tmp != 0 {
			t.Errorf("%s: %d files left in tmp/", acct, tmp)
		}
		for id := range ids {
			if got[id] != 1 {
				t.Errorf("%s: %s delivered %d times", acct, id, got[id])
			}
		}
		for id, n := range got {
			if ids[id] == 0 {
				t.Errorf("%s: unexpected %s (%d)", acct, id, n)
			}
		}
	}
	failed, _ := filepath.Glob(filepath.Join(e.drop, "ImportFailed", "m*"))
	var msgs, reasons int
	for _, f := range failed {
		if strings.HasSuffix(f, ".json") {
			reasons++
		} else {
			msgs++
		}
	}
	if msgs != wantFailed || reasons != wantFailed {
		t.Errorf("ImportFailed holds %d messages and %d reasons, want %d of each", msgs, reasons, wantFailed)
	}
	if tmps, _ := filepath.Glob(filepath.Join(e.drop, "ImportFailed", ".*")); len(tmps) != 0 {
		t.Errorf("temporary files left in ImportFailed: %v", tmps)
	}
}

// TestThreeInstances runs three mxdrop processes over one drop folder.
func TestThreeInstances(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	e := newEnv(t, "")
	var ps []*proc
	for i := 0; i < 3; i++ {
		ps = append(ps, e.start("run"))
	}
	for _, p := range ps {
		p.waitLog(t, "mxdrop started", 10*time.Second)
	}
	const total = 3000
	for i := 0; i < total; i++ {
		dropFile(t, e.drop, fmt.Sprintf("m%05d", i), msg(fmt.Sprintf("three-%d@test", i), "X-Original-To", "alice@example.com"))
	}
	waitUntil(t, "all imported", 120*time.Second, func() bool {
		left, claimed := dropLeft(t, e.drop)
		return len(left) == 0 && len(claimed) == 0
	})
	for _, p := range ps {
		p.stop(t)
	}
	got, tmp := maildirIDs(t, filepath.Join(e.mail, "alice"))
	if tmp != 0 {
		t.Errorf("%d tmp files left", tmp)
	}
	if len(got) != total {
		t.Errorf("%d distinct messages delivered, want %d", len(got), total)
	}
	for id, n := range got {
		if n != 1 {
			t.Errorf("%s delivered %d times", id, n)
		}
	}
	// Every instance did a share of the work.
	for i, p := range ps {
		if n := strings.Count(p.Logs(), `"outcome":"delivered"`); n == 0 {
			t.Errorf("instance %d imported nothing", i)
		}
	}
}

// TestInotifyOverflow stops mxdrop (SIGSTOP) while a burst larger than the kernel's
// inotify queue (fs.inotify.max_queued_events) arrives, so the queue overflows for
// real, and checks that every file is imported after it continues.
func TestInotifyOverflow(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	b, err := os.ReadFile("/proc/sys/fs/inotify/max_queued_events")
	if err != nil {
		t.Fatal(err)
	}
	var queue int
	fmt.Sscan(string(b), &queue)
	total := queue + queue/4
	e := newEnv(t, "")
	p := e.start("run")
	p.waitLog(t, "mxdrop started", 10*time.Second)
	// The watcher adds its inotify watch before its first scan: once a probe dropped
	// now is delivered, every file dropped later raises an event, and the events of
	// the files below pile up in the kernel's queue while mxdrop is stopped.
	dropFile(t, e.drop, "probe", msg("probe@test", "X-Original-To", "alice@example.com"))
	waitUntil(t, "the probe delivered", 30*time.Second, func() bool {
		ids, _ := maildirIDs(t, filepath.Join(e.mail, "alice"))
		return ids["probe@test"] == 1
	})
	p.cmd.Process.Signal(syscall.SIGSTOP)
	data := msg("overflow@test", "X-Original-To", "alice@example.com")
	for i := 0; i < total; i++ {
		// One Create event per file: written outside, renamed in.
		dropFile(t, e.drop, fmt.Sprintf("m%06d", i), bytes.Replace(data, []byte("overflow@test"), []byte(fmt.Sprintf("overflow-%d@test", i)), -1))
	}
	p.cmd.Process.Signal(syscall.SIGCONT)
	waitUntil(t, "all imported", 300*time.Second, func() bool {
		left, claimed := dropLeft(t, e.drop)
		return len(left) == 0 && len(claimed) == 0
	})
	p.stop(t)
	if !strings.Contains(p.Logs(), "overflow") {
		t.Errorf("the inotify queue did not overflow (%d files, queue %d): the test proved nothing", total, queue)
	}
	got, _ := maildirIDs(t, filepath.Join(e.mail, "alice"))
	if len(got) != total+1 {
		t.Errorf("%d messages imported, want %d and the probe", len(got), total)
	}
}

func TestReload(t *testing.T) {
	e := newEnv(t, "")
	p := e.start("run")
	p.waitLog(t, "mxdrop started", 10*time.Second)
	// dave does not exist yet: quarantined.
	dropFile(t, e.drop, "d1", msg("dave1@test", "X-Original-To", "dave@example.com"))
	waitUntil(t, "quarantine", 10*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(e.drop, "ImportFailed", "d1"))
		return err == nil
	})
	cfg, _ := os.ReadFile(e.cfgPath)
	// An invalid configuration is refused and the running one kept.
	e.writeConfig(string(cfg) + "bogus_key: 1\n")
	p.waitLog(t, "configuration reload failed", 10*time.Second)
	dropFile(t, e.drop, "a1", msg("alice1@test", "X-Original-To", "alice@example.com"))
	waitUntil(t, "alice still served", 10*time.Second, func() bool {
		ids, _ := maildirIDs(t, filepath.Join(e.mail, "alice"))
		return ids["alice1@test"] == 1
	})
	// Adding dave by editing the file reloads it.
	e.writeConfig(strings.Replace(string(cfg), "connectors:", "  - address: dave@example.com\n    maildir: ./mail/dave\nconnectors:", 1))
	p.waitLog(t, "configuration reloaded", 10*time.Second)
	dropFile(t, e.drop, "d2", msg("dave2@test", "X-Original-To", "dave@example.com"))
	waitUntil(t, "dave served", 10*time.Second, func() bool {
		ids, _ := maildirIDs(t, filepath.Join(e.mail, "dave"))
		return ids["dave2@test"] == 1
	})
	// SIGHUP reloads too.
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, `"trigger":"sighup"`, 10*time.Second)
	p.stop(t)
}

// TestDropFolderComesBack removes the drop folder of a running mxdrop and creates it
// again: the watcher logs the loss, retries, and imports what arrives afterwards.
func TestDropFolderComesBack(t *testing.T) {
	e := newEnv(t, "")
	p := e.start("run")
	p.waitLog(t, "mxdrop started", 10*time.Second)
	time.Sleep(100 * time.Millisecond)
	if err := os.RemoveAll(e.drop); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, "watcher stopped; retrying", 10*time.Second)
	if err := os.MkdirAll(e.drop, 0o750); err != nil {
		t.Fatal(err)
	}
	dropFile(t, e.drop, "back", msg("back@test", "X-Original-To", "alice@example.com"))
	waitUntil(t, "import after the folder came back", 20*time.Second, func() bool {
		ids, _ := maildirIDs(t, filepath.Join(e.mail, "alice"))
		return ids["back@test"] == 1
	})
	p.stop(t)
}

// killRuns feeds total messages (produce(i) writes message i) to 20 daemon runs, each
// killed with SIGKILL a few milliseconds after it finished with its first file
// (handled counts what the daemon finished with), then runs the daemon until the drop
// folder is drained, and fails the test unless some kill hit a claimed file. It
// returns the logs of every run.
func killRuns(t *testing.T, e *env, rng *rand.Rand, total int, produce func(i int), handled func() int) string {
	t.Helper()
	// Each of the 20 runs gets its share of the messages, half before it starts and
	// half while it runs, and is killed a few milliseconds after it finished with its
	// first file, whatever the speed of the machine: so the kills land while files are
	// claimed, half delivered or half quarantined.
	const kills = 20
	perRun := total / kills
	var logs strings.Builder
	for k := 0; k < kills; k++ {
		for i := k * perRun; i < k*perRun+perRun/2; i++ {
			produce(i)
		}
		before := handled()
		p := e.start("run")
		for i := k*perRun + perRun/2; i < (k+1)*perRun; i++ {
			produce(i)
			if i%10 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
		deadline := time.Now().Add(30 * time.Second)
		for handled() == before && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(time.Duration(rng.Intn(10)) * time.Millisecond)
		p.kill()
		logs.WriteString(p.Logs())
	}
	p := e.start("run")
	p.waitLog(t, "mxdrop started", 10*time.Second)
	waitUntil(t, "drop folder drained", 120*time.Second, func() bool {
		left, claimed := dropLeft(t, e.drop)
		return len(left) == 0 && len(claimed) == 0
	})
	p.stop(t)
	logs.WriteString(p.Logs())
	recovered := strings.Count(logs.String(), "recovering claimed file")
	t.Logf("%d kills, %d claimed files recovered after a kill", kills, recovered)
	if recovered == 0 {
		t.Error("no kill hit a claimed file: the crash path was not exercised")
	}
	return logs.String()
}
