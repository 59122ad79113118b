// Package spamdtest starts a throwaway SpamAssassin spamd on loopback for tests: on a
// free port of 127.0.0.1, local tests only (--local: no DNS, no network), no user
// configuration and no Bayes database, logging into a folder of its own.
//
// # Requirements
//
// The spamd script and SpamAssassin's rules (Debian: spamd spamassassin). [Require]
// skips a test when spamd is missing, or fails it when the environment variable CI is
// "true": under CI a missing server is an error, never a silent skip. As root, spamd's
// children run as nobody (-u nobody), since spamd refuses to check mail as root.
//
// # Lifetime
//
// [Start] runs spamd in the foreground as a child process in a process group of its
// own, waits until it answers PING, and registers a t.Cleanup that stops it. [Server.Stop]
// sends SIGTERM to that process group only (the spamd parent and its children), then
// SIGKILL to the same group after a grace period. The child also gets SIGTERM if the
// test binary dies. When the test has failed, the cleanup prints spamd's log.
//
// Starting spamd compiles SpamAssassin's rules: a second or two on an idle machine, tens
// of seconds on a loaded one. Start waits up to StartTimeout.
package spamdtest

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/internal/testenv"
)

// Host is the address spamd listens on. Nothing listens elsewhere.
const Host = "127.0.0.1"

// StartTimeout bounds how long Start waits for spamd to answer PING; stopTimeout how
// long Stop waits after SIGTERM before SIGKILL.
const (
	StartTimeout = 120 * time.Second
	stopTimeout  = 15 * time.Second
)

// nobodyUID is the user spamd's children run as when the test runs as root.
const nobodyUID = 65534

// GTUBE is SpamAssassin's Generic Test for Unsolicited Bulk Email: a body line that every
// SpamAssassin scores 1000, so a message containing it is spam whatever the rules.
const GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

// Require fails or skips t when spamd cannot run here. Under CI=true it calls t.Fatal,
// otherwise t.Skip, each with what is missing and how to install it. Start calls it.
func Require(t testing.TB) {
	t.Helper()
	if _, err := lookBinary(); err != nil {
		testenv.Unavailable(t, "spamdtest: %v", err)
	}
}

// lookBinary finds spamd in PATH or in the sbin folders a non-root PATH lacks.
func lookBinary() (string, error) {
	if p, err := exec.LookPath("spamd"); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"} {
		p := filepath.Join(dir, "spamd")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errors.New("spamd not found (apt-get install spamd spamassassin)")
}

// Server is a running spamd started by Start. Its methods are safe for concurrent use.
type Server struct {
	// Addr is spamd's host:port on Host, for configs.Spam.Spamd.
	Addr string

	dir     string
	logPath string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd has been waited for
	stopped bool
}

// Start starts a spamd for t and returns once it answers PING. It fails the test (after
// Require) if spamd does not come up within StartTimeout, printing its log; the server
// stops in t.Cleanup, which prints the log first if t has failed.
func Start(t testing.TB) *Server {
	t.Helper()
	Require(t)
	// spamd's children run as nobody and read the files here.
	dir := testenv.ReachableDir(t, "spamdtest-")
	s := &Server{dir: dir, logPath: filepath.Join(dir, "spamd.log")}
	t.Cleanup(func() {
		if t.Failed() {
			s.dumpLog(t)
		}
		s.Stop()
	})
	if err := s.prepare(); err != nil {
		t.Fatalf("spamdtest: %v", err)
	}
	// The port is picked free but released before spamd binds it; another process may
	// take it in between, so a failed start is retried with a new port.
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = s.start(); err == nil {
			return s
		}
		s.Stop()
		if !errors.Is(err, errExited) {
			break
		}
	}
	s.dumpLog(t)
	t.Fatalf("spamdtest: start: %v", err)
	return nil
}

// prepare makes the home folder spamd's children may write (nobody's when root).
func (s *Server) prepare() error {
	if err := os.Chmod(s.dir, 0o755); err != nil {
		return err
	}
	home := filepath.Join(s.dir, "home")
	if err := os.Mkdir(home, 0o755); err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		return os.Chown(home, nobodyUID, nobodyUID)
	}
	return nil
}

var errExited = errors.New("spamd exited")

// start runs spamd and waits for PING to be answered.
func (s *Server) start() error {
	bin, err := lookBinary()
	if err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	s.Addr = net.JoinHostPort(Host, strconv.Itoa(port))
	home := filepath.Join(s.dir, "home")
	args := []string{
		"--local",         // no DNS or network tests: hermetic, and no wait for resolvers
		"--nouser-config", // no ~/.spamassassin/user_prefs
		"--listen=" + s.Addr,
		"--allowed-ips=" + Host,
		"--max-children=2", "--min-children=1", "--min-spare=1", "--max-spare=2",
		"--helper-home-dir=" + home,
		"--syslog=stderr",
		"--cf=use_bayes 0",
		"--cf=bayes_auto_learn 0",
	}
	if os.Geteuid() == 0 {
		args = append(args, "--username=nobody")
	}
	out, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.Command(bin, args...)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + home, "LANG=C"}
	// A process group of its own, so that Stop reaches spamd's children and nothing
	// else. Pdeathsig stops spamd when the test binary dies without running its
	// cleanups; the kernel sends it when the forking *thread* exits, so the fork happens
	// on a goroutine locked to its thread that lives until spamd has exited.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	done := make(chan struct{})
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		s.mu.Lock()
		s.cmd, s.done, s.stopped = cmd, done, false
		s.mu.Unlock()
		started <- nil
		cmd.Wait()
		close(done)
	}()
	if err := <-started; err != nil {
		return err
	}
	deadline := time.Now().Add(StartTimeout)
	for {
		if err := ping(s.Addr); err == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("%w before answering PING (see its log)", errExited)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("spamd did not answer PING on %s within %v", s.Addr, StartTimeout)
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(Host, "0"))
	if err != nil {
		return 0, fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ping sends the spamc protocol's PING and expects PONG.
func ping(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("PING SPAMC/1.5\r\n\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.Contains(line, " 0 PONG") {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// Stop stops spamd: SIGTERM to its process group, SIGKILL to the same group after
// stopTimeout. It returns once the spamd parent has exited; it does nothing when spamd is
// not running. The test cleanup calls it; a test calls it to see how mxdrop copes with
// spamd going away.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, done, stopped := s.cmd, s.done, s.stopped
	s.stopped = true
	s.mu.Unlock()
	if cmd == nil || stopped {
		return
	}
	pgid := cmd.Process.Pid // Setpgid: the group is the child's own
	syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(stopTimeout):
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-done
	}
	// Children that outlived their parent by a moment get the same signal.
	syscall.Kill(-pgid, syscall.SIGKILL)
}

func (s *Server) dumpLog(t testing.TB) {
	t.Helper()
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		t.Logf("spamdtest: read log: %v", err)
		return
	}
	const max = 16 << 10
	if len(b) > max {
		b = b[len(b)-max:]
	}
	t.Logf("spamdtest: spamd log (%s):\n%s", s.logPath, b)
}
