package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// lmtp compares three ways of handing the same N messages to one Dovecot mailbox, each
// into an emptied INBOX and checked by count: mxdrop's drop folder delivered over LMTP
// (`mxdrop run --once`, delivery: lmtp on the unix socket), Postfix's `smtp-source -L`
// sending N messages of the same size over the same socket, each at 1 and at conc
// sessions, and dovecot-lda started once per file with conc in parallel. -tools
// (mxdrop,smtp-source,lda) picks some of them, for a profile under -wrap-mxdrop.
func (b *bench) lmtp(conc int) error {
	want := func(tool string) bool { return b.tools == "" || slices.Contains(strings.Split(b.tools, ","), tool) }
	for _, t := range strings.Split(b.tools, ",") {
		if b.tools != "" && !slices.Contains([]string{"mxdrop", "smtp-source", "lda"}, t) {
			return fmt.Errorf("-tools: unknown tool %q (mxdrop, smtp-source, lda)", t)
		}
	}
	dir, err := dovecotDir()
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	d, err := startDovecot(filepath.Join(dir, "dovecot"))
	if err != nil {
		return err
	}
	defer d.stop()
	smtpSource, _ := findSbin("smtp-source")
	lda := "/usr/lib/dovecot/dovecot-lda"
	fmt.Printf("mxdrop-bench lmtp: %d messages of %d bytes into one Dovecot %s mailbox over %s\n", b.n, b.size, dovecotVersion(), d.lmtpSocket())

	files := filepath.Join(b.dir, "files")
	if err := b.fillDrop(files, b.n); err != nil {
		return err
	}
	// The messages are for the server's user.
	ents, err := os.ReadDir(files)
	if err != nil {
		return err
	}
	for _, e := range ents {
		p := filepath.Join(files, e.Name())
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.WriteFile(p, bytes.ReplaceAll(data, []byte("user@bench.test"), []byte("bench@bench.test")), 0o640); err != nil {
			return err
		}
		old := time.Now().Add(-time.Minute)
		os.Chtimes(p, old, old)
	}
	type row struct {
		name string
		rate float64
		rss  float64
		err  error
	}
	var rows []row
	measure := func(name string, run func() (float64, error)) float64 {
		if err := d.empty(); err != nil {
			rows = append(rows, row{name: name, err: err})
			return 0
		}
		start := time.Now()
		rss, err := run()
		el := time.Since(start)
		if err == nil {
			var got int
			if got, err = d.count(); err == nil && got != b.n {
				err = fmt.Errorf("the mailbox holds %d messages, want %d", got, b.n)
			}
		}
		r := row{name: name, rate: float64(b.n) / el.Seconds(), rss: rss, err: err}
		rows = append(rows, r)
		if err != nil {
			return 0
		}
		return r.rate
	}
	rates := map[string]float64{}
	for _, c := range []int{1, conc} {
		if want("mxdrop") {
			rates[fmt.Sprintf("mxdrop/%d", c)] = measure(fmt.Sprintf("mxdrop run --once, %d sessions", c), func() (float64, error) {
				return b.mxdropLMTP(d, files, c)
			})
		}
		if !want("smtp-source") {
			continue
		}
		if smtpSource == "" {
			rows = append(rows, row{name: "smtp-source -L", err: fmt.Errorf("smtp-source not found (apt-get install postfix)")})
			continue
		}
		rates[fmt.Sprintf("smtp-source/%d", c)] = measure(fmt.Sprintf("smtp-source -L, %d sessions", c), func() (float64, error) {
			cmd := exec.Command(smtpSource, "-L", "-s", strconv.Itoa(c), "-m", strconv.Itoa(b.n), "-l", strconv.Itoa(b.size),
				"-f", "sender@remote.test", "-t", "bench@bench.test", "-M", "bench.test", "unix:"+d.lmtpSocket())
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Run(); err != nil {
				return 0, fmt.Errorf("smtp-source: %w: %s", err, tail(out.String()))
			}
			return 0, nil
		})
	}
	if want("lda") {
		rates["lda"] = measure(fmt.Sprintf("dovecot-lda per file, %d in parallel", conc), func() (float64, error) {
			return 0, ldaAll(d, lda, files, conc)
		})
	}

	fmt.Printf("%-44s %10s %10s\n", "", "msg/s", "peak RSS")
	for _, r := range rows {
		if r.err != nil {
			fmt.Printf("%-44s failed: %v\n", r.name, r.err)
			continue
		}
		rss := "-"
		if r.rss > 0 {
			rss = fmt.Sprintf("%.1f MiB", r.rss)
		}
		fmt.Printf("%-44s %10.0f %10s\n", r.name, r.rate, rss)
	}
	ratio := func(a, b string) string {
		if rates[a] == 0 || rates[b] == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2fx", rates[a]/rates[b])
	}
	fmt.Printf("mxdrop / smtp-source -L, 1 session:   %s (target >= 0.9x)\n", ratio("mxdrop/1", "smtp-source/1"))
	fmt.Printf("mxdrop / smtp-source -L, %d sessions: %s (target >= 0.9x)\n", conc, ratio(fmt.Sprintf("mxdrop/%d", conc), fmt.Sprintf("smtp-source/%d", conc)))
	fmt.Printf("mxdrop / dovecot-lda, %d in parallel: %s (target >= 2.5x)\n", conc, ratio(fmt.Sprintf("mxdrop/%d", conc), "lda"))
	return nil
}

