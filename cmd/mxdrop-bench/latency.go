package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
)

// daemon is a running `mxdrop run`.
type daemon struct {
	cmd *exec.Cmd
}

func (b *bench) startDaemon(cfg string) (*daemon, error) {
	cmd := exec.Command(b.bin, "--config", cfg, "run")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &daemon{cmd: cmd}, nil
}

func (d *daemon) stop() error {
	d.cmd.Process.Signal(syscall.SIGTERM)
	return d.cmd.Wait()
}

// peakRSS returns the daemon's peak resident set size in MiB (VmHWM).
func (d *daemon) peakRSS() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	m := regexp.MustCompile(`VmHWM:\s+(\d+) kB`).FindSubmatch(b)
	if m == nil {
		return 0
	}
	kb, _ := strconv.Atoi(string(m[1]))
	return float64(kb) / 1024
}

var subjectRE = regexp.MustCompile(`(?m)^Subject: bench (\d+)`)

// latency measures arrival-to-visible latency at a steady rate, the throughput of a
// backlog against run --once, and memory as the backlog grows.
func (b *bench) latency(rate, backlog int) error {
	fmt.Printf("mxdrop-bench latency: %d messages at %d/s, backlog %d, %d bytes each, in %s\n", b.n, rate, backlog, b.size, b.dir)
	drop := filepath.Join(b.dir, "drop")
	maildir := filepath.Join(b.dir, "mail")
	os.MkdirAll(drop, 0o750)
	for _, s := range []string{"tmp", "new", "cur"} {
		os.MkdirAll(filepath.Join(maildir, s), 0o700)
	}
	cfg, err := b.config(drop, maildir)
	if err != nil {
		return err
	}
	d, err := b.startDaemon(cfg)
	if err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond)

	// Watch new/ to see each message arrive.
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	if err := w.Add(filepath.Join(maildir, "new")); err != nil {
		return err
	}
	arrived := make([]time.Time, b.n)
	seen := make(chan struct{}, b.n)
	go func() {
		for ev := range w.Events {
			if !ev.Has(fsnotify.Create) {
				continue
			}
			now := time.Now()
			f, err := os.Open(ev.Name)
			if err != nil {
				continue
			}
			head := make([]byte, 1024)
			n, _ := f.Read(head)
			f.Close()
			if m := subjectRE.FindSubmatch(head[:n]); m != nil {
				i, _ := strconv.Atoi(string(m[1]))
				if i < len(arrived) && arrived[i].IsZero() {
					arrived[i] = now
					seen <- struct{}{}
				}
			}
		}
	}()
	sent := make([]time.Time, b.n)
	interval := time.Second / time.Duration(rate)
	next := time.Now()
	for i := 0; i < b.n; i++ {
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		next = next.Add(interval)
		tmp := filepath.Join(drop, fmt.Sprintf(".m%06d", i))
		if err := os.WriteFile(tmp, b.message(i), 0o640); err != nil {
			return err
		}
		sent[i] = time.Now()
		if err := os.Rename(tmp, filepath.Join(drop, fmt.Sprintf("m%06d", i))); err != nil {
			return err
		}
	}
	timeout := time.After(60 * time.Second)
	for got := 0; got < b.n; got++ {
		select {
		case <-seen:
		case <-timeout:
			return fmt.Errorf("only %d of %d messages arrived", got, b.n)
		}
	}
	lat := make([]time.Duration, b.n)
	for i := range lat {
		lat[i] = arrived[i].Sub(sent[i])
		if os.Getenv("MXDROP_BENCH_DEBUG") != "" && lat[i] > 50*time.Millisecond {
			fmt.Printf("slow %d: %v\n", i, lat[i])
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	fmt.Printf("latency at %d msg/s:     median %v, p99 %v, max %v\n", rate, lat[len(lat)/2].Round(10*time.Microsecond),
		lat[len(lat)*99/100].Round(10*time.Microsecond), lat[len(lat)-1].Round(10*time.Microsecond))
	fmt.Printf("daemon peak RSS:        %.1f MiB\n", d.peakRSS())
	if err := d.stop(); err != nil {
		return fmt.Errorf("daemon exit: %w", err)
	}

	// Backlog: the same files through run --once and through the daemon.
	onceRate, _, err := b.backlogOnce(cfg, drop, maildir, backlog)
	if err != nil {
		return err
	}
	daemonRate, rss, err := b.backlogDaemon(cfg, drop, maildir, backlog)
	if err != nil {
		return err
	}
	fmt.Printf("backlog %d, run --once: %8.0f msg/s\n", backlog, onceRate)
	fmt.Printf("backlog %d, daemon:     %8.0f msg/s (ratio daemon/once %.2f), peak RSS %.1f MiB\n", backlog, daemonRate, daemonRate/onceRate, rss)

	// Memory as the backlog grows.
	for _, n := range []int{1000, 10000, 100000} {
		if n > 10*backlog {
			break
		}
		_, rss, err := b.backlogDaemon(cfg, drop, maildir, n)
		if err != nil {
			return err
		}
		fmt.Printf("daemon peak RSS with a backlog of %6d: %.1f MiB\n", n, rss)
	}
	return nil
}

func emptyDir(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		os.Remove(filepath.Join(dir, e.Name()))
	}
}

func (b *bench) backlogOnce(cfg, drop, maildir string, n int) (float64, float64, error) {
	emptyDir(filepath.Join(maildir, "new"))
	if err := b.fillDrop(drop, n); err != nil {
		return 0, 0, err
	}
	cmd := exec.Command(b.bin, "--config", cfg, "run", "--once")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, 0, fmt.Errorf("run --once: %w: %s", err, out.String())
	}
	rss := float64(cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss) / 1024
	return float64(n) / time.Since(start).Seconds(), rss, nil
}

func (b *bench) backlogDaemon(cfg, drop, maildir string, n int) (float64, float64, error) {
	emptyDir(filepath.Join(maildir, "new"))
	if err := b.fillDrop(drop, n); err != nil {
		return 0, 0, err
	}
	// Count arrivals in new/ through inotify: polling the folders would compete with
	// the daemon for the CPU and the directory locks.
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return 0, 0, err
	}
	defer w.Close()
	if err := w.Add(filepath.Join(maildir, "new")); err != nil {
		return 0, 0, err
	}
	start := time.Now()
	d, err := b.startDaemon(cfg)
	if err != nil {
		return 0, 0, err
	}
	got := 0
	timeout := time.After(10 * time.Minute)
	for got < n {
		select {
		case ev := <-w.Events:
			if ev.Has(fsnotify.Create) {
				got++
			}
		case err := <-w.Errors:
			d.stop()
			return 0, 0, fmt.Errorf("watching new/: %w", err)
		case <-timeout:
			d.stop()
			return 0, 0, fmt.Errorf("only %d of %d delivered", got, n)
		}
	}
	elapsed := time.Since(start)
	rss := d.peakRSS()
	if err := d.stop(); err != nil {
		return 0, 0, err
	}
	return float64(n) / elapsed.Seconds(), rss, nil
}
