package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The one mail user of the benchmark's Dovecot. Dovecot refuses mail access as root, so
// its mail belongs to nobody (65534), as in internal/dovecottest.
const (
	benchUser = "bench"
	benchPass = "bench-secret"
	mailUID   = 65534
	mailGID   = 65534
)

// dovecotConf is a Dovecot 2.3 serving benchUser over plain POP3 and IMAP on 127.0.0.1.
// No TLS at all (ssl = no), so no peer tool negotiates STARTTLS and every tool talks the
// same plain protocol. The W= and S= sizes in the fill's file names, and a UIDL made of
// UID and UIDVALIDITY, let Dovecot answer LIST, UIDL and RFC822.SIZE without reading the
// messages.
const dovecotConf = `# written by mxdrop-bench; removed with the run
base_dir = {{dir}}/run
state_dir = {{dir}}/state
instance_name = mxdrop-bench-{{name}}
log_path = {{dir}}/dovecot.log
listen = 127.0.0.1
protocols = imap pop3 lmtp
ssl = no
# LMTP recipients are bench@<any domain>; logins stay "bench".
auth_username_format = %Ln
disable_plaintext_auth = no
auth_mechanisms = plain login
passdb {
  driver = passwd-file
  args = scheme=PLAIN {{dir}}/passwd
}
userdb {
  driver = static
  args = uid=65534 gid=65534 home={{dir}}/home/%u
}
first_valid_uid = 65534
first_valid_gid = 65534
mail_location = maildir:~/Maildir
pop3_uidl_format = %08Xu%08Xv
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = {{imap}}
  }
  inet_listener imaps {
    port = 0
  }
}
service lmtp {
  unix_listener lmtp {
    mode = 0666
  }
  inet_listener lmtp {
    address = 127.0.0.1
    port = {{lmtp}}
  }
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = {{pop3}}
  }
  inet_listener pop3s {
    port = 0
  }
}
`

// dovecot is a running `dovecot -F` started by startDovecot.
type dovecot struct {
	dir        string
	conf       string
	doveadmBin string
	pop3, imap int
	lmtp       int // TCP port; the unix socket is lmtpSocket()
	cmd        *exec.Cmd
	exited     chan struct{}
	fills      int // fills so far, to keep the file names of each fill unique
	used       int // Maildirs renamed aside by fresh
}

