package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/watcher"
)

// binary is the mxdrop binary the process tests run, built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mxdrop-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "mxdrop")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build mxdrop: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is a temporary mxdrop installation: a configuration, a drop folder and Maildirs.
type env struct {
	t       *testing.T
	root    string
	drop    string
	mail    string
	cfgPath string
}

func newEnv(t *testing.T, extra string) *env {
	t.Helper()
	return newEnvAt(t, t.TempDir(), extra)
}

// newEnvAt is newEnv in the existing folder root.
func newEnvAt(t *testing.T, root, extra string) *env {
	t.Helper()
	e := &env{t: t, root: root, drop: filepath.Join(root, "drop"), mail: filepath.Join(root, "mail")}
	os.MkdirAll(e.drop, 0o750)
	e.cfgPath = filepath.Join(root, "mxdrop.yaml")
	e.writeConfig(`state_dir: ./state
workers: 4
log:
  level: info
  format: json
accounts:
  - address: alice@example.com
    aliases: [a.smith@example.com]
    maildir: ./mail/alice
  - address: bob@example.com
    maildir: ./mail/bob
  - address: carol@example.org
    maildir: ./mail/carol
connectors:
  - name: mx
    drop_folder: ./drop
    subdomains: [example.com, example.org]
    settle: 200ms
    bounce: false
` + extra)
	return e
}

func (e *env) writeConfig(s string) {
	e.t.Helper()
	tmp := e.cfgPath + ".tmp"
	if err := os.WriteFile(tmp, []byte(s), 0o640); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(tmp, e.cfgPath); err != nil {
		e.t.Fatal(err)
	}
}

// proc is a running mxdrop.
type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	logs bytes.Buffer
	done chan struct{}
}

func (e *env) start(args ...string) *proc {
	e.t.Helper()
	return startProc(e.t, exec.Command(binary, append([]string{"--config", e.cfgPath}, args...)...))
}

// startProc starts cmd (an mxdrop) and collects its log; the test's cleanup kills it
// and, when the test failed, shows the end of the log.
func startProc(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{cmd: cmd, done: make(chan struct{})}
	stderr, _ := p.cmd.StderrPipe()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.logs.Write(sc.Bytes())
			p.logs.WriteByte('\n')
			p.mu.Unlock()
		}
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("mxdrop log (last 4 KB):\n%s", tail(p.Logs(), 4096))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (p *proc) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

func (p *proc) waitLog(t *testing.T, substr string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(p.Logs(), substr) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log after %s", substr, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	// A signal before the handlers are in place would kill the process by default:
	// the test is about a daemon that runs.
	p.waitLog(t, "mxdrop started", 10*time.Second)
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("mxdrop did not stop within 30s of SIGTERM")
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("mxdrop exited %d after SIGTERM", code)
	}
}

func (p *proc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func msg(id string, envelope string, rcpts ...string) []byte {
	var b strings.Builder
	b.WriteString("Return-Path: <sender@remote.test>\n")
	if envelope != "" {
		fmt.Fprintf(&b, "%s: %s\n", envelope, strings.Join(rcpts, ", "))
	}
	fmt.Fprintf(&b, "Received: from remote.test by mx.example.com; Sun, 22 Nov 2026 12:00:00 +0000\n")
	fmt.Fprintf(&b, "From: Sender <sender@remote.test>\nTo: %s\nSubject: %s\nMessage-ID: <%s>\n\n", strings.Join(rcpts, ", "), id, id)
	b.WriteString(strings.Repeat("body line of "+id+"\n", 20))
	return []byte(b.String())
}

// dropFile renames a complete message into the drop folder, as Maildir-style writers do.
func dropFile(t testing.TB, drop, name string, data []byte) {
	tmp := filepath.Join(drop, "."+name)
	if err := os.WriteFile(tmp, data, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(drop, name)); err != nil {
		t.Fatal(err)
	}
}

var messageIDRE = regexp.MustCompile(`(?mi)^Message-ID:\s*<([^>]+)>`)

// maildirIDs returns how often each Message-ID is in a Maildir's new/ and cur/, and
// the number of files left in its tmp/.
func maildirIDs(t *testing.T, md string) (map[string]int, int) {
	t.Helper()
	ids := map[string]int{}
	for _, sub := range []string{"new", "cur"} {
		entries, _ := os.ReadDir(filepath.Join(md, sub))
		for _, e := range entries {
			f, err := os.Open(filepath.Join(md, sub, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			head := make([]byte, 4096)
			n, _ := io.ReadFull(f, head)
			f.Close()
			m := messageIDRE.FindSubmatch(head[:n])
			if m == nil {
				t.Errorf("%s/%s has no Message-ID", sub, e.Name())
				continue
			}
			ids[string(m[1])]++
		}
	}
	tmps, _ := os.ReadDir(filepath.Join(md, "tmp"))
	return ids, len(tmps)
}

func waitUntil(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// dropLeft lists what is left in the drop folder besides ImportFailed/, .mxdrop/ and
// claimed files, and the claimed files (claim names in the drop folder and its new/,
// files in claims folders; not their dot-files: .lock, .lease).
func dropLeft(t *testing.T, drop string) (left, claimed []string) {
	t.Helper()
	entries, _ := os.ReadDir(drop)
	for _, e := range entries {
		if e.Name() != "ImportFailed" && e.Name() != ".mxdrop" && !watcher.IsClaimName(e.Name()) {
			left = append(left, e.Name())
		}
	}
	return left, watcher.ClaimedFiles(drop)
}

func execMxdrop(e *env, stdout, stderr *bytes.Buffer, args ...string) *exec.Cmd {
	cmd := exec.Command(binary, append([]string{"--config", e.cfgPath}, args...)...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	return cmd
}
