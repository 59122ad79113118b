// Package dovecottest starts a throwaway Dovecot 2.3 on loopback for tests: IMAP, IMAPS,
// POP3 and POP3S on free ports of 127.0.0.1, TLS with a certificate made for the test, users
// from a map, and doveadm helpers to put mail in and to read a Maildir back the way a real
// IMAP server sees it.
//
// # Requirements
//
// The dovecot, doveadm, imap and pop3 binaries (Debian: dovecot-core, dovecot-imapd,
// dovecot-pop3d) and root. Dovecot's master must start as root, and Dovecot refuses mail
// access as root, so every mail process runs as nobody (uid and gid 65534) over folders the
// harness makes for it. [Require] skips a test when a prerequisite is missing, or fails it
// when the environment variable CI is "true": under CI a missing server is an error, never
// a silent skip.
//
// # Lifetime
//
// [Start] writes dovecot.conf, the passwd-file and the certificate into a fresh folder,
// starts "dovecot -F" as a child process, waits until every port accepts connections and
// registers a t.Cleanup that stops it: SIGTERM to that one PID (Dovecot's master stops its own
// children), then wait. The child also gets SIGTERM if the test binary dies. When the test has
// failed, the cleanup prints Dovecot's log. Stopping takes Dovecot about a second, so a
// package's tests are best grouped under one Start with subtests and one user each.
//
// # Reading back a Maildir that Dovecot does not own
//
// [MessageIDs], [Fetch] and the [Server] methods of the same names read any Maildir, for
// example one written by mxdrop as root with 0700 folders, through doveadm, so a Maildir
// Dovecot cannot parse fails the test. Three facts shape how:
//
//   - Dovecot refuses a userdb uid of 0 ("userdb returned 0 as uid", and passwd-file calls
//     uid 0 invalid), so doveadm cannot simply read as root.
//   - doveadm started as root drops to the userdb's uid, and with it every capability.
//   - Changing the Maildir's owner or mode would change the thing under test.
//
// So the harness starts doveadm itself as uid/gid 65534 with the ambient capability
// CAP_DAC_READ_SEARCH, and the userdb answers 65534 for its reader user, so doveadm has no
// uid to change and keeps the capability: it can read and search every file and folder, but
// it cannot write or create anything the permissions deny it. It runs with
//
//	mail_location = maildir:PATH:INDEX=MEMORY:CONTROL=<a scratch folder of the harness>
//
// so indexes live in memory and dovecot-uidlist and dovecot-uidvalidity go to the scratch
// folder: the Maildir is not modified (a message in new/ stays in new/). Folders are Maildir++
// (".Junk" is the folder "Junk"), as Dovecot's default layout and go-maildir use.
//
// The package-level [MessageIDs] and [Fetch] start a small Dovecot without listeners once per
// test (it is needed for the userdb lookup) and stop it with the test.
//
// Dovecot itself checks what it reads: a ,S= size in a file name that disagrees with the
// file fails the read, a message left in tmp/ is not seen, and Fetch insists on exactly one
// message per Message-ID, so a duplicate delivery fails the test too.
//
// # Test-friendly settings
//
// Plaintext logins are allowed on the plain ports (disable_plaintext_auth = no), failed
// logins are not delayed (auth_failure_delay = 0 and anvil's auth penalty off), and POP3
// UIDLs are "%08Xu%08Xv" (UID and UIDVALIDITY), stable across sessions and restarts.
package dovecottest

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
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

// MailUID and MailGID are the uid and gid of every mail process of the harness (nobody and
// nogroup on Debian). Users' Maildirs are owned by them.
const (
	MailUID = 65534
	MailGID = 65534
)

// Host is the address every listener of the harness binds to. Nothing listens elsewhere.
const Host = "127.0.0.1"

// ServerName is a name the certificate is valid for besides 127.0.0.1 (and ::1); use it as
// tls.Config.ServerName when dialling Host.
const ServerName = "localhost"

