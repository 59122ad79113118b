package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// result is one measurement of a contender.
type result struct {
	rate float64 // messages per second
	rss  float64 // peak resident set size of the process, MiB
	err  error
}

// pollerBench compares mxdrop's pollers with peer tools on one local Dovecot.
type pollerBench struct {
	*bench
	d        *dovecot
	cs       []contender
	keepDirs bool // keep each run's folder until the end
}

// pollers runs every contender runs times, round-robin so that the noise of a shared
// machine spreads over all of them, and prints the medians and their ratios.
func (b *bench) pollers(runs int) error {
	cs, err := b.contenders()
	if err != nil {
		return err
	}
	ddir, err := dovecotDir()
	if err != nil {
		return err
	}
	defer os.RemoveAll(ddir)
	d, err := startDovecot(filepath.Join(ddir, "dovecot"))
	if err != nil {
		return err
	}
	defer d.stop()
	// An interrupt, or a closed stdout (| head), ends the measurement under way (its
	// process is killed) and returns, so that Dovecot is stopped and the folders are
	// removed. A second signal exits at once.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE)
	defer stop()
	context.AfterFunc(ctx, stop)

	same := "the same file system as"
	if !sameFS(ddir, b.dir) {
		same = "a different file system from"
	}
	fmt.Printf("mxdrop-bench pollers: %d messages of %d bytes, median of %d runs\n", b.n, b.size, runs)
	fmt.Printf("local Maildirs under %s; Dovecot %s (POP3 %d, IMAP %d) keeps its mail in %s, %s the local Maildirs\n",
		b.dir, dovecotVersion(), d.pop3, d.imap, ddir, same)

	// getmail runs as uid 65534 in group 0 (it refuses to deliver as root) and must
	// reach its folder below the work folder.
	if err := os.MkdirAll(filepath.Join(b.dir, "pollers"), 0o710); err != nil {
		return err
	}
	if fi, err := os.Stat(b.dir); err != nil {
		return err
	} else if err := os.Chmod(b.dir, fi.Mode().Perm()|0o010); err != nil {
		return err
	}
	if !searchableByGroupRoot(filepath.Join(b.dir, "pollers")) {
		fmt.Printf("warning: uid 65534 in group 0 cannot reach %s (a parent lacks o+x and g+x for group 0): getmail6 will fail\n", b.dir)
	}

	// Each measurement's Maildir stays until the end when the disk has room for all of
	// them: files deleted just before a run make the next run's file creations slower on
	// ext4 without a journal (recently_deleted() in the inode allocator), which would
	// penalise each tool by the number of files it creates.
	need := uint64(runs*len(cs)) * uint64(b.n) * uint64(b.size+4096)
	var fsst syscall.Statfs_t
	keep := syscall.Statfs(b.dir, &fsst) == nil && need < fsst.Bavail*uint64(fsst.Bsize)/2
	if !keep {
		fmt.Printf("note: too little disk to keep every run's Maildir (%d MiB) until the end; each is removed after its run\n", need>>20)
	}
	pb := &pollerBench{bench: b, d: d, cs: cs, keepDirs: keep}
	results := make([][]result, len(pb.cs))
	absent := make([][]string, len(pb.cs))
	for i, c := range pb.cs {
		absent[i] = c.missing()
	}
	defer os.RemoveAll(filepath.Join(b.dir, "pollers"))
	for rep := 0; rep < runs; rep++ {
		for i, c := range pb.cs {
			if len(absent[i]) > 0 {
				continue
			}
			r := pb.measure(ctx, c, fmt.Sprintf("%d-%d", rep, i))
			if ctx.Err() != nil {
				return errors.New("interrupted")
			}
			results[i] = append(results[i], r)
			status := fmt.Sprintf("%.0f msg/s", r.rate)
			if r.err != nil {
				status = "FAILED: " + r.err.Error()
			}
			fmt.Fprintf(os.Stderr, "run %d/%d  %-9s %-4s %-6s %s\n", rep+1, runs, c.tool, c.proto, c.mode, status)
		}
	}
	pb.report(results, absent)
	return nil
}