// mxdropLMTP copies the messages into a fresh drop folder and runs mxdrop run --once
// over it with delivery: lmtp, conc workers and conc LMTP sessions. It returns the
// child's peak RSS in MiB.
func (b *bench) mxdropLMTP(d *dovecot, files string, conc int) (float64, error) {
	drop := filepath.Join(b.dir, fmt.Sprintf("drop-lmtp-%d", conc))
	os.RemoveAll(drop)
	if err := os.MkdirAll(drop, 0o750); err != nil {
		return 0, err
	}
	ents, err := os.ReadDir(files)
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		if err := os.Link(filepath.Join(files, e.Name()), filepath.Join(drop, e.Name())); err != nil {
			return 0, err
		}
	}
	state := filepath.Join(b.dir, fmt.Sprintf("state-lmtp-%d", conc))
	os.RemoveAll(state)
	cfg := fmt.Sprintf(`state_dir: %s
workers: %d
log: {level: warn, format: json}
lmtp:
  address: unix:%s
  connections: %d
connectors:
  - name: bench
    drop_folder: %s
    subdomains: [bench.test]
    settle: %s
    bounce: false
    delivery: lmtp
`, state, conc, d.lmtpSocket(), conc, drop, benchSettle)
	path := filepath.Join(b.dir, "mxdrop-lmtp.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o640); err != nil {
		return 0, err
	}
	args := append(append([]string{}, b.wrapMxdrop...), b.bin, "--config", path, "run", "--once")
	cmd := exec.Command(args[0], args[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	var hwm <-chan float64
	if err := runCtx(context.Background(), cmd, func(pid int) { hwm = watchHWM(pid) }); err != nil {
		return 0, fmt.Errorf("mxdrop run --once: %w: %s", err, tail(out.String()))
	}
	rss := <-hwm
	if left, _ := os.ReadDir(drop); len(left) > 1 { // .mxdrop/ stays
		return rss, fmt.Errorf("%d files left in the drop folder: %s", len(left), tail(out.String()))
	}
	return rss, nil
}

// ldaAll delivers every file of files with one dovecot-lda process per file, conc at a
// time.
func ldaAll(d *dovecot, lda, files string, conc int) error {
	ents, err := os.ReadDir(files)
	if err != nil {
		return err
	}
	jobs := make(chan string)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range jobs {
				in, err := os.Open(f)
				if err == nil {
					cmd := exec.Command(lda, "-c", d.conf, "-d", "bench@bench.test", "-f", "sender@remote.test")
					cmd.Stdin = in
					var out bytes.Buffer
					cmd.Stdout, cmd.Stderr = &out, &out
					if err = cmd.Run(); err != nil {
						err = fmt.Errorf("dovecot-lda: %w: %s", err, strings.TrimSpace(out.String()))
					}
					in.Close()
				}
				if err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for _, e := range ents {
		jobs <- filepath.Join(files, e.Name())
	}
	close(jobs)
	wg.Wait()
	return first
}
