package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mxdrop/mxdrop/bounce"
	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer"
	"github.com/mxdrop/mxdrop/importer/quarantine"
	"github.com/mxdrop/mxdrop/pollers"
	"github.com/mxdrop/mxdrop/watcher"
)

// cmdStatus prints what a running (or stopped) mxdrop has on disk: per connector the
// backlog, the quarantine and its newest reasons; the outbox; per poller the last
// success and the last error. It only reads files, takes no lock and changes nothing,
// so it never disturbs a running daemon.
func cmdStatus(configPath string, args []string, stdout, stderr io.Writer) error {
	fs := subFlags("status", &configPath, stderr)
	newest := fs.Int("reasons", 5, "how many of the newest quarantine reasons to show per connector or poller")
	cfg, err := parseAndLoad(fs, args, &configPath)
	if err != nil {
		return err
	}
	now := time.Now()
	fmt.Fprintln(stdout, "Connectors")
	for _, c := range cfg.Connectors {
		state := "active"
		if !c.IsActive() {
			state = "inactive"
		}
		n, claimed, oldest := folderBacklog(&watcher.Connector{DropFolder: c.DropFolder})
		age := "-"
		if !oldest.IsZero() {
			age = now.Sub(oldest).Round(time.Second).String()
		}
		fmt.Fprintf(stdout, "  %s (%s) %s\n", c.Name, state, c.DropFolder)
		fmt.Fprintf(stdout, "    backlog         %d files, oldest %s\n", n, age)
		fmt.Fprintf(stdout, "    claimed         %d files (of the backlog: being imported, or waiting for a retry or the next start)\n", claimed)
		ch := watchChoice(&c)
		fmt.Fprintf(stdout, "    watch           %s (%s)\n", ch.Mode, ch.Reason)
		printQuarantine(stdout, quarantine.ForConnector(c.DropFolder), *newest)
	}

	quotaStatus(stdout, cfg.Accounts)

	fmt.Fprintln(stdout, "Outbox")
	queued, oldest, failed := outboxOnDisk(filepath.Join(cfg.StateDir, "outbox"))
	age := "-"
	if !oldest.IsZero() {
		age = now.Sub(oldest).Round(time.Second).String()
	}
	fmt.Fprintf(stdout, "  queued            %d DSNs, oldest %s\n", queued, age)
	fmt.Fprintf(stdout, "  given up          %d DSNs\n", failed)

	if len(cfg.Pollers) > 0 {
		fmt.Fprintln(stdout, "Pollers")
	}
	for _, p := range cfg.Pollers {
		h, err := pollers.ReadHealth(cfg.StateDir, p.Name)
		state := "active"
		if !p.IsActive() {
			state = "inactive"
		}
		fmt.Fprintf(stdout, "  %s (%s) %s://%s\n", p.Name, state, p.Protocol, p.Host)
		printQuarantine(stdout, quarantine.ForPoller(cfg.StateDir, p.Name), *newest)
		if err != nil {
			fmt.Fprintf(stdout, "    no cycle recorded yet\n")
			continue
		}
		fmt.Fprintf(stdout, "    last success    %s\n", when(h.LastSuccess, now))
		if h.LastError != "" {
			fmt.Fprintf(stdout, "    last error      %s: %s\n", when(h.LastErrorAt, now), h.LastError)
		}
		if !h.FailingSince.IsZero() {
			fmt.Fprintf(stdout, "    failing since   %s\n", when(h.FailingSince, now))
		}
	}
	return nil
}

// quotaStatus writes each account with a Maildir++ quota and its use, as maildirsize
// says (or as counted when the file is missing or stale; nothing is written).
func quotaStatus(w io.Writer, accounts []configs.Account) {
	header := false
	for _, a := range accounts {
		q := importer.Quota{Bytes: int64(a.Quota), Messages: a.QuotaMessages}
		if q.IsZero() || a.Maildir == "" {
			continue
		}
		if !header {
			fmt.Fprintln(w, "Quotas")
			header = true
		}
		u, err := importer.Maildir(a.Maildir).QuotaUsage(q)
		if err != nil {
			fmt.Fprintf(w, "  %s  unknown: %v\n", a.Address, err)
			continue
		}
		var parts []string
		if q.Bytes > 0 {
			parts = append(parts, fmt.Sprintf("%d of %d bytes (%d%%)", u.Bytes, q.Bytes, u.Bytes*100/q.Bytes))
		} else {
			parts = append(parts, fmt.Sprintf("%d bytes", u.Bytes))
		}
		if q.Messages > 0 {
			parts = append(parts, fmt.Sprintf("%d of %d messages (%d%%)", u.Messages, q.Messages, u.Messages*100/q.Messages))
		} else {
			parts = append(parts, fmt.Sprintf("%d messages", u.Messages))
		}
		fmt.Fprintf(w, "  %s  %s\n", a.Address, strings.Join(parts, ", "))
	}
}

func when(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return fmt.Sprintf("%s (%s ago)", t.Local().Format(time.DateTime), now.Sub(t).Round(time.Second))
}

// printQuarantine prints how many messages a quarantine folder holds and the reasons
// of up to n of the newest.
func printQuarantine(w io.Writer, q quarantine.Folder, n int) {
	entries, _ := q.List()
	fmt.Fprintf(w, "    ImportFailed    %d messages\n", len(entries))
	shown := 0
	for _, e := range entries {
		r := e.Record
		if shown == n {
			break
		}
		if r == nil || r.Reason == "" {
			continue
		}
		shown++
		var rcpts []string
		for _, f := range r.Recipients {
			rcpts = append(rcpts, f.Recipient+" "+f.Status)
		}
		// The name replay takes; the source's own name beside it where they differ
		// (a name taken in the folder before, a long name shortened, a poller's UID).
		name := e.Name
		if r.File != "" && r.File != e.Name {
			name += " (" + r.File + ")"
		}
		fmt.Fprintf(w, "      %s  %s  %s  %s %s\n", r.Time.Local().Format(time.DateTime), name, r.Reason, r.Sender, strings.Join(rcpts, ", "))
	}
}

// outboxOnDisk reads the outbox's queue and failed folders without opening the outbox
// (which a running daemon holds locked).
func outboxOnDisk(dir string) (queued int, oldest time.Time, failed int) {
	read := func(state string, fn func(bounce.Record)) {
		entries, _ := os.ReadDir(filepath.Join(dir, state))
		for _, e := range entries {
			if !strings.HasSuffix(e.Name(), ".json") {
				continue
			}
			b, err := os.ReadFile(filepath.Join(dir, state, e.Name()))
			if err != nil {
				continue
			}
			var r bounce.Record
			if json.Unmarshal(b, &r) == nil {
				fn(r)
			}
		}
	}
	read(bounce.StateQueued, func(r bounce.Record) {
		queued++
		if oldest.IsZero() || r.Queued.Before(oldest) {
			oldest = r.Queued
		}
	})
	read(bounce.StateFailed, func(bounce.Record) { failed++ })
	return
}
