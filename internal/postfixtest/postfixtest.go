// Package postfixtest starts throwaway Postfix instances for mxdrop's integration
// tests: the MTA that drops accepted mail into mxdrop's drop folder, and the relay that
// receives mxdrop's DSNs.
//
// Each instance lives entirely inside a folder of its own that Postfix's unprivileged
// processes can reach (testenv.ReachableDir: under TMPDIR, or under /tmp when TMPDIR lies
// below a folder closed to others): its own config_directory (main.cf and
// master.cf rendered from templates), queue_directory, data_directory and log file, and
// one smtpd listening on a random port of 127.0.0.1 and nowhere else. It needs the
// Postfix binaries (Debian package postfix, 3.4 or later for postlogd) and root: the
// master process must start as root, and the delivery agents then write as uid/gid
// 65534 (nobody/nogroup), because Postfix never delivers as root. The system's own
// Postfix instance (/etc/postfix) is neither read nor touched; it may be running or not.
//
// The delivery side of an instance is the configuration mxdrop documents for its users:
// testdata/postfix holds the main.cf and master.cf fragments, with @PLACEHOLDER@ values
// this package fills in, so the tests exercise exactly what the README shows.
//
// Every Server is stopped by t.Cleanup, and its log is printed when the test failed.
// Methods that take no testing.TB report failures through the one given to Start and
// must therefore be called from the test's goroutine, like t.Fatal.
package postfixtest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/internal/testenv"
)

// Mode selects where an instance delivers the mail it accepts.
type Mode int

const (
	// ModeDrop is the MTA in front of mxdrop, as testdata/postfix/master.cf.mxdrop
	// configures it: every recipient of the configured domains is accepted (unless
	// Options.RelayRecipientMap says otherwise) and virtual(8) writes one file per
	// recipient into the one drop Maildir, DropFolder()/new, with Return-Path,
	// X-Original-To and Delivered-To on top.
	ModeDrop Mode = iota
	// ModeDropPipe is the alternative of testdata/postfix/master.cf.mxdrop-pipe: pipe(8)
	// and mxdrop-pipe-drop write one file per message and domain into DropFolder()/new,
	// with Envelope-to (all recipients) and Return-Path on top.
	ModeDropPipe
	// ModeSink is a relay that keeps what it receives: every recipient of the
	// configured domains gets its own Maildir, Maildir(addr), with Return-Path,
	// X-Original-To and Delivered-To on top (written through pipe(8); virtual(8)
	// cannot derive a Maildir path from the address).
	ModeSink
)

