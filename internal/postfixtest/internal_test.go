package postfixtest

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The sink's folder names are computed twice, by templates/sink-deliver (in the
// instance) and by sinkName (for Maildir): run the script and compare.
func TestSinkNameMatchesScript(t *testing.T) {
	script, err := fs.ReadFile(templates, "templates/sink-deliver")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "sink-deliver")
	if err := os.WriteFile(path, script, 0o644); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(dir, "base")
	for _, addr := range []string{
		"bob@example.org",
		"Bob.Smith+tag@Example.ORG",
		".hidden@example.org",
		"../../etc@example.org",
		"a/b@x..y",
		"sp ace@example.org",
		"üser@exämple.org",
		"@example.org",
		"a@b@example.org",
	} {
		cmd := exec.Command("/bin/sh", path, base, addr)
		cmd.Stdin = strings.NewReader("Subject: x\n\nbody\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sink-deliver %q: %v: %s", addr, err, out)
		}
		i := strings.LastIndexByte(addr, '@')
		want := filepath.Join(base, sinkName(addr[i+1:]), sinkName(addr[:i]))
		if files := maildirNew(want); len(files) != 1 {
			var all []string
			_ = filepath.WalkDir(base, func(p string, d fs.DirEntry, _ error) error {
				all = append(all, p)
				return nil
			})
			t.Errorf("%q: %d files in %s/new, want 1; tree: %q", addr, len(files), want, all)
		} else if err := os.Remove(files[0]); err != nil {
			t.Fatal(err)
		}
		if rel, err := filepath.Rel(base, want); err != nil || strings.HasPrefix(rel, "..") || strings.Count(rel, string(filepath.Separator)) != 1 {
			t.Errorf("%q: Maildir %s is not two levels below the base", addr, want)
		}
	}
}

