package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// shareLatency measures a drop folder on a share at the connector defaults (watch:
// auto, poll_interval 1s, settle 500ms): a bindfs (FUSE) mount of a backing folder that
// the benchmark writes into directly, as the MTA on another host writes into an NFS or
// SMB export; no inotify event reaches mxdrop. It reports the latency from the other
// side's rename to the copy in new/, and the CPU the daemon spends on an idle share.
func (b *bench) shareLatency(rate, backlog, runs int, idle time.Duration) error {
	backing := filepath.Join(b.dir, "share")
	mnt := filepath.Join(b.dir, "mnt")
	maildir := filepath.Join(b.dir, "mail")
	for _, d := range []string{backing, mnt, filepath.Join(maildir, "tmp"), filepath.Join(maildir, "new"), filepath.Join(maildir, "cur")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return err
		}
	}
	unmount, err := bindfs(backing, mnt)
	if err != nil {
		return err
	}
	defer unmount()
	fmt.Printf("mxdrop-bench latency -share: %d messages at %d/s renamed into %s (bindfs-mounted at %s), %d bytes each\n", b.n, rate, backing, mnt, b.size)
	cfg, err := b.config(mnt, maildir)
	if err != nil {
		return err
	}
	var p50s, p99s []time.Duration
	for r := 0; r < max(runs, 1); r++ {
		if err := setAside(filepath.Join(maildir, "new")); err != nil {
			return err
		}
		// The daemon watches the mount; the messages are renamed in on the backing side.
		p50, p99, err := b.measureLatency(func() (*daemon, error) { return b.startDaemon(cfg) }, "mxdrop", backing, maildir, rate)
		if err != nil {
			return err
		}
		p50s, p99s = append(p50s, p50), append(p99s, p99)
	}
	fmt.Printf("share latency at %d msg/s, median of %d runs: median %v, p99 %v\n", rate, len(p99s), medianDur(p50s), medianDur(p99s))

	// A backlog found on the share at start-up: work starts at once, memory stays flat.
	for _, n := range []int{backlog / 10, backlog} {
		rate, rss, err := b.backlogDaemon(cfg, backing, maildir, n)
		if err != nil {
			return err
		}
		fmt.Printf("share backlog %6d through the daemon: %.0f msg/s, peak RSS %.1f MiB\n", n, rate, rss)
	}

	d, err := b.startDaemon(cfg)
	if err != nil {
		return err
	}
	time.Sleep(2 * time.Second) // start-up done
	t0, err := cpuTicks(d.cmd.Process.Pid)
	if err != nil {
		d.stop()
		return err
	}
	time.Sleep(idle)
	t1, err := cpuTicks(d.cmd.Process.Pid)
	d.stop()
	if err != nil {
		return err
	}
	// USER_HZ is 100 on every Linux architecture Go supports (proc(5), "clock ticks").
	pct := float64(t1-t0) / 100 / idle.Seconds() * 100
	fmt.Printf("idle share: %d clock ticks of CPU in %s = %.2f%% of one core (utime+stime from /proc/<pid>/stat)\n", t1-t0, idle, pct)
	return nil
}

// cpuTicks returns utime+stime of pid in clock ticks (proc(5) fields 14 and 15).
func cpuTicks(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	u, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return u + st, nil
}

// bindfs mounts backing at mnt in the foreground and returns how to unmount it.
func bindfs(backing, mnt string) (func(), error) {
	cmd := exec.Command("bindfs", "-f", "--no-allow-other", backing, mnt)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bindfs (Debian package bindfs): %w", err)
	}
	unmount := func() {
		if exec.Command("fusermount3", "-u", mnt).Run() != nil {
			exec.Command("fusermount", "-u", mnt).Run()
		}
		cmd.Wait()
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		var st unix.Statfs_t
		if unix.Statfs(mnt, &st) == nil && st.Type == unix.FUSE_SUPER_MAGIC {
			return unmount, nil
		}
	}
	unmount()
	return nil, fmt.Errorf("bindfs did not mount %s", mnt)
}