// String returns the name of the mode as used in the constants.
func (m Mode) String() string {
	switch m {
	case ModeDrop:
		return "ModeDrop"
	case ModeDropPipe:
		return "ModeDropPipe"
	case ModeSink:
		return "ModeSink"
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

// Options configure an instance. The zero value is a ModeDrop instance for
// example.com that accepts every local part.
type Options struct {
	// Mode selects the delivery side; the default is ModeDrop.
	Mode Mode
	// Domains are the domains the instance accepts mail for, in Postfix relay_domains
	// syntax: "example.com", or ".example.com" for every subdomain. Mail for any other
	// domain is refused at RCPT with 554 5.7.1 (relay access denied). Default:
	// example.com.
	Domains []string
	// RelayRecipientMap is the path of a map file in Postfix "address OK" / "@domain OK"
	// format (what `mxdrop export-recipients --format postfix` writes). When set, the
	// instance copies it, runs postmap on the copy and rejects every unlisted recipient
	// of Domains at RCPT with "550 5.1.1 ... User unknown in relay recipient table",
	// wired as testdata/postfix/main.cf.recipients documents. "" accepts every
	// recipient of Domains.
	RelayRecipientMap string
	// Hostname is the instance's myhostname, shown in its greeting, Received fields
	// and queue file names. Default: mx.postfixtest.test.
	Hostname string
}

// Deliveries are written as this uid and gid (nobody/nogroup on Debian): Postfix
// refuses to deliver as root, and every delivery folder of an instance is owned by it.
const (
	DeliveryUID = 65534
	DeliveryGID = 65534
)

const (
	defaultDomain   = "example.com"
	defaultHostname = "mx.postfixtest.test"

	// Bounds of the polls; the polls themselves run every pollInterval.
	pollInterval   = 10 * time.Millisecond
	startTimeout   = 20 * time.Second
	stopTimeout    = 10 * time.Second
	commandTimeout = 30 * time.Second
)

// Server is one running (or stopped) Postfix instance. Its methods are meant for the
// test goroutine; the accessors (Addr, Port, DropFolder, Maildir, LogPath, Log,
// ConfigDir) may be called from any goroutine.
type Server struct {
	t    testing.TB
	opts Options
	bin  binaries

	root      string // testenv.ReachableDir: Postfix's unprivileged processes reach it
	configDir string
	queueDir  string
	maillog   string
	dropDir   string // ModeDrop, ModeDropPipe: the drop Maildir
	sinkDir   string // ModeSink: the base of the per-recipient Maildirs
	port      int

	mu      sync.Mutex
	running bool
	// quick: the queue layout exists, so starts skip postfix-script's checks.
	quick bool
}

// Start starts a Postfix instance configured by opts inside its own folder and returns
// once its smtpd answers on Addr(). It calls Require first, so a machine without
// Postfix skips the test (or fails it under CI=true). Any other failure is t.Fatal,
// with the instance's log. t.Cleanup stops the instance (see Stop) and, if the test
// failed, prints its log.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin := require(t)
	if len(opts.Domains) == 0 {
		opts.Domains = []string{defaultDomain}
	}
	for _, d := range opts.Domains {
		if d == "" || strings.ContainsAny(d, " \t\r\n,{}") {
			t.Fatalf("postfixtest: bad domain %q in Options.Domains", d)
		}
	}
	if opts.Hostname == "" {
		opts.Hostname = defaultHostname
	}
	switch opts.Mode {
	case ModeDrop, ModeDropPipe, ModeSink:
	default:
		t.Fatalf("postfixtest: unknown %v", opts.Mode)
	}

	s := &Server{t: t, opts: opts, bin: bin, root: testenv.ReachableDir(t, "postfixtest-")}
	s.configDir = filepath.Join(s.root, "etc")
	s.queueDir = filepath.Join(s.root, "spool")
	s.maillog = filepath.Join(s.root, "maillog")
	if err := s.prepare(); err != nil {
		t.Fatalf("postfixtest: prepare %s: %v", s.root, err)
	}
	// The one place the log is printed: every failure of this package is a t.Fatal,
	// and the test's failure brings the log out here, after the stop.
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("postfixtest: stop: %v", err)
		}
		if t.Failed() {
			s.dumpLog()
		}
	})

	// The port is chosen by binding :0 and closing it again, so another process can
	// take it before master binds it: start over on a fresh port a few times.
	began := time.Now()
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if s.port, err = freePort(); err != nil {
			t.Fatalf("postfixtest: %v", err)
		}
		if err = s.writeConfig(); err != nil {
			t.Fatalf("postfixtest: write configuration: %v", err)
		}
		logged := len(s.Log())
		if err = s.start(); err == nil {
			t.Logf("postfixtest: %v instance on %s (config %s) started in %v",
				opts.Mode, s.Addr(), s.configDir, time.Since(began).Round(time.Millisecond))
			return s
		}
		if !portTaken(err, s.Log()[min(logged, len(s.Log())):]) {
			break
		}
		t.Logf("postfixtest: port %d was taken, trying another: %v", s.port, err)
	}
	t.Fatalf("postfixtest: start: %v", err)
	return nil
}

// Addr returns the smtpd's address, "127.0.0.1:PORT". It stays the same across Stop
// and Start.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port returns the smtpd's TCP port on 127.0.0.1.
func (s *Server) Port() int { return s.port }

// ConfigDir returns the instance's config_directory, for `postconf -c`, `postqueue -c`
// and friends.
func (s *Server) ConfigDir() string { return s.configDir }

// LogPath returns the path of the instance's log file (maillog_file).
func (s *Server) LogPath() string { return s.maillog }

// Log returns the content of the instance's log file so far; "" if there is none yet.
func (s *Server) Log() string {
	b, err := os.ReadFile(s.maillog)
	if err != nil {
		return ""
	}
	return string(b)
}