// findSbin finds a binary in PATH or in the sbin folders a non-root PATH lacks.
func findSbin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin"} {
		if p := filepath.Join(dir, name); isExecutable(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found (apt-get install dovecot-core dovecot-imapd dovecot-pop3d)", name)
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// startDovecot writes a configuration into dir (which must exist and be reachable by
// uid 65534), starts Dovecot and returns once POP3 and IMAP greet. The caller stops it.
func startDovecot(dir string) (*dovecot, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("dovecot's master must start as root to run mail processes as uid 65534")
	}
	bin, err := findSbin("dovecot")
	if err != nil {
		return nil, err
	}
	d := &dovecot{dir: dir, conf: filepath.Join(dir, "dovecot.conf"), exited: make(chan struct{})}
	if d.doveadmBin, err = findSbin("doveadm"); err != nil {
		return nil, err
	}
	// Unix socket paths are limited to 108 bytes.
	if len(dir) > 70 {
		return nil, fmt.Errorf("%s is too long a path for Dovecot's sockets; pass a shorter -dir", dir)
	}
	for _, sub := range []string{"run", "state", "home"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "passwd"), []byte(benchUser+":{PLAIN}"+benchPass+"::::::\n"), 0o644); err != nil {
		return nil, err
	}
	if d.pop3, err = freePort(); err != nil {
		return nil, err
	}
	if d.imap, err = freePort(); err != nil {
		return nil, err
	}
	if d.lmtp, err = freePort(); err != nil {
		return nil, err
	}
	conf := strings.NewReplacer("{{dir}}", dir, "{{name}}", filepath.Base(filepath.Dir(dir)),
		"{{imap}}", strconv.Itoa(d.imap), "{{pop3}}", strconv.Itoa(d.pop3), "{{lmtp}}", strconv.Itoa(d.lmtp)).Replace(dovecotConf)
	if err := os.WriteFile(d.conf, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	out, err := os.Create(filepath.Join(dir, "dovecot.out"))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	d.cmd = exec.Command(bin, "-F", "-c", d.conf)
	d.cmd.Stdout, d.cmd.Stderr = out, out
	// Dovecot goes down with the benchmark if the benchmark dies.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start dovecot: %w", err)
	}
	go func() { d.cmd.Wait(); close(d.exited) }()
	deadline := time.Now().Add(20 * time.Second)
	for !greets(d.pop3, "+OK") || !greets(d.imap, "* OK") || !greets(d.lmtp, "220 ") {
		select {
		case <-d.exited:
			return nil, fmt.Errorf("dovecot exited at start: %s", d.logs())
		default:
		}
		if time.Now().After(deadline) {
			d.stop()
			return nil, fmt.Errorf("dovecot did not greet within 20s: %s", d.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return d, nil
}

// freePort returns a port of 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func greets(port int, greeting string) bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, greeting)
}

func (d *dovecot) logs() string {
	out, _ := os.ReadFile(filepath.Join(d.dir, "dovecot.out"))
	log, _ := os.ReadFile(filepath.Join(d.dir, "dovecot.log"))
	return strings.TrimSpace(string(out) + "\n" + string(log))
}

// stop sends SIGTERM to Dovecot's master (it stops its own children) and waits; after
// 15 seconds it kills that one PID.
func (d *dovecot) stop() {
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(15 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
	}
}

// doveadm runs doveadm as root with the benchmark's configuration; it drops to uid
// 65534 for the user's mail itself.
func (d *dovecot) doveadm(args ...string) ([]byte, error) {
	cmd := exec.Command(d.doveadmBin, append([]string{"-c", d.conf}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("doveadm %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// lmtpSocket is the path of the LMTP unix socket.
func (d *dovecot) lmtpSocket() string { return filepath.Join(d.dir, "run", "lmtp") }

// maildir is the user's Maildir on the server.
func (d *dovecot) maildir() string { return filepath.Join(d.dir, "home", benchUser, "Maildir") }

// count returns how many messages the user's INBOX holds as Dovecot sees it.
func (d *dovecot) count() (int, error) {
	out, err := d.doveadm("-f", "flow", "mailbox", "status", "-u", benchUser, "messages", "INBOX")
	if err != nil {
		return 0, err
	}
	// "INBOX messages=N"
	_, v, ok := strings.Cut(strings.TrimSpace(string(out)), "messages=")
	if !ok {
		return 0, fmt.Errorf("doveadm mailbox status: unexpected output %q", out)
	}
	return strconv.Atoi(v)
}

// fill puts messages 0 to n-1 into the user's INBOX, which empty has emptied: they are
// written straight into new/ as Maildir files owned by 65534, and Dovecot indexes them.
// The file names carry S= (size) and W= (size with CRLF line endings), so Dovecot knows
// both without opening the files. The mailbox itself, its UIDVALIDITY and its indexes
// stay from one fill to the next, as on a real server.
func (d *dovecot) fill(ctx context.Context, n int, message func(int) []byte) error {
	md := d.maildir()
	d.fills++
	for i := 0; i < n; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		data := message(i)
		vsize := len(data) + bytes.Count(data, []byte("\n"))
		p := filepath.Join(md, "new", fmt.Sprintf("%d.M%dP%dQ%d.bench,S=%d,W=%d", time.Now().Unix(), i, os.Getpid(), d.fills, len(data), vsize))
		if err := os.WriteFile(p, data, 0o600); err != nil {
			return err
		}
		if err := os.Chown(p, mailUID, mailGID); err != nil {
			return err
		}
	}
	got, err := d.count()
	if err != nil {
		return err
	}
	if got != n {
		return fmt.Errorf("dovecot sees %d messages after filling %d", got, n)
	}
	return nil
}

// fresh gives the user a new, never used Maildir: the one used so far (messages, index,
// uidlist) is renamed aside and stays until the benchmark's folder is removed, so that
// no run pays for the deletions of the one before it, and every run starts from the
// same state whatever its place in the sequence.
func (d *dovecot) fresh() error {
	d.used++
	if err := os.Rename(d.maildir(), fmt.Sprintf("%s.used-%d", d.maildir(), d.used)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return d.empty()
}

// empty expunges every message of the user's INBOX, making the user's home and Maildir
// first if need be.
func (d *dovecot) empty() error {
	for _, sub := range []string{"..", ".", "tmp", "new", "cur"} {
		p := filepath.Join(d.maildir(), sub)
		if err := os.Mkdir(p, 0o700); errors.Is(err, os.ErrExist) {
			continue
		} else if err != nil {
			return err
		}
		if err := os.Chown(p, mailUID, mailGID); err != nil {
			return err
		}
	}
	_, err := d.doveadm("expunge", "-u", benchUser, "mailbox", "INBOX", "all")
	return err
}