// dovecotDir makes the folder Dovecot lives in. Its mail processes run as uid 65534 and
// must reach their home, so the folder and all its parents must be searchable by
// others (the benchmark's own var/bench is not); like internal/dovecottest it goes into
// TMPDIR, or /tmp when TMPDIR is not searchable or too long for Dovecot's sockets.
func dovecotDir() (string, error) {
	base := os.TempDir()
	if !searchableByOthers(base) || len(base) > 32 {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "mxdrop-bench-")
	if err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	if err := os.Mkdir(filepath.Join(dir, "dovecot"), 0o711); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

func searchableByOthers(dir string) bool {
	for {
		fi, err := os.Stat(dir)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return true
		}
		dir = parent
	}
}

// searchableByGroupRoot reports whether a process in group 0 can search dir and all its
// parents.
func searchableByGroupRoot(dir string) bool {
	for {
		var st syscall.Stat_t
		if err := syscall.Stat(dir, &st); err != nil {
			return false
		}
		if st.Mode&0o001 == 0 && (st.Gid != 0 || st.Mode&0o010 == 0) {
			return false
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return true
		}
		dir = parent
	}
}

func sameFS(a, b string) bool {
	var sa, sb syscall.Stat_t
	return syscall.Stat(a, &sa) == nil && syscall.Stat(b, &sb) == nil && sa.Dev == sb.Dev
}

func dovecotVersion() string {
	bin, err := findSbin("dovecot")
	if err != nil {
		return "?"
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return "?"
	}
	return strings.Fields(string(out) + " ?")[0]
}

// measure fills the server with the benchmark's messages, runs c once into a fresh
// Maildir, and checks the outcome: the Maildir holds each message exactly once, and the
// server holds none (delete) or all (keep).
func (pb *pollerBench) measure(ctx context.Context, c contender, tag string) result {
	if err := pb.d.empty(); err != nil {
		return result{err: fmt.Errorf("empty the server: %w", err)}
	}
	dir := filepath.Join(pb.dir, "pollers", tag)
	if !pb.keepDirs {
		defer os.RemoveAll(dir)
	}
	maildir := filepath.Join(dir, "Maildir")
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := os.MkdirAll(filepath.Join(maildir, sub), 0o700); err != nil {
			return result{err: err}
		}
	}
	if c.prime {
		cmd, err := c.command(pb.d, dir, maildir)
		if err != nil {
			return result{err: err}
		}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := runCtx(ctx, cmd); err != nil {
			return result{err: fmt.Errorf("prime: %w: %s", err, tail(out.String()))}
		}
	}
	if err := pb.d.fill(ctx, pb.n, pb.message); err != nil {
		return result{err: fmt.Errorf("fill the server: %w", err)}
	}
	cmd, err := c.command(pb.d, dir, maildir)
	if err != nil {
		return result{err: err}
	}
	if c.asNobody {
		err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Chown(p, mailUID, mailGID)
		})
		if err != nil {
			return result{err: err}
		}
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// Neither the fill nor the configuration may be written back during the run.
	if err := syncFS(pb.dir); err != nil {
		return result{err: err}
	}
	if err := syncFS(pb.d.dir); err != nil {
		return result{err: err}
	}
	start := time.Now()
	var peak <-chan float64
	err = runCtx(ctx, cmd, func(pid int) { peak = watchHWM(pid) })
	elapsed := time.Since(start)
	if err != nil {
		return result{err: fmt.Errorf("%s: %w: %s", filepath.Base(cmd.Path), err, tail(out.String()))}
	}
	r := result{rate: float64(pb.n) / elapsed.Seconds(), rss: <-peak}
	if !c.serverOnly {
		if err := checkMaildir(maildir, pb.n); err != nil {
			r.err = fmt.Errorf("local Maildir: %w (output: %s)", err, tail(out.String()))
			return r
		}
	}
	want := 0
	if c.mode == "keep" {
		want = pb.n
	}
	if got, err := pb.d.count(); err != nil {
		r.err = err
	} else if got != want {
		r.err = fmt.Errorf("the server holds %d messages afterwards, want %d", got, want)
	}
	return r
}