// Problems returns the log lines that report a warning, an error, a fatal error or a
// panic, except the warnings about the machine rather than the mail: cleanup(8)
// compares the queue file system's clock with the local one and warns when they differ
// by a second or more, which happens on overlay and network file systems. A
// misconfigured template shows up here long before mail goes missing.
func (s *Server) Problems() []string {
	var out []string
	for _, line := range strings.Split(s.Log(), "\n") {
		if strings.Contains(line, " warning: file system clock is ") ||
			strings.Contains(line, " warning: resetting file time stamps") {
			continue
		}
		for _, bad := range []string{" warning: ", " error: ", " fatal: ", " panic: "} {
			if strings.Contains(line, bad) {
				out = append(out, line)
				break
			}
		}
	}
	return out
}

// DropFolder returns the drop Maildir of a ModeDrop or ModeDropPipe instance: every
// delivery appears in its new/ subfolder, complete (written in tmp/ and renamed). The
// files belong to DeliveryUID with mode 0600. It returns "" in ModeSink.
func (s *Server) DropFolder() string { return s.dropDir }

// Maildir returns the Maildir a ModeSink instance delivers addr's mail to; messages
// appear in its new/ subfolder. addr is an address in its plain (unquoted) form; case
// does not matter. The folder exists only once something was delivered to it. It
// returns "" in the other modes, or when addr has no "@". Folder names are addr's parts
// lowercased, with every byte other than a-z 0-9 . _ + = - (or a leading dot) as "_".
func (s *Server) Maildir(addr string) string {
	if s.sinkDir == "" {
		return ""
	}
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return filepath.Join(s.sinkDir, sinkName(addr[i+1:]), sinkName(addr[:i]))
}

// sinkName is the folder name templates/sink-deliver makes of a domain or local part:
// lowercase, every byte other than a-z 0-9 . _ + = - replaced by "_", a leading dot
// too, "_" for an empty one. Distinct addresses may share a folder; tests use plain
// ones.
func sinkName(s string) string {
	b := []byte(strings.ToLower(s))
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("._+=-", c) >= 0
		if !ok || i == 0 && c == '.' {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "_"
	}
	return string(b)
}

// Stop stops the instance and returns once none of its processes is left, so its port
// refuses connections; mail already accepted stays in its queue for the next Start.
// Stopping a stopped instance does nothing. Failure is t.Fatal.
func (s *Server) Stop() {
	s.t.Helper()
	if err := s.stop(); err != nil {
		s.t.Fatalf("postfixtest: stop: %v", err)
	}
}

// Start starts a stopped instance again, on the same port and with the same queue, and
// returns once its smtpd answers. It is a test bug to call it on a running instance.
// Failure (e.g. the port was taken meanwhile) is t.Fatal, with the log.
func (s *Server) Start() {
	s.t.Helper()
	s.mu.Lock()
	running := s.running
	s.mu.Unlock()
	if running {
		s.t.Fatalf("postfixtest: Start: instance on %s is already running", s.Addr())
	}
	if err := s.start(); err != nil {
		s.t.Fatalf("postfixtest: start again on %s: %v", s.Addr(), err)
	}
}

// Flush asks the running instance to try every deferred message now (postqueue -f)
// rather than at its next queue run. It returns when the request is made, not when the
// mail is delivered. Failure is t.Fatal.
func (s *Server) Flush() {
	s.t.Helper()
	if out, err := s.run(s.bin.postqueue, "-c", s.configDir, "-f"); err != nil {
		s.t.Fatalf("postfixtest: postqueue -f: %v: %s", err, out)
	}
}

// QueueLen returns the number of messages in the instance's queue (incoming, active,
// deferred, hold and maildrop): 0 once everything accepted was delivered or bounced.
// It reads the queue folders directly, so it works whether the instance runs or not.
func (s *Server) QueueLen() int {
	n := 0
	for _, q := range []string{"maildrop", "incoming", "active", "deferred", "hold"} {
		_ = filepath.WalkDir(filepath.Join(s.queueDir, q), func(_ string, d os.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				n++
			}
			return nil
		})
	}
	return n
}

