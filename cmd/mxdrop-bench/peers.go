package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// contender is one tool fetching in one protocol and mode.
type contender struct {
	tool  string
	proto string // pop3 | imap | "-" (the server itself)
	mode  string // delete | keep
	// needs are the binaries it runs, with the Debian package that has them.
	needs map[string]string
	// flags says how it was run, durability first, for the report.
	flags string
	// serverOnly: no local Maildir to check (Dovecot's own expunge).
	serverOnly bool
	// asNobody: it runs as uid 65534, which must own its folder and Maildir.
	asNobody bool
	// prime: the command runs once on the empty INBOX before the fill, so that the
	// measured run is not the tool's first.
	prime bool
	// command returns the command that fetches the INBOX of d into the Maildir at
	// maildir, with its configuration and state in the empty folder dir.
	command func(d *dovecot, dir, maildir string) (*exec.Cmd, error)
}

// contenders are the measurements of the pollers mode, in the order of the table, as
// far as -tools selects them.
func (b *bench) contenders() ([]contender, error) {
	var cs []contender
	cs = append(cs, contender{
		tool: "dovecot", proto: "-", mode: "delete", serverOnly: true,
		flags: "doveadm expunge -u bench mailbox INBOX all, mail_fsync = optimized (the default): an unlink per message, one index fdatasync",
		command: func(d *dovecot, dir, maildir string) (*exec.Cmd, error) {
			return exec.Command(d.doveadmBin, "-c", d.conf, "expunge", "-u", benchUser, "mailbox", "INBOX", "all"), nil
		},
	})
	for _, mode := range []string{"delete", "keep"} {
		for _, proto := range []string{"pop3", "imap"} {
			cs = append(cs, contender{
				tool: "mxdrop", proto: proto, mode: mode, prime: b.primeMxdrop,
				flags: "run --once, keep " + map[string]string{"delete": "delete", "keep": "forever"}[mode] +
					", max_per_cycle 0, " + primed(b.primeMxdrop) + ": per message file fsync and rename; per batch of 50 each Maildir folder fsynced once and the bbolt state twice; POP3 commands pipelined, IMAP expunge once at the end",
				command: b.mxdropCommand(proto, mode),
			})
		}
	}
	for _, mode := range []string{"delete", "keep"} {
		for _, proto := range []string{"pop3", "imap"} {
			cs = append(cs, contender{
				tool: "fetchmail", proto: proto, mode: mode, needs: map[string]string{"fetchmail": "fetchmail"},
				flags: strings.TrimSpace("fetchmail sslproto '' "+fetchmailServerOptions(proto, mode)) + ", " + fetchmailOptions(proto, mode) +
					`, mda "MXDROP_BENCH_MDA=<maildir> mxdrop-bench": a Maildir writer (file fsync, rename, directory fsync), one process per message`,
				command: fetchmailCommand(proto, mode),
			})
		}
	}
	for _, mode := range []string{"delete", "keep"} {
		for _, proto := range []string{"pop3", "imap"} {
			cs = append(cs, contender{
				tool: "getmail6", proto: proto, mode: mode, needs: map[string]string{"getmail": "getmail6"}, asNobody: true,
				flags: "getmail as uid 65534 (it refuses to deliver as root) in group 0, Maildir destination: a child process per message, " +
					"file fsync, link into new/, no directory fsync (getmail has none); " + getmailOptions(mode) +
					"; timeout = 10 (default 180) only shortens the hang when getmail's wait for its delivery child misses the child's exit",
				command: getmailCommand(proto, mode),
			})
		}
	}
	for _, mode := range []string{"delete", "keep"} {
		cs = append(cs, contender{
			tool: "mpop", proto: "pop3", mode: mode, needs: map[string]string{"mpop": "mpop"},
			flags: "mpop delivery maildir, keep " + map[string]string{"delete": "off", "keep": "on"}[mode] +
				": file fsync, link into new/, no directory fsync (mpop has none)",
			command: mpopCommand(mode),
		})
	}
	cs = append(cs, contender{
		tool: "mbsync", proto: "imap", mode: "keep", needs: map[string]string{"mbsync": "isync"},
		flags: "mbsync Sync Pull, Expunge None, Create Near, FSync yes (the default): file fsync and a state journal " +
			"fdatasync per message, rename into new/, no directory fsync (mbsync has none)",
		command: mbsyncCommand,
	})
	if b.tools == "" {
		return cs, nil
	}
	want := strings.Split(b.tools, ",")
	for _, w := range want {
		if !slices.ContainsFunc(cs, func(c contender) bool { return c.tool == w }) {
			return nil, fmt.Errorf("-tools: unknown tool %q (dovecot, mxdrop, fetchmail, getmail6, mpop, mbsync)", w)
		}
	}
	return slices.DeleteFunc(cs, func(c contender) bool { return !slices.Contains(want, c.tool) }), nil
}

