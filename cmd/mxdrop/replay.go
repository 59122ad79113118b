package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/mxdrop/mxdrop/bounce"
	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer/intake"
	"github.com/mxdrop/mxdrop/importer/quarantine"
	"github.com/mxdrop/mxdrop/pollers"
	"github.com/mxdrop/mxdrop/watcher"
)

// cmdReplay brings quarantined messages back so that a fixed configuration imports
// them. A connector's files move from ImportFailed/ back into its drop folder under their
// name at the source: each keeps its inode and mtime, so it keeps its identity, and the
// bounce outbox recognises a message whose DSN was already queued and does not bounce
// its recipients again. A poller's messages (state_dir/ImportFailed/<poller>), and a
// connector's that changed after a delivery to some of its accounts (their file no
// longer gives the identity recorded), are imported right here through their source's
// importer under the identity recorded when they were quarantined; no server is
// involved, and the daemon must be stopped (the bounce outbox). Either way the reason
// file and the DSN copy go with the message.
func cmdReplay(configPath string, args []string, stdout, stderr io.Writer) error {
	fs := subFlags("replay", &configPath, stderr)
	connector := fs.String("connector", "", "replay only this connector's ImportFailed/")
	poller := fs.String("poller", "", "replay only this poller's quarantine")
	cfg, err := parseAndLoad(fs, args, &configPath)
	if err != nil {
		return err
	}
	var conns []configs.Connector
	var pcs []configs.Poller
	for _, c := range cfg.Connectors {
		if *poller == "" && (*connector == "" || c.Name == *connector) {
			conns = append(conns, c)
		}
	}
	for _, p := range cfg.Pollers {
		if *connector == "" && (*poller == "" || p.Name == *poller) {
			pcs = append(pcs, p)
		}
	}
	switch {
	case *connector != "" && len(conns) == 0:
		return &exitError{code: 2, err: fmt.Errorf("no connector named %q", *connector)}
	case *poller != "" && len(pcs) == 0:
		return &exitError{code: 2, err: fmt.Errorf("no poller named %q", *poller)}
	}
	files := fs.Args()
	moved, failed := 0, 0
	var direct []replayWork
	for _, c := range conns {
		q := quarantine.ForConnector(c.DropFolder)
		entries, err := replayCandidates(q, files)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", c.Name, err)
			failed++
			continue
		}
		target := c.DropFolder
		if fi, err := os.Stat(filepath.Join(c.DropFolder, "new")); err == nil && fi.IsDir() {
			target = filepath.Join(c.DropFolder, "new")
		}
		var here []quarantine.Entry
		for _, e := range entries {
			as, ok := restorable(e)
			if !ok {
				here = append(here, e)
				continue
			}
			if err := q.Restore(e.Name, target, as); err != nil {
				fmt.Fprintf(stderr, "%s: %s: %v\n", c.Name, e.Name, err)
				failed++
				continue
			}
			fmt.Fprintf(stdout, "%s: %s back in %s\n", c.Name, e.Name, filepath.Join(target, as))
			moved++
		}
		if len(here) > 0 {
			direct = append(direct, replayWork{source: c.Name, entries: here})
		}
	}
	for _, pc := range pcs {
		entries, err := replayCandidates(quarantine.ForPoller(cfg.StateDir, pc.Name), files)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", pc.Name, err)
			failed++
			continue
		}
		if len(entries) > 0 {
			direct = append(direct, replayWork{source: pc.Name, poller: &pc, entries: entries})
		}
	}
	if len(direct) > 0 {
		m, f, err := replayHere(cfg, direct, stdout, stderr)
		if err != nil {
			return err
		}
		moved, failed = moved+m, failed+f
	}
	fmt.Fprintf(stdout, "replayed %d, failed %d\n", moved, failed)
	if failed > 0 {
		return &exitError{code: 1, err: errors.New("some files were not replayed")}
	}
	return nil
}