// runCtx runs cmd, calls each started with its PID once it runs, and kills it if ctx
// ends first.
func runCtx(ctx context.Context, cmd *exec.Cmd, started ...func(pid int)) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	for _, f := range started {
		f(cmd.Process.Pid)
	}
	defer context.AfterFunc(ctx, func() { cmd.Process.Kill() })()
	return cmd.Wait()
}

var hwmRE = regexp.MustCompile(`VmHWM:\s+(\d+) kB`)

// watchHWM reads the peak resident set size (VmHWM) of process pid every 10ms and sends
// the last value, in MiB, once the process is gone. The rusage of the wait is no use
// here: Go starts children with vfork, so their ru_maxrss includes this benchmark's own
// memory.
func watchHWM(pid int) <-chan float64 {
	ch := make(chan float64, 1)
	path := fmt.Sprintf("/proc/%d/status", pid)
	go func() {
		var kb int
		for {
			b, err := os.ReadFile(path)
			m := hwmRE.FindSubmatch(b)
			if err != nil || m == nil {
				// Gone, or a zombie waiting to be reaped.
				ch <- float64(kb) / 1024
				return
			}
			kb, _ = strconv.Atoi(string(m[1]))
			time.Sleep(10 * time.Millisecond)
		}
	}()
	return ch
}

// tail is the end of a tool's output, for an error.
func tail(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 600 {
		s = "..." + s[len(s)-600:]
	}
	return s
}

var benchIDRE = regexp.MustCompile(`(?mi)^Message-ID: <bench-(\d+)@remote\.test>`)

// checkMaildir checks that new/ and cur/ of md hold messages 0 to n-1 of the benchmark,
// each exactly once, and nothing else.
func checkMaildir(md string, n int) error {
	seen := make([]int, n)
	files := 0
	for _, sub := range []string{"new", "cur"} {
		entries, err := os.ReadDir(filepath.Join(md, sub))
		if err != nil {
			return err
		}
		for _, e := range entries {
			files++
			data, err := os.ReadFile(filepath.Join(md, sub, e.Name()))
			if err != nil {
				return err
			}
			m := benchIDRE.FindSubmatch(data)
			if m == nil {
				return fmt.Errorf("%s/%s is not a message of the benchmark", sub, e.Name())
			}
			if i, _ := strconv.Atoi(string(m[1])); i < n {
				seen[i]++
			}
		}
	}
	missing, twice := 0, 0
	for _, c := range seen {
		switch {
		case c == 0:
			missing++
		case c > 1:
			twice++
		}
	}
	if files != n || missing > 0 || twice > 0 {
		return fmt.Errorf("%d files for %d messages: %d missing, %d more than once", files, n, missing, twice)
	}
	return nil
}