// readerUser is the userdb-only user doveadm reads foreign Maildirs as. It has no password,
// so nobody can log in as it.
const readerUser = "mxdrop-reader"

// startTimeout bounds how long Start waits for Dovecot's ports; stopTimeout how long Stop waits
// for the master to exit after SIGTERM before it sends SIGKILL to the same PID.
const (
	startTimeout = 30 * time.Second
	stopTimeout  = 15 * time.Second
)

// Options configures a Server. The zero value is a server without login users.
type Options struct {
	// Users maps a login name to its plaintext password. Names and passwords must not
	// contain ':' or line breaks (passwd-file syntax); Start fails the test otherwise.
	// Each user gets an empty Maildir at Server.Maildir(user).
	Users map[string]string

	// ExtraConfig is appended verbatim to dovecot.conf; a later setting overrides an
	// earlier one, so tests can change auth_mechanisms, add a passdb and so on.
	ExtraConfig string
	// LMTP also runs Dovecot's LMTP service (Debian dovecot-lmtpd) on a unix socket
	// (Server.LMTPSocket) and on a TCP port of Host (Server.LMTPAddr), with "+" as the
	// recipient delimiter. Delivery runs as MailUID like every mail process.
	LMTP bool

	// noListeners starts only the services doveadm needs (config, auth, log): the
	// read-back server of MessageIDs and Fetch.
	noListeners bool
}

// Server is a running Dovecot started by Start. Its methods may be called from subtests;
// those that take a testing.TB fail that test on error. A Server is safe for concurrent use.
type Server struct {
	dir     string // everything of this server lives here
	conf    string // dovecot.conf
	logPath string // Dovecot's log_path
	outPath string // dovecot -F stdout and stderr
	caFile  string
	pool    *x509.CertPool

	// Ports of the listeners on Host; zero with noListeners.
	imapPort, imapsPort, pop3Port, pop3sPort int
	lmtpPort                                 int // 0 without Options.LMTP

	users       map[string]string
	noListeners bool
	lmtp        bool

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd has been waited for
	waitErr error
	scratch int // counter for per-call read-back control folders

	logOffset int64 // size of the log before the current start
}

// Require fails or skips t when the harness cannot run here: a Dovecot binary is missing, or
// the test does not run as root. Under CI=true it calls t.Fatal, otherwise t.Skip, each with
// what is missing and how to install it. Start calls Require itself.
func Require(t testing.TB) {
	t.Helper()
	if err := available(); err != nil {
		testenv.Unavailable(t, "dovecottest: %v", err)
	}
}

