package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

type bench struct {
	dir     string
	bin     string
	n       int
	size    int
	workers int

	// pollers mode
	primeMxdrop bool     // measure mxdrop after a first cycle, not as its first
	tools       string   // comma-separated tools to measure; "" = all
	wrapMxdrop  []string // a command (and arguments) to run mxdrop under

	// latency mode
	writerFsync bool   // the generator fsyncs each file before its rename (Postfix virtual)
	dropMaildir bool   // latency mode: the drop folder is a Maildir, written through its tmp/
	compare     string // a second mxdrop binary measured in the same runs, or ""
	stages      bool   // latency mode: print the stage times of mxdrop builds that note them
}

// message returns message i, padded to about size bytes.
func (b *bench) message(i int) []byte {
	var buf bytes.Buffer
	buf.Grow(b.size + 512) // one allocation, not a growing buffer's several
	fmt.Fprintf(&buf, "Return-Path: <sender@remote.test>\nX-Original-To: user@bench.test\nDelivered-To: user@bench.test\n"+
		"From: Sender <sender@remote.test>\nTo: user@bench.test\nSubject: bench %d\nMessage-ID: <bench-%d@remote.test>\n"+
		"Date: Sun, 22 Nov 2026 12:00:00 +0000\n\n", i, i)
	line := strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", 1) + "\n"
	for buf.Len() < b.size {
		buf.WriteString(line)
	}
	return buf.Bytes()
}

// rawLimit writes n files of the message size the way a careful single writer must:
// create in tmp/, write, fsync, close, rename into new/, fsync new/. It returns the
// rate in files per second.
func (b *bench) rawLimit() (float64, error) {
	md := filepath.Join(b.dir, "raw")
	data := b.message(0)
	return b.limit(md, nil, func(i int, tmp string) error {
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		if _, err := f.Write(data); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
		return f.Close()
	})
}

// limit times n deliveries into the Maildir md, one after another: put makes file i
// as tmp (in md/tmp/), which is renamed into md/new/, and new/ is fsynced. prepare,
// when not nil, runs before the clock starts. It returns the rate in files per second.
func (b *bench) limit(md string, prepare func() error, put func(i int, tmp string) error) (float64, error) {
	for _, s := range []string{"tmp", "new"} {
		if err := os.MkdirAll(filepath.Join(md, s), 0o700); err != nil {
			return 0, err
		}
	}
	if prepare != nil {
		if err := prepare(); err != nil {
			return 0, err
		}
	}
	newDir, err := os.Open(filepath.Join(md, "new"))
	if err != nil {
		return 0, err
	}
	defer newDir.Close()
	start := time.Now()
	for i := 0; i < b.n; i++ {
		name := fmt.Sprintf("%d.%d.bench", start.Unix(), i)
		tmp := filepath.Join(md, "tmp", name)
		if err := put(i, tmp); err != nil {
			return 0, err
		}
		if err := os.Rename(tmp, filepath.Join(md, "new", name)); err != nil {
			return 0, err
		}
		if err := newDir.Sync(); err != nil {
			return 0, err
		}
	}
	return float64(b.n) / time.Since(start).Seconds(), nil
}

// config writes an mxdrop configuration with one connector over drop and one account.
func (b *bench) config(drop, maildir string) (string, error) {
	workers := ""
	if b.workers > 0 {
		workers = fmt.Sprintf("workers: %d\n", b.workers)
	}
	cfg := fmt.Sprintf(`state_dir: %s
%slog:
  level: warn
  format: json
accounts:
  - address: user@bench.test
    maildir: %s
connectors:
  - name: bench
    drop_folder: %s
    subdomains: [bench.test]
    settle: %s
    bounce: false
`, filepath.Join(b.dir, "state"), workers, maildir, drop, benchSettle)
	path := filepath.Join(b.dir, "mxdrop.yaml")
	return path, os.WriteFile(path, []byte(cfg), 0o640)
}

// benchSettle is the connectors' settle time. Files written in place younger than that
// are left for later by run --once and settled first by the daemon, so the backlog
// measurements wait it out after filling the drop folder (settled).
const benchSettle = 500 * time.Millisecond

// settled waits until the files just written into the drop folder are older than the
// settle time, so that run --once and the daemon both take all of them at once.
func settled() { time.Sleep(benchSettle + 100*time.Millisecond) }

func (b *bench) fillDrop(drop string, n int) error {
	return b.fillDropWith(drop, n, b.message)
}

// copyMessage is message i without its Delivered-To: the account's copy gets one
// prepended, so it is written, never linked.
func (b *bench) copyMessage(i int) []byte {
	return bytes.Replace(b.message(i), []byte("Delivered-To: user@bench.test\n"), nil, 1)
}

func (b *bench) fillDropWith(drop string, n int, message func(i int) []byte) error {
	if err := os.MkdirAll(drop, 0o750); err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		if err := os.WriteFile(filepath.Join(drop, fmt.Sprintf("msg%06d.eml", i)), message(i), 0o640); err != nil {
			return err
		}
	}
	// Old enough that the settle time does not apply.
	old := time.Now().Add(-time.Minute)
	entries, _ := os.ReadDir(drop)
	for _, e := range entries {
		os.Chtimes(filepath.Join(drop, e.Name()), old, old)
	}
	return syncFS(drop)
}