// missing returns the binaries of c that are not installed, with their packages.
func (c contender) missing() []string {
	var out []string
	for bin, pkg := range c.needs {
		if _, err := exec.LookPath(bin); err != nil {
			out = append(out, fmt.Sprintf("%s (apt-get install -y %s)", bin, pkg))
		}
	}
	return out
}

func primed(p bool) string {
	if p {
		return "state primed by a cycle on the empty INBOX (a poller that has run before)"
	}
	return "first cycle of a new state (every message checked against the Maildir as possibly recovered)"
}

func (b *bench) mxdropCommand(proto, mode string) func(d *dovecot, dir, maildir string) (*exec.Cmd, error) {
	return func(d *dovecot, dir, maildir string) (*exec.Cmd, error) {
		port, keep, idle := d.pop3, "delete", ""
		if proto == "imap" {
			port, idle = d.imap, "\n    idle: false"
		}
		if mode == "keep" {
			keep = "forever"
		}
		cfg := fmt.Sprintf(`state_dir: %s
log:
  level: warn
  format: json
accounts:
  - address: user@bench.test
    maildir: %s
pollers:
  - name: bench
    protocol: %s
    host: 127.0.0.1
    port: %d
    tls: none
    username: %s
    auth: {method: password, password: %s}
    keep: %s
    mode: single
    deliver_to: user@bench.test
    max_per_cycle: 0
    interval: 1h%s
`, filepath.Join(dir, "state"), maildir, proto, port, benchUser, benchPass, keep, idle)
		path := filepath.Join(dir, "mxdrop.yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			return nil, err
		}
		args := append(append([]string{}, b.wrapMxdrop...), b.bin, "--config", path, "run", "--once")
		return exec.Command(args[0], args[1:]...), nil
	}
}

// mdaEnv names the Maildir the benchmark, started as fetchmail's MDA, delivers its
// standard input to.
const mdaEnv = "MXDROP_BENCH_MDA"

func init() {
	// Started as fetchmail's MDA: deliver and exit before main parses any flag.
	if md := os.Getenv(mdaEnv); md != "" {
		if err := mdaDeliver(md, os.Stdin); err != nil {
			fmt.Fprintln(os.Stderr, "mxdrop-bench mda:", err)
			os.Exit(75) // EX_TEMPFAIL: fetchmail keeps the message on the server
		}
		os.Exit(0)
	}
}

// mdaDeliver writes r into the Maildir md as a careful Maildir writer must: a new file
// in tmp/, write, fsync, close, rename into new/, fsync new/.
func mdaDeliver(md string, r io.Reader) error {
	now := time.Now()
	name := fmt.Sprintf("%d.M%dP%d.mda", now.Unix(), now.Nanosecond()/1000, os.Getpid())
	tmp := filepath.Join(md, "tmp", name)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(md, "new", name))
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Join(md, "new"))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// fetchmailOptions are the user options that make the mode: fetchmail's defaults
// otherwise (IMAP: fetch the unseen messages, EXPUNGE after each deletion).
func fetchmailOptions(proto, mode string) string {
	if mode == "delete" {
		return "no keep"
	}
	return "keep"
}

// fetchmailServerOptions: in POP3 keep mode, remember what was fetched (UIDL), as the
// other keep-mode tools do.
func fetchmailServerOptions(proto, mode string) string {
	if proto == "pop3" && mode == "keep" {
		return "uidl"
	}
	return ""
}