var availableOnce = sync.OnceValue(func() error {
	var missing []string
	for _, name := range []string{"dovecot", "doveadm"} {
		if _, err := lookBinary(name); err != nil {
			missing = append(missing, name)
		}
	}
	for _, name := range []string{"imap", "pop3", "imap-login", "pop3-login"} {
		found := false
		for _, dir := range libexecDirs {
			if fi, err := os.Stat(filepath.Join(dir, name)); err == nil && !fi.IsDir() {
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("dovecot binaries missing: %s (apt-get install dovecot-core dovecot-imapd dovecot-pop3d)",
			strings.Join(missing, ", "))
	}
	if os.Geteuid() != 0 {
		return errors.New("dovecot's master needs root to run mail processes as uid 65534; run the tests as root")
	}
	return nil
})

// available is a variable so the test of Require can pretend Dovecot is missing.
var available = func() error { return availableOnce() }

// libexecDirs are where distributions put Dovecot's service binaries.
var libexecDirs = []string{"/usr/lib/dovecot", "/usr/libexec/dovecot", "/usr/local/libexec/dovecot"}

// lookBinary finds dovecot or doveadm in PATH or in the sbin folders a non-root PATH lacks.
func lookBinary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

// Start starts a Dovecot for t with opts and returns once IMAP, IMAPS, POP3 and POP3S greet
// on Host. It fails the test (after Require) if Dovecot does not come up, printing its log;
// the server stops in t.Cleanup, which prints the log first if t has failed.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	Require(t)
	for name, pass := range opts.Users {
		if name == "" || strings.ContainsAny(name, ":\r\n/") || name == readerUser {
			t.Fatalf("dovecottest: invalid user name %q", name)
		}
		if strings.ContainsAny(pass, ":\r\n") {
			t.Fatalf("dovecottest: the password of %q contains ':' or a line break", name)
		}
	}

	s := &Server{users: opts.Users, noListeners: opts.noListeners, lmtp: opts.LMTP}
	// Dovecot's unprivileged processes (auth as dovecot, mail as 65534) open files here.
	s.dir = testenv.ReachableDir(t, "dovecottest-")
	s.conf = filepath.Join(s.dir, "dovecot.conf")
	s.logPath = filepath.Join(s.dir, "dovecot.log")
	s.outPath = filepath.Join(s.dir, "dovecot.out")
	if err := s.prepare(opts); err != nil {
		t.Fatalf("dovecottest: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			s.dumpLog(t)
		}
		if err := s.stop(); err != nil {
			t.Errorf("dovecottest: stop: %v", err)
		}
	})

	// The ports are picked free but released before Dovecot binds them; another process may
	// take one in between, so a failed start is retried with new ports.
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if !s.noListeners {
			if err = s.pickPorts(); err != nil {
				break
			}
		}
		if err = s.writeConfig(opts); err != nil {
			break
		}
		if err = s.start(); err == nil {
			return s
		}
		if !errors.Is(err, errAddrInUse) {
			break
		}
	}
	s.dumpLog(t)
	t.Fatalf("dovecottest: start: %v", err)
	return nil
}

// prepare writes the certificate, the passwd-files and the users' Maildirs.
func (s *Server) prepare(opts Options) error {
	for _, d := range []string{"run", "state", "home", "reader"} {
		if err := os.Mkdir(filepath.Join(s.dir, d), 0o755); err != nil {
			return err
		}
	}
	// The reader's home and the read-back control folders are written by doveadm as 65534.
	if err := os.Chown(filepath.Join(s.dir, "reader"), MailUID, MailGID); err != nil {
		return err
	}
	certPEM, keyPEM, pool, err := newCertificate()
	if err != nil {
		return fmt.Errorf("certificate: %w", err)
	}
	s.pool = pool
	s.caFile = filepath.Join(s.dir, "ca.pem")
	if err := os.WriteFile(s.caFile, certPEM, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(s.dir, "key.pem"), keyPEM, 0o600); err != nil {
		return err
	}

	var passwd bytes.Buffer
	for name, pass := range opts.Users {
		fmt.Fprintf(&passwd, "%s:{PLAIN}%s::::::\n", name, pass)
		for _, d := range []string{"", "Maildir", "Maildir/cur", "Maildir/new", "Maildir/tmp"} {
			p := filepath.Join(s.dir, "home", name, d)
			if err := os.Mkdir(p, 0o700); err != nil {
				return err
			}
			if err := os.Chown(p, MailUID, MailGID); err != nil {
				return err
			}
		}
	}
	// Read by the auth process, which runs as the dovecot user.
	if err := os.WriteFile(filepath.Join(s.dir, "passwd"), passwd.Bytes(), 0o644); err != nil {
		return err
	}
	readers := fmt.Sprintf("%s::%d:%d::%s::\n", readerUser, MailUID, MailGID, filepath.Join(s.dir, "reader"))
	return os.WriteFile(filepath.Join(s.dir, "readers"), []byte(readers), 0o644)
}