// WaitQueueEmpty waits until QueueLen is 0, at most timeout. On timeout it is t.Fatal
// with the log.
func (s *Server) WaitQueueEmpty(timeout time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for s.QueueLen() > 0 {
		if time.Now().After(deadline) {
			s.t.Fatalf("postfixtest: %d message(s) still queued after %v", s.QueueLen(), timeout)
		}
		time.Sleep(pollInterval)
	}
}

// WaitMessages waits until the Maildir dir holds at least n messages in new/, at most
// timeout, and returns the paths of all of them, sorted. On timeout it is t.Fatal with
// the instance's log. dir is typically DropFolder() or Maildir(addr).
func (s *Server) WaitMessages(dir string, n int, timeout time.Duration) []string {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		files := maildirNew(dir)
		if len(files) >= n {
			return files
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("postfixtest: %s/new holds %d message(s) after %v, want %d", dir, len(files), timeout, n)
		}
		time.Sleep(pollInterval)
	}
}

// maildirNew returns the regular files in dir/new, sorted; none if it does not exist.
func maildirNew(dir string) []string {
	ents, err := os.ReadDir(filepath.Join(dir, "new"))
	if err != nil {
		return nil
	}
	var files []string
	for _, e := range ents {
		if e.Type().IsRegular() {
			files = append(files, filepath.Join(dir, "new", e.Name()))
		}
	}
	sort.Strings(files)
	return files
}

// start runs `postfix start` and waits for the greeting.
func (s *Server) start() error {
	if s.quick {
		// What `postfix quick-stop` leaves: the start skips postfix-script's integrity
		// checks (post-install create-missing, postsuper, dozens of finds over the
		// installation), which take seconds on a busy machine. The queue layout they
		// would create exists (makeQueue, or the first start); TestPostfixCheck runs
		// the full checks against it.
		if err := os.WriteFile(filepath.Join(s.queueDir, "quick-start"), nil, 0o644); err != nil {
			return err
		}
	}
	began := time.Now()
	out, err := s.run(s.bin.postfix, "-c", s.configDir, "start")
	if err != nil {
		// A master that came up half-way must not outlive the failed attempt.
		_ = s.killInstance()
		return fmt.Errorf("postfix start: %w: %s", err, strings.TrimSpace(out))
	}
	s.mu.Lock()
	s.running, s.quick = true, true
	s.mu.Unlock()
	started := time.Now()
	err = s.waitGreeting()
	if d := time.Since(began); d > time.Second {
		s.t.Logf("postfixtest: slow start on %s: postfix start %v, first greeting %v",
			s.Addr(), started.Sub(began).Round(time.Millisecond), time.Since(started).Round(time.Millisecond))
	}
	return err
}

// waitGreeting polls Addr() until the smtpd there greets with 220, then says QUIT.
func (s *Server) waitGreeting() error {
	deadline := time.Now().Add(startTimeout)
	var last error
	for time.Now().Before(deadline) {
		if last = greet(s.Addr()); last == nil {
			return nil
		}
		time.Sleep(pollInterval)
	}
	return fmt.Errorf("no SMTP greeting on %s within %v: %w", s.Addr(), startTimeout, last)
}

func greet(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read greeting: %w", err)
	}
	if !strings.HasPrefix(line, "220") {
		return fmt.Errorf("greeting %q", strings.TrimSpace(line))
	}
	_, _ = c.Write([]byte("QUIT\r\n"))
	return nil
}

// portTaken reports whether a failed start failed because master could not bind the
// port: master -w reports "bind 127.0.0.1 port N: Address already in use".
func portTaken(err error, log string) bool {
	return strings.Contains(err.Error(), "Address already in use") || strings.Contains(log, "Address already in use")
}

// freePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// dumpLog prints the instance's log (its last 256 KiB) through t.Logf.
func (s *Server) dumpLog() {
	log := s.Log()
	const max = 256 << 10
	if len(log) > max {
		log = "[... cut ...]\n" + log[len(log)-max:]
	}
	if log == "" {
		log = "(empty)"
	}
	s.t.Logf("postfixtest: log of the instance on %s (%s):\n%s", s.Addr(), s.maillog, log)
}
