package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/mxdrop/mxdrop/bounce"
	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer/intake"
	"github.com/mxdrop/mxdrop/importer/quarantine"
	"github.com/mxdrop/mxdrop/pollers"
)

// cmdReplay brings quarantined messages back so that a fixed configuration imports
// them. A connector's files move from ImportFailed/ back into its drop folder: each keeps
// its inode and mtime, so it keeps its identity, and the bounce outbox recognises a
// message whose DSN was already queued and does not bounce its recipients again. A
// poller's messages (state_dir/ImportFailed/<poller>) are imported right here through
// the poller's importer, under the identity recorded when they were quarantined; no
// server is involved. Either way the reason file and the DSN copy go with the message.
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
		for _, e := range entries {
			if err := q.Restore(e.Name, target); err != nil {
				fmt.Fprintf(stderr, "%s: %s: %v\n", c.Name, e.Name, err)
				failed++
				continue
			}
			fmt.Fprintf(stdout, "%s: %s back in %s\n", c.Name, e.Name, target)
			moved++
		}
	}
	if len(pcs) > 0 {
		m, f, err := replayPollers(cfg, pcs, files, stdout, stderr)
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

// replayPollers imports the quarantined messages of the pollers pcs through their
// intakes. The bounce side is opened only when there is something to replay: a
// recipient that fails again is bounced (at most once per message, by the outbox), so
// the outbox must not be held by a running daemon.
func replayPollers(cfg *configs.Config, pcs []configs.Poller, files []string, stdout, stderr io.Writer) (delivered, failed int, err error) {
	type work struct {
		pc      configs.Poller
		entries []quarantine.Entry
	}
	var todo []work
	for _, pc := range pcs {
		entries, err := replayCandidates(quarantine.ForPoller(cfg.StateDir, pc.Name), files)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", pc.Name, err)
			failed++
			continue
		}
		if len(entries) > 0 {
			todo = append(todo, work{pc, entries})
		}
	}
	if len(todo) == 0 {
		return 0, failed, nil
	}
	log := newLogger(cfg, stderr)
	b, err := bounce.Open(cfg, bounce.OpenOptions{Log: log, UnsentFolder: filepath.Join(cfg.StateDir, quarantine.FolderName)})
	if errors.Is(err, bounce.ErrOutboxLocked) {
		return 0, 0, &exitError{code: 1, err: errors.New("a running mxdrop holds the bounce outbox: stop it to replay a poller's quarantine")}
	}
	if err != nil {
		return 0, 0, &exitError{code: 1, err: err}
	}
	defer b.Close()
	for _, w := range todo {
		p, err := pollers.New(cfg, w.pc, pollers.Deps{Logger: log, Bouncer: b})
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", w.pc.Name, err)
			failed += len(w.entries)
			continue
		}
		for _, e := range w.entries {
			switch out := p.Intake().Replay(context.Background(), e); out {
			case intake.Delivered:
				fmt.Fprintf(stdout, "%s: %s delivered\n", w.pc.Name, e.Name)
				delivered++
			default:
				fmt.Fprintf(stderr, "%s: %s: %s (see the log event)\n", w.pc.Name, e.Name, out)
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