// report prints the table of medians and ratios, the targets and how each tool ran.
func (pb *pollerBench) report(results [][]result, absent [][]string) {
	type row struct {
		c      contender
		rate   float64 // median; 0 when failed or missing
		rss    float64
		runs   []string
		failed string
	}
	rows := make([]row, len(pb.cs))
	for i, c := range pb.cs {
		r := row{c: c}
		var rates, rss []float64
		for _, res := range results[i] {
			if res.err != nil {
				if r.failed == "" {
					r.failed = res.err.Error()
				}
				r.runs = append(r.runs, "failed")
				continue
			}
			rates = append(rates, res.rate)
			rss = append(rss, res.rss)
			r.runs = append(r.runs, fmt.Sprintf("%.0f", res.rate))
		}
		if len(absent[i]) > 0 {
			r.failed = "not measured, missing " + strings.Join(absent[i], ", ")
		} else if r.failed != "" {
			r.failed = fmt.Sprintf("%d of %d runs failed (the median is of the others); first: %s", len(results[i])-len(rates), len(results[i]), r.failed)
		}
		if len(rates) > 0 {
			r.rate, r.rss = median(rates), slices.Max(rss)
		}
		rows[i] = r
	}
	find := func(tool, proto, mode string) float64 {
		for _, r := range rows {
			if r.c.tool == tool && r.c.proto == proto && r.c.mode == mode {
				return r.rate
			}
		}
		return 0
	}
	ratio := func(a, b float64) string {
		if a == 0 || b == 0 {
			return ""
		}
		return fmt.Sprintf("%.2f", a/b)
	}
	expunge := find("dovecot", "-", "delete")

	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "tool\tproto\tmode\tmsg/s\t/mpop\t/fetchmail\t/mbsync\t/expunge\tpeak RSS MiB\truns (msg/s)")
	for _, r := range rows {
		rate, rss := "", ""
		if r.rate > 0 {
			rate, rss = fmt.Sprintf("%.0f", r.rate), fmt.Sprintf("%.1f", r.rss)
		}
		exp := ""
		if r.c.mode == "delete" {
			exp = ratio(r.rate, expunge)
		}
		mode := r.c.mode
		if r.c.serverOnly {
			mode = "expunge"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.c.tool, r.c.proto, mode, rate,
			ratio(r.rate, find("mpop", r.c.proto, r.c.mode)), ratio(r.rate, find("fetchmail", r.c.proto, r.c.mode)),
			ratio(r.rate, find("mbsync", r.c.proto, r.c.mode)), exp, rss, strings.Join(r.runs, " "))
	}
	tw.Flush()
	for _, r := range rows {
		if r.failed != "" {
			fmt.Printf("%s %s %s: %s\n", r.c.tool, r.c.proto, r.c.mode, r.failed)
		}
	}

	fmt.Println("\ntargets (ratios of medians):")
	target := func(what string, got, ref, want float64) {
		verdict := "cannot tell: a tool is missing or failed"
		if got > 0 && ref > 0 {
			verdict = fmt.Sprintf("%.2f, target >= %.2f: ", got/ref, want)
			if got/ref >= want {
				verdict += "met"
			} else {
				verdict += "NOT met"
			}
		}
		fmt.Printf("  %-52s %s\n", what, verdict)
	}
	mpopDel, mpopKeep := find("mpop", "pop3", "delete"), find("mpop", "pop3", "keep")
	for _, proto := range []string{"pop3", "imap"} {
		mx := find("mxdrop", proto, "delete")
		target("mxdrop "+proto+" delete / mpop pop3 delete", mx, mpopDel, 1)
		target("mxdrop "+proto+" delete / Dovecot expunge (issue: mpop ~0.93)", mx, expunge, 0.93)
		target("mxdrop "+proto+" delete / fetchmail "+proto+" delete", mx, find("fetchmail", proto, "delete"), 3)
	}
	target("mxdrop pop3 keep / mpop pop3 keep", find("mxdrop", "pop3", "keep"), mpopKeep, 1)
	target("mxdrop imap keep / mbsync imap keep", find("mxdrop", "imap", "keep"), find("mbsync", "imap", "keep"), 1)
	target("mxdrop imap keep / mpop pop3 keep", find("mxdrop", "imap", "keep"), mpopKeep, 1)
	target("(reference) mpop pop3 delete / Dovecot expunge", mpopDel, expunge, 0.93)

	fmt.Println("\nhow each ran:")
	for _, c := range pb.cs {
		fmt.Printf("  %-9s %-4s %-6s %s\n", c.tool, c.proto, c.mode, c.flags)
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