// mxdrop-pipe-drop is what users install: exercise it without Postfix.
func TestPipeDropScript(t *testing.T) {
	path, err := fragmentPath("mxdrop-pipe-drop")
	if err != nil {
		t.Fatal(err)
	}
	drop := filepath.Join(t.TempDir(), "drop")
	run := func(stdin string, args ...string) (string, error) {
		cmd := exec.Command("/bin/sh", append([]string{path, drop}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	// Not a Maildir: temporary failure, so Postfix retries.
	out, err := run("Subject: x\n\nbody\n", "ABC123", "a@example.com")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 75 {
		t.Errorf("without a Maildir: %v %s, want exit 75", err, out)
	}

	for _, d := range []string{"tmp", "new", "cur"} {
		if err := os.MkdirAll(filepath.Join(drop, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	msg := "Return-Path: <>\nSubject: x\n\nbody\n"
	if out, err := run(msg, "ABC123", "a@example.com", `"odd guy"@example.com`, "c@example.com"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	files := maildirNew(drop)
	if len(files) != 1 {
		t.Fatalf("new/ holds %v, want one file", files)
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	want := "Envelope-to: a@example.com,\n\t\"odd guy\"@example.com,\n\tc@example.com\n" + msg
	if string(b) != want {
		t.Errorf("file:\n%q\nwant\n%q", b, want)
	}
	if !strings.Contains(filepath.Base(files[0]), ".QABC123P") {
		t.Errorf("name %s does not carry the queue id", files[0])
	}
	if tmp, _ := os.ReadDir(filepath.Join(drop, "tmp")); len(tmp) != 0 {
		t.Errorf("tmp/ not empty: %v", tmp)
	}
	if fi, err := os.Stat(files[0]); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600 (%v)", fi.Mode(), err)
	}

	// Missing recipients: usage error, still temporary.
	if _, err := run(msg, "ABC123"); !errors.As(err, &ee) || ee.ExitCode() != 75 {
		t.Errorf("without recipients: %v, want exit 75", err)
	}
}

func TestRenderMissingPlaceholder(t *testing.T) {
	_, err := render("master.cf.mxdrop", map[string]string{"MXDROP_SPOOL": "/x"})
	if err == nil || !strings.Contains(err.Error(), "@MXDROP_UID@") {
		t.Errorf("render with a missing value: %v, want an error naming @MXDROP_UID@", err)
	}
}

func TestVersionAtLeast(t *testing.T) {
	for _, c := range []struct {
		v    string
		want bool
	}{{"3.7.11", true}, {"3.4", true}, {"3.3.9", false}, {"4.0.1", true}, {"2.11.0", false}, {"x", false}, {"3.10-20250101", true}} {
		if got := versionAtLeast(c.v, 3, 4); got != c.want {
			t.Errorf("versionAtLeast(%q, 3, 4) = %v, want %v", c.v, got, c.want)
		}
	}
}

// fakeTB records how unusable reports; its Fatal and Skip return, unlike the real ones.
type fakeTB struct {
	testing.TB
	fatal, skip string
}

func (f *fakeTB) Helper()           {}
func (f *fakeTB) Fatal(args ...any) { f.fatal = fmt.Sprint(args...) }
func (f *fakeTB) Skip(args ...any)  { f.skip = fmt.Sprint(args...) }

func TestUnusableFailsUnderCI(t *testing.T) {
	cause := errors.New("postfix not found in $PATH")

	t.Setenv("CI", "true")
	f := &fakeTB{}
	unusable(f, cause)
	if f.fatal == "" || f.skip != "" || !strings.Contains(f.fatal, cause.Error()) {
		t.Errorf("CI=true: fatal %q skip %q, want a fatal naming the cause", f.fatal, f.skip)
	}

	t.Setenv("CI", "")
	f = &fakeTB{}
	unusable(f, cause)
	if f.skip == "" || f.fatal != "" || !strings.Contains(f.skip, "apt-get install -y postfix") {
		t.Errorf("no CI: fatal %q skip %q, want a skip that says how to install", f.fatal, f.skip)
	}
}

// A port taken between freePort and master's bind must be recognised, so Start can
// move to another port.
func TestPortTaken(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{})
	s.Stop()
	l, err := net.Listen("tcp", s.Addr())
	if err != nil {
		t.Fatalf("take the instance's port: %v", err)
	}
	defer l.Close()
	err = s.start()
	if err == nil {
		t.Fatal("start on a taken port succeeded")
	}
	if !portTaken(err, s.Log()) {
		t.Errorf("start on a taken port: %v; not recognised as a taken port", err)
	}
	if pids := s.instancePIDs(); len(pids) != 0 {
		t.Errorf("processes %v left after the failed start", pids)
	}
}

// Starts skip postfix-script's checks (quick-start) because makeQueue creates the
// queue as post-install would: run the full checks once against that layout, so a
// Postfix whose manifest or expectations change is noticed here.
func TestPostfixCheck(t *testing.T) {
	t.Parallel()
	// The queue layout is the same in every mode; the other tests start every mode's
	// master.cf and fail on any warning in the log.
	s := Start(t, Options{Mode: ModeDropPipe, RelayRecipientMap: filepath.Join("..", "..", "testdata", "postfix", "recipients.example")})
	if !s.quick {
		t.Errorf("makeQueue failed, so starts run the slow checks")
	}
	out, err := s.run(s.bin.postfix, "-c", s.configDir, "check")
	if err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("postfix check: %v: %s", err, out)
	}
	for _, line := range s.Problems() {
		t.Errorf("log: %s", line)
	}
}

func TestGroupMembers(t *testing.T) {
	cmd := exec.Command("/bin/sh", "-c", "sleep 30 & sleep 30 & wait")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	defer func() {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		_ = cmd.Wait()
	}()
	deadline := time.Now().Add(5 * time.Second)
	for len(groupMembers(pgid)) != 3 {
		if time.Now().After(deadline) {
			t.Fatalf("groupMembers(%d) = %v, want the shell and its two sleeps", pgid, groupMembers(pgid))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	for len(groupMembers(pgid)) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("groupMembers(%d) = %v after SIGKILL, want none", pgid, groupMembers(pgid))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestProblemsSkipsHostClockWarnings(t *testing.T) {
	s := &Server{maillog: filepath.Join(t.TempDir(), "maillog")}
	log := "Nov 23 01:50:57 mx postfix/cleanup[1665]: warning: file system clock is 1 seconds ahead of local clock\n" +
		"Nov 23 01:50:57 mx postfix/cleanup[1665]: warning: resetting file time stamps - this hurts performance\n" +
		"Nov 23 01:50:57 mx postfix/smtpd[1662]: connect from unknown[127.0.0.1]\n" +
		"Nov 23 01:50:57 mx postfix/smtpd[1662]: warning: unknown smtpd restriction: \"bogus\"\n" +
		"Nov 23 01:50:58 mx postfix/pipe[1666]: fatal: pipe_command: execvp /nope: No such file or directory\n"
	if err := os.WriteFile(s.maillog, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	got := s.Problems()
	if len(got) != 2 || !strings.Contains(got[0], "bogus") || !strings.Contains(got[1], "execvp") {
		t.Errorf("Problems() = %q, want the smtpd warning and the pipe fatal line", got)
	}
}
