// Command mxdrop-bench measures mxdrop against the limit of the disk it runs on.
//
// Mode "once" (the default) generates N messages of one size, measures the raw limit
// of the file system for a single writer (write + fsync + rename + directory fsync of N
// files of that size, one after another), then runs the real `mxdrop run --once` over
// the same N messages into one Maildir, and prints both rates, their ratio and
// mxdrop's peak memory (the child's maximum resident set size).
//
// Mode "latency" runs the daemon, renames messages into its drop folder at a steady
// rate and reports the median and 99th percentile from arrival to visible in new/,
// then the throughput of a backlog, and memory as the backlog grows.
//
// Ratios, not absolute times, are the figures to compare: machines are shared and noisy.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

func main() {
	mode := flag.String("mode", "once", "once | latency")
	n := flag.Int("n", 2000, "number of messages")
	size := flag.Int("size", 4096, "message size in bytes")
	dir := flag.String("dir", "", "work folder (default: a new folder under ./var/bench, on the disk being measured)")
	bin := flag.String("mxdrop", "", "mxdrop binary (default: built from ./cmd/mxdrop)")
	workers := flag.Int("workers", 0, "mxdrop workers (0: the configuration default)")
	rate := flag.Int("rate", 500, "latency mode: messages per second")
	backlog := flag.Int("backlog", 10000, "latency mode: backlog size")
	flag.Parse()

	if *dir == "" {
		if err := os.MkdirAll("var/bench", 0o750); err != nil {
			fatal(err)
		}
		d, err := os.MkdirTemp("var/bench", "run-")
		if err != nil {
			fatal(err)
		}
		*dir = d
		defer os.RemoveAll(d)
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
	b := &bench{dir: abs, bin: *bin, n: *n, size: *size, workers: *workers}
	switch *mode {
	case "once":
		err = b.once()
	case "latency":
		err = b.latency(*rate, *backlog)
	default:
		err = fmt.Errorf("unknown mode %q", *mode)
	}
	if err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "mxdrop-bench:", err)
	os.Exit(1)
}
