// Command mxdrop-bench measures mxdrop against the limit of the disk it runs on.
//
// Mode "once" (the default) generates N messages of one size, measures the raw limits
// of the file system for a single writer (write + fsync + rename + directory fsync of N
// files of that size, one after another; and hard link into tmp/ + rename + directory
// fsync of N existing files), then runs the real `mxdrop run --once` over N
// Postfix-style messages (delivered by hard link) and over N that need a copy, each
// into one Maildir, and prints the rates, the ratios linked/link limit and
// copies/write limit, and mxdrop's peak memory (the child's maximum resident set size).
//
// Mode "latency" runs the daemon, renames messages into its drop folder at a steady
// rate and reports the median and 99th percentile from arrival to visible in new/,
// then the throughput of a backlog, and memory as the backlog grows. Its latency runs
// take turns with a reference deliverer (reference.go: the least work a linking
// deliverer must do per message), whose figures and CPU per message are the floor of
// this machine at this moment; the p99 ratio mxdrop/reference is the figure to compare.
//
// Mode "pollers" starts a Dovecot on 127.0.0.1 and measures, each on the same N messages
// filled into its INBOX and each into a fresh local Maildir: Dovecot's own expunge, mxdrop's
// POP3 and IMAP pollers in delete and keep mode (`mxdrop run --once`), fetchmail, getmail6,
// mpop and mbsync; it checks every outcome and prints the median rates, their ratios, the
// targets and the flags each tool ran with (see pollers.go and peers.go). It needs root;
// a missing peer tool is reported and the rest is measured.
//
// Mode "lmtp" starts a Dovecot with LMTP and delivers the same N messages into one
// mailbox three ways: mxdrop's drop folder over LMTP (`mxdrop run --once`, delivery:
// lmtp), Postfix's `smtp-source -L` with the same number of sessions (1 and
// -concurrency), and dovecot-lda started per file; it prints the rates (medians of -runs
// runs, mxdrop and smtp-source taking turns to go first) and ratios.
//
// Ratios, not absolute times, are the figures to compare: machines are shared and noisy.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

func main() {
	mode := flag.String("mode", "once", "once | latency | pollers | lmtp (and reference: latency mode's reference deliverer, which it starts itself)")
	conc := flag.Int("concurrency", 16, "lmtp mode: sessions of mxdrop and smtp-source (each also measured with 1), dovecot-lda processes")
	n := flag.Int("n", 2000, "number of messages")
	size := flag.Int("size", 4096, "message size in bytes")
	dir := flag.String("dir", "", "work folder (default: a new folder under ./var/bench, on the disk being measured)")
	bin := flag.String("mxdrop", "", "mxdrop binary (default: built from ./cmd/mxdrop)")
	workers := flag.Int("workers", 0, "mxdrop workers (0: the configuration default)")
	rate := flag.Int("rate", 500, "latency mode: messages per second")
	backlog := flag.Int("backlog", 10000, "latency mode: backlog size (0: measure latency only)")
	runs := flag.Int("runs", 3, "pollers, latency and lmtp modes: runs of each measurement, alternating (the median is reported)")
	tools := flag.String("tools", "", "pollers mode: measure only these tools, comma-separated (dovecot,mxdrop,fetchmail,getmail6,mpop,mbsync; default all); lmtp mode: mxdrop,smtp-source,lda")
	wrap := flag.String("wrap-mxdrop", "", "pollers and lmtp modes: run mxdrop under this command, e.g. 'perf record -g -o mxdrop.perf' (the peak RSS shown is then the wrapper's)")
	firstCycle := flag.Bool("first-cycle", false, "pollers mode: measure mxdrop's first cycle with a new state instead of a poller that has run before")
	share := flag.Bool("share", false, "latency mode: the drop folder is a bindfs (FUSE) mount written on its backing side, as by another host; reports rename-to-new/ latency and idle CPU")
	idle := flag.Duration("idle", 20*time.Second, "latency -share: how long the idle daemon's CPU is measured")
	compare := flag.String("compare", "", "latency mode: a second mxdrop binary (another build), measured in every run beside -mxdrop and the reference, in turns; prints its p99 over mxdrop's per run")
	writerFsync := flag.Bool("writer-fsync", false, "latency mode: fsync each file before renaming it into the drop folder, from 16 writers, as Postfix virtual(8) does")
	dropMaildir := flag.Bool("drop-maildir", false, "latency mode: the drop folder is a Maildir: each file is written in its tmp/ and renamed into its new/, which mxdrop watches, as Postfix virtual(8) delivers into the drop folder the README sets up")
	stages := flag.Bool("stages", false, "latency mode: mxdrop builds made with -tags mxdrop_stages note when each file reached each stage; print where the slowest 1% spent their time beside the fastest half")
	flag.Parse()

	if *mode == "reference" {
		if *dir == "" {
			fatal(fmt.Errorf("-mode reference needs -dir"))
		}
		fatal(referenceDeliver(*dir))
	}
	// Work folders in var/bench are spread over the disk (spreadFolders), a work folder
	// given elsewhere is the caller's.
	if *dir == "" || filepath.Dir(absPath(*dir)) == absPath("var/bench") {
		if err := os.MkdirAll("var/bench", 0o750); err != nil {
			fatal(err)
		}
		spreadFolders("var/bench")
	}
	if *dir == "" {
		d, err := os.MkdirTemp("var/bench", "run-")
		if err != nil {
			fatal(err)
		}
		*dir = d
		// fatal exits without running deferred calls.
		cleanup = func() { os.RemoveAll(d) }
		defer cleanup()
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		fatal(err)
	}
	if *bin == "" {
		*bin = filepath.Join(abs, "mxdrop")
		cmd := exec.Command("go", "build", "-o", *bin, "./cmd/mxdrop")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fatal(fmt.Errorf("build mxdrop: %w", err))
		}
	}
	b := &bench{dir: abs, bin: *bin, n: *n, size: *size, workers: *workers, primeMxdrop: !*firstCycle,
		tools: *tools, wrapMxdrop: strings.Fields(*wrap), writerFsync: *writerFsync, dropMaildir: *dropMaildir, compare: *compare,
		stages: *stages}
	switch *mode {
	case "once":
		err = b.once()
	case "latency":
		if *share && *dropMaildir {
			err = errors.New("-drop-maildir is for a local drop folder, not with -share")
		} else if *share {
			err = b.shareLatency(*rate, *backlog, *runs, *idle)
		} else {
			err = b.latency(*rate, *backlog, *runs)
		}
	case "pollers":
		err = b.pollers(*runs)
	case "lmtp":
		err = b.lmtp(*conc, *runs)
	default:
		err = fmt.Errorf("unknown mode %q", *mode)
	}
	if err != nil {
		fatal(err)
	}
}

// cleanup removes the work folder the benchmark made itself.
var cleanup = func() {}

func fatal(err error) {
	cleanup()
	fmt.Fprintln(os.Stderr, "mxdrop-bench:", err)
	os.Exit(1)
}

// absPath is path made absolute, or path itself where that fails.
func absPath(path string) string {
	if abs, err := filepath.Abs(path); err == nil {
		return abs
	}
	return path
}