// linkLimit is rawLimit for deliveries that write no data: n existing files of the
// message size are each hard linked into tmp/, renamed into new/, and new/ is fsynced,
// one after another. It returns the rate in files per second.
func (b *bench) linkLimit() (float64, error) {
	md := filepath.Join(b.dir, "rawlink")
	src := filepath.Join(md, "src")
	return b.limit(md, func() error {
		if err := os.MkdirAll(src, 0o700); err != nil {
			return err
		}
		for i := 0; i < b.n; i++ {
			if err := os.WriteFile(filepath.Join(src, strconv.Itoa(i)), b.message(i), 0o600); err != nil {
				return err
			}
		}
		return syncFS(md)
	}, func(i int, tmp string) error {
		return os.Link(filepath.Join(src, strconv.Itoa(i)), tmp)
	})
}

// inodes returns the inode numbers of the files in dir.
func inodes(dir string) map[uint64]bool {
	out := map[uint64]bool{}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if fi, err := e.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				out[st.Ino] = true
			}
		}
	}
	return out
}

func syncFS(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}

// once compares `mxdrop run --once` with the raw single-writer limits: Postfix-style
// drops (delivered by hard link) with the link limit, drops that need a copy (no
// Delivered-To on top) with the write limit.
func (b *bench) once() error {
	fmt.Printf("mxdrop-bench once: %d messages of %d bytes in %s\n", b.n, b.size, b.dir)
	linkDrop, copyDrop := filepath.Join(b.dir, "drop"), filepath.Join(b.dir, "drop-copy")
	if err := b.fillDrop(linkDrop, b.n); err != nil {
		return err
	}
	if err := b.fillDropWith(copyDrop, b.n, b.copyMessage); err != nil {
		return err
	}
	dropInodes := inodes(linkDrop)
	raw, err := b.rawLimit()
	if err != nil {
		return fmt.Errorf("raw limit: %w", err)
	}
	link, err := b.linkLimit()
	if err != nil {
		return fmt.Errorf("link limit: %w", err)
	}
	linked, err := b.runOnce(linkDrop, filepath.Join(b.dir, "mail"))
	if err != nil {
		return err
	}
	nLinked := 0
	for ino := range inodes(filepath.Join(b.dir, "mail", "new")) {
		if dropInodes[ino] {
			nLinked++
		}
	}
	copied, err := b.runOnce(copyDrop, filepath.Join(b.dir, "mail-copy"))
	if err != nil {
		return err
	}
	fmt.Printf("raw single-writer limit: %8.0f msg/s (write+fsync+rename+dir fsync)\n", raw)
	fmt.Printf("raw link limit:          %8.0f msg/s (hard link into tmp/+rename+dir fsync)\n", link)
	fmt.Printf("mxdrop run --once, Postfix-style (linked %d of %d):\n", nLinked, b.n)
	fmt.Printf("                         %8.0f msg/s (%s)\n", linked.rate, linked.summary)
	fmt.Printf("mxdrop run --once, copies (Delivered-To added):\n")
	fmt.Printf("                         %8.0f msg/s (%s)\n", copied.rate, copied.summary)
	fmt.Printf("ratio linked/link limit: %8.2f\n", linked.rate/link)
	fmt.Printf("ratio copies/raw:        %8.2f\n", copied.rate/raw)
	fmt.Printf("ratio linked/raw:        %8.2f\n", linked.rate/raw)
	fmt.Printf("mxdrop peak RSS:         %8.1f MiB (copies %.1f MiB)\n", float64(linked.rss)/1024, float64(copied.rss)/1024)
	return nil
}

// onceRun is what one `mxdrop run --once` achieved.
type onceRun struct {
	rate    float64 // messages per second
	summary string  // its output
	rss     int64   // peak resident set, KiB
}

// runOnce runs `mxdrop run --once` over drop into maildir and checks that every
// message arrived.
func (b *bench) runOnce(drop, maildir string) (onceRun, error) {
	cfgPath, err := b.config(drop, maildir)
	if err != nil {
		return onceRun{}, err
	}
	syncFS(b.dir)
	cmd := exec.Command(b.bin, "--config", cfgPath, "run", "--once")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return onceRun{}, fmt.Errorf("mxdrop run --once: %w: %s", err, out.String())
	}
	elapsed := time.Since(start)
	entries, _ := os.ReadDir(filepath.Join(maildir, "new"))
	if len(entries) != b.n {
		return onceRun{}, fmt.Errorf("delivered %d of %d messages (%s)", len(entries), b.n, strings.TrimSpace(out.String()))
	}
	return onceRun{
		rate:    float64(b.n) / elapsed.Seconds(),
		summary: strings.TrimSpace(out.String()),
		rss:     cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss, // KiB on Linux
	}, nil
}