func fetchmailCommand(proto, mode string) func(d *dovecot, dir, maildir string) (*exec.Cmd, error) {
	return func(d *dovecot, dir, maildir string) (*exec.Cmd, error) {
		self, err := os.Executable()
		if err != nil {
			return nil, err
		}
		port := d.pop3
		if proto == "imap" {
			port = d.imap
		}
		rc := fmt.Sprintf(`set no bouncemail
set no syslog
poll 127.0.0.1 service %d protocol %s auth password timeout 60 %s
  user "%s" there with password "%s" is "root" here
  mda "%s=%s %s"
  sslproto '' %s
`, port, proto, fetchmailServerOptions(proto, mode), benchUser, benchPass, mdaEnv, maildir, self, fetchmailOptions(proto, mode))
		path := filepath.Join(dir, "fetchmailrc")
		if err := os.WriteFile(path, []byte(rc), 0o600); err != nil {
			return nil, err
		}
		cmd := exec.Command("fetchmail", "-f", path, "--idfile", filepath.Join(dir, "fetchids"), "--pidfile", filepath.Join(dir, "fetchmail.pid"))
		cmd.Env = append(os.Environ(), "FETCHMAILHOME="+dir)
		return cmd, nil
	}
}

// getmailOptions: delete mode reads everything and deletes it; keep mode remembers what
// it fetched (oldmail file), as the other keep-mode tools do.
func getmailOptions(mode string) string {
	if mode == "delete" {
		return "read_all = true, delete = true"
	}
	return "read_all = false, delete = false"
}

func getmailCommand(proto, mode string) func(d *dovecot, dir, maildir string) (*exec.Cmd, error) {
	return func(d *dovecot, dir, maildir string) (*exec.Cmd, error) {
		typ, port := "SimplePOP3Retriever", d.pop3
		if proto == "imap" {
			typ, port = "SimpleIMAPRetriever", d.imap
		}
		rc := fmt.Sprintf(`[retriever]
type = %s
server = 127.0.0.1
port = %d
username = %s
password = %s
timeout = 10

[destination]
type = Maildir
path = %s/

[options]
verbose = 0
read_all = %t
delete = %t
`, typ, port, benchUser, benchPass, maildir, mode == "delete", mode == "delete")
		path := filepath.Join(dir, "getmailrc")
		if err := os.WriteFile(path, []byte(rc), 0o600); err != nil {
			return nil, err
		}
		// getmail refuses to deliver as root. As 65534 in group root it passes through the
		// work folder's root-owned parents (0750 by default) to the folder it owns.
		cmd := exec.Command("getmail", "--rcfile", path, "--getmaildir", dir)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: mailUID, Gid: mailGID, Groups: []uint32{0}}}
		return cmd, nil
	}
}

func mpopCommand(mode string) func(d *dovecot, dir, maildir string) (*exec.Cmd, error) {
	return func(d *dovecot, dir, maildir string) (*exec.Cmd, error) {
		keep := map[string]string{"delete": "off", "keep": "on"}[mode]
		rc := fmt.Sprintf(`account bench
host 127.0.0.1
port %d
tls off
auth user
user %s
password %s
delivery maildir %s
keep %s
uidls_file %s
`, d.pop3, benchUser, benchPass, maildir, keep, filepath.Join(dir, "uidls"))
		path := filepath.Join(dir, "mpoprc")
		if err := os.WriteFile(path, []byte(rc), 0o600); err != nil {
			return nil, err
		}
		return exec.Command("mpop", "-C", path, "-q", "bench"), nil
	}
}

func mbsyncCommand(d *dovecot, dir, maildir string) (*exec.Cmd, error) {
	rc := fmt.Sprintf(`IMAPAccount bench
Host 127.0.0.1
Port %d
User %s
Pass %s
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account bench

MaildirStore local
Path %s/
Inbox %s

Channel bench
Far :remote:
Near :local:
Patterns INBOX
Sync Pull
Create Near
Expunge None
SyncState %s/
`, d.imap, benchUser, benchPass, dir, maildir, dir)
	path := filepath.Join(dir, "mbsyncrc")
	if err := os.WriteFile(path, []byte(rc), 0o600); err != nil {
		return nil, err
	}
	return exec.Command("mbsync", "-c", path, "-q", "bench"), nil
}