// restorable reports whether a connector's quarantined message can go back into its
// drop folder, and under which name: its name at the source, so that its identity
// (name, size, mtime, inode: a link keeps the last three) is the one recorded when it
// was quarantined, and its delivery names and its DSN's outbox entry are those of its
// first attempt. A message that changed after a delivery to some of its accounts
// (changed_after_delivery) would come back under another identity and give those
// accounts a second copy: it is imported here instead (replayHere).
func restorable(e quarantine.Entry) (as string, ok bool) {
	r := e.Record
	if r == nil || r.ID == "" {
		return e.Name, true // nothing recorded to keep
	}
	as = r.File
	if as == "" || as != filepath.Base(as) || strings.HasPrefix(as, ".") { // "." and ".." too
		as = e.Name
	}
	fi, err := os.Lstat(e.Path)
	if err != nil || !fi.Mode().IsRegular() {
		// Restore reports it; an entry that is not a regular file (quarantined
		// unread) goes back as it is, never read here.
		return e.Name, true
	}
	return as, watcher.Identity(as, fi) == r.ID
}

// replayWork is the quarantined messages of one source that replayHere imports.
type replayWork struct {
	source  string
	poller  *configs.Poller // nil: a connector's
	entries []quarantine.Entry
}

// replayHere imports quarantined messages right here through their source's intake,
// under the identity recorded when they were quarantined: every poller's, and a
// connector's that cannot go back into its drop folder under that identity
// (restorable). The bounce side is opened only when there is something to replay: a
// recipient that fails again is bounced (at most once per message, by the outbox), so
// the outbox must not be held by a running daemon.
func replayHere(cfg *configs.Config, todo []replayWork, stdout, stderr io.Writer) (delivered, failed int, err error) {
	log := newLogger(cfg, stderr)
	b, err := bounce.Open(cfg, bounce.OpenOptions{Log: log, UnsentFolder: filepath.Join(cfg.StateDir, quarantine.FolderName)})
	if errors.Is(err, bounce.ErrOutboxLocked) {
		var names []string
		for _, w := range todo {
			for _, e := range w.entries {
				names = append(names, w.source+": "+e.Name)
			}
		}
		return 0, 0, &exitError{code: 1, err: fmt.Errorf("a running mxdrop holds the bounce outbox: stop it to replay %s (imported by replay itself: a poller's, or changed after a delivery)", strings.Join(names, ", "))}
	}
	if err != nil {
		return 0, 0, &exitError{code: 1, err: err}
	}
	defer b.Close()
	var conns map[string]*intake.Intake
	for _, w := range todo {
		var in *intake.Intake
		if w.poller != nil {
			p, err := pollers.New(cfg, *w.poller, pollers.Deps{Logger: log, Bouncer: b})
			if err != nil {
				fmt.Fprintf(stderr, "%s: %v\n", w.source, err)
				failed += len(w.entries)
				continue
			}
			in = p.Intake()
		} else {
			if conns == nil {
				a, err := build(cfg, log, b, nil, nil)
				if err != nil {
					return delivered, failed + len(w.entries), &exitError{code: 1, err: err}
				}
				if a.lmtp != nil {
					defer a.lmtp.Close()
				}
				conns = map[string]*intake.Intake{}
				for _, c := range a.connectors {
					conns[c.Name] = c.Intake
				}
			}
			if in = conns[w.source]; in == nil {
				fmt.Fprintf(stderr, "%s: not active: its messages that changed after a delivery are replayed only by an active connector\n", w.source)
				failed += len(w.entries)
				continue
			}
		}
		for _, e := range w.entries {
			switch out := in.Replay(context.Background(), e); out {
			case intake.Delivered:
				fmt.Fprintf(stdout, "%s: %s delivered\n", w.source, e.Name)
				delivered++
			default:
				fmt.Fprintf(stderr, "%s: %s: %s (see the log event)\n", w.source, e.Name, out)
				failed++
			}
		}
	}
	if ob := b.Outbox(); ob != nil {
		// One delivery attempt for the DSNs that are due, as run --once does.
		ob.ProcessDue(context.Background())
	}
	return delivered, failed, nil
}

// replayCandidates returns the quarantined messages of q: the named ones (base names or
// paths), or all of them.
func replayCandidates(q quarantine.Folder, only []string) ([]quarantine.Entry, error) {
	entries, err := q.List()
	if err != nil || len(only) == 0 {
		return entries, err
	}
	names := make([]string, len(only))
	for i, f := range only {
		names[i] = filepath.Base(f)
	}
	return slices.DeleteFunc(entries, func(e quarantine.Entry) bool { return !slices.Contains(names, e.Name) }), nil
}