// pickPorts takes five free ports of Host (the fifth for LMTP).
func (s *Server) pickPorts() error {
	var ports [5]int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i := range ports {
		l, err := net.Listen("tcp", net.JoinHostPort(Host, "0"))
		if err != nil {
			return fmt.Errorf("pick a free port: %w", err)
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	s.imapPort, s.imapsPort, s.pop3Port, s.pop3sPort = ports[0], ports[1], ports[2], ports[3]
	if s.lmtp {
		s.lmtpPort = ports[4]
	}
	return nil
}

var errAddrInUse = errors.New("address already in use")

// start runs dovecot -F and waits for its ports (or, without listeners, its userdb socket).
func (s *Server) start() error {
	bin, err := lookBinary("dovecot")
	if err != nil {
		return err
	}
	s.logOffset = 0
	if fi, err := os.Stat(s.logPath); err == nil {
		s.logOffset = fi.Size()
	}
	out, err := os.OpenFile(s.outPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.Command(bin, "-F", "-c", s.conf)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	// Pdeathsig stops Dovecot when the test binary dies without running its cleanups. The
	// kernel sends it when the forking *thread* exits, and Go may retire threads, so the
	// fork happens on a goroutine locked to its thread that lives until Dovecot has exited.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	done := make(chan struct{})
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		s.mu.Lock()
		s.cmd, s.done, s.waitErr = cmd, done, nil
		s.mu.Unlock()
		started <- nil
		err := cmd.Wait()
		s.mu.Lock()
		s.waitErr = err
		s.mu.Unlock()
		close(done)
	}()
	if err := <-started; err != nil {
		return err
	}

	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-done:
			s.mu.Lock()
			werr := s.waitErr
			s.mu.Unlock()
			log := s.readLogs()
			if strings.Contains(log, "Address already in use") {
				return errAddrInUse
			}
			return fmt.Errorf("dovecot exited during start-up (%v); see its log", werr)
		default:
		}
		if s.ready() {
			return nil
		}
		if time.Now().After(deadline) {
			s.stop()
			return fmt.Errorf("dovecot not ready after %v", startTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ready reports whether the master has logged its start-up (its signal handlers are set
// from then on: a SIGTERM sent earlier may be lost) and every listener accepts connections.
func (s *Server) ready() bool {
	if log, err := os.ReadFile(s.logPath); err != nil || !bytes.Contains(log[s.logOffset:], []byte("master: Info: Dovecot v")) {
		return false
	}
	if s.noListeners {
		c, err := net.DialTimeout("unix", filepath.Join(s.dir, "run", "auth-userdb"), time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	// A greeting, not just an accepted connection: login processes greet once the auth
	// process answers them, and a Dovecot stopped before that takes seconds to exit.
	for _, l := range []struct {
		port     int
		tls      bool
		greeting string
	}{{s.imapPort, false, "* OK"}, {s.imapsPort, true, "* OK"}, {s.pop3Port, false, "+OK"}, {s.pop3sPort, true, "+OK"}, {s.lmtpPort, false, "220 "}} {
		if l.port == 0 {
			continue
		}
		if !greets(addr(l.port), l.tls, s.TLSConfig(), l.greeting) {
			return false
		}
	}
	return true
}

// greets reports whether the server at addr sends a first line starting with greeting.
func greets(address string, useTLS bool, cfg *tls.Config, greeting string) bool {
	c, err := net.DialTimeout("tcp", address, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if useTLS {
		c = tls.Client(c, cfg)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, greeting)
}

// Stop stops Dovecot (SIGTERM to its master, then wait) and fails t if it does not exit
// cleanly. Stopping a stopped server does nothing. The cleanup of Start calls it too.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	if err := s.stop(); err != nil {
		t.Fatalf("dovecottest: stop: %v", err)
	}
}

// Restart stops Dovecot if it runs and starts it again with the same configuration, ports,
// users and mail: for tests of reconnecting clients.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if err := s.stop(); err != nil {
		t.Fatalf("dovecottest: stop: %v", err)
	}
	if err := s.start(); err != nil {
		s.dumpLog(t)
		t.Fatalf("dovecottest: restart: %v", err)
	}
}

func (s *Server) stop() error {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-done:
		// Exited on its own (or failed to start); nothing to signal.
	default:
		// Dovecot's master takes about a second to stop. SIGTERM is repeated because one
		// that arrives while the master is still starting can be lost.
		deadline := time.After(stopTimeout)
		tick := time.NewTicker(3 * time.Second)
		defer tick.Stop()
	wait:
		for {
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
				return err
			}
			select {
			case <-done:
				break wait
			case <-tick.C:
			case <-deadline:
				cmd.Process.Kill()
				<-done
				return fmt.Errorf("dovecot (pid %d) ignored SIGTERM for %v; killed", cmd.Process.Pid, stopTimeout)
			}
		}
	}
	s.mu.Lock()
	err := s.waitErr
	s.mu.Unlock()
	if err != nil {
		// dovecot -F exits 0 on SIGTERM.
		return fmt.Errorf("dovecot (pid %d): %v", cmd.Process.Pid, err)
	}
	return nil
}

// readLogs returns Dovecot's stdout/stderr and log file, the log file cut to its last 64 KiB.
func (s *Server) readLogs() string {
	var b strings.Builder
	if out, err := os.ReadFile(s.outPath); err == nil && len(out) > 0 {
		fmt.Fprintf(&b, "--- dovecot -F output (%s):\n%s", s.outPath, out)
	}
	if log, err := os.ReadFile(s.logPath); err == nil {
		const max = 64 << 10
		if len(log) > max {
			log = log[len(log)-max:]
		}
		fmt.Fprintf(&b, "--- dovecot log (%s):\n%s", s.logPath, log)
	}
	return b.String()
}

func (s *Server) dumpLog(t testing.TB) {
	t.Helper()
	t.Logf("dovecottest: %s\n%s", s.conf, s.readLogs())
}

// addr returns host:port of a listener on Host.
func addr(port int) string { return net.JoinHostPort(Host, strconv.Itoa(port)) }

// IMAPAddr is the plain IMAP listener (STARTTLS offered, plaintext login allowed).
func (s *Server) IMAPAddr() string { return addr(s.imapPort) }

// IMAPSAddr is the implicit-TLS IMAP listener.
func (s *Server) IMAPSAddr() string { return addr(s.imapsPort) }

// POP3Addr is the plain POP3 listener (STLS offered, plaintext login allowed).
func (s *Server) POP3Addr() string { return addr(s.pop3Port) }

// POP3SAddr is the implicit-TLS POP3 listener.
func (s *Server) POP3SAddr() string { return addr(s.pop3sPort) }

// Ports returns the ports of IMAP, IMAPS, POP3 and POP3S on Host.
func (s *Server) Ports() (imap, imaps, pop3, pop3s int) {
	return s.imapPort, s.imapsPort, s.pop3Port, s.pop3sPort
}

// LMTPAddr returns host:port of the LMTP listener ("" without Options.LMTP).
func (s *Server) LMTPAddr() string {
	if s.lmtpPort == 0 {
		return ""
	}
	return addr(s.lmtpPort)
}

// LMTPSocket returns the path of the LMTP unix socket (with Options.LMTP).
func (s *Server) LMTPSocket() string { return filepath.Join(s.dir, "run", "lmtp") }

// Home returns a user's home folder (Sieve scripts go there), owned by MailUID.
func (s *Server) Home(user string) string { return filepath.Join(s.dir, "home", user) }

// CertPool returns a pool holding the server's self-signed certificate, the only one that
// verifies it. Each Start makes a new certificate.
func (s *Server) CertPool() *x509.CertPool { return s.pool }

// CAFile is the path of the certificate in PEM, for configurations with a ca_file.
func (s *Server) CAFile() string { return s.caFile }

// TLSConfig returns a new client configuration that verifies the server: RootCAs is
// CertPool and ServerName is ServerName.
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{RootCAs: s.pool, ServerName: ServerName}
}

// ConfigPath is dovecot.conf, for running doveadm or doveconf by hand.
func (s *Server) ConfigPath() string { return s.conf }

// LogPath is Dovecot's log file.
func (s *Server) LogPath() string { return s.logPath }

// Maildir is the Maildir of user (owned by MailUID), whether or not user exists.
func (s *Server) Maildir(user string) string { return filepath.Join(s.dir, "home", user, "Maildir") }
