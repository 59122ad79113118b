package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer"
	"github.com/mxdrop/mxdrop/importer/durable"
)

// cmdReplay moves quarantined files from ImportFailed/ back into their drop folder, so
// that a fixed configuration imports them. Each file keeps its inode and mtime, so it
// keeps its identity: the bounce outbox recognises a message whose DSN was already
// queued and does not bounce its recipients again. The reason file and the DSN copy
// beside it are removed.
func cmdReplay(configPath string, args []string, stdout, stderr io.Writer) error {
	fs := subFlags("replay", &configPath, stderr)
	connector := fs.String("connector", "", "replay only this connector's ImportFailed/")
	cfg, err := parseAndLoad(fs, args, &configPath)
	if err != nil {
		return err
	}
	var conns []configs.Connector
	for _, c := range cfg.Connectors {
		if *connector == "" || c.Name == *connector {
			conns = append(conns, c)
		}
	}
	if len(conns) == 0 {
		return &exitError{code: 2, err: fmt.Errorf("no connector named %q", *connector)}
	}
	files := fs.Args()
	moved, failed := 0, 0
	for _, c := range conns {
		folder := filepath.Join(c.DropFolder, importer.FailedFolder)
		names, err := replayCandidates(folder, files)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", c.Name, err)
			failed++
			continue
		}
		target := c.DropFolder
		if fi, err := os.Stat(filepath.Join(c.DropFolder, "new")); err == nil && fi.IsDir() {
			target = filepath.Join(c.DropFolder, "new")
		}
		for _, name := range names {
			if err := replayOne(folder, name, target); err != nil {
				fmt.Fprintf(stderr, "%s: %s: %v\n", c.Name, name, err)
				failed++
				continue
			}
			fmt.Fprintf(stdout, "%s: %s back in %s\n", c.Name, name, target)
			moved++
		}
	}
	fmt.Fprintf(stdout, "replayed %d, failed %d\n", moved, failed)
	if failed > 0 {
		return &exitError{code: 1, err: errors.New("some files were not replayed")}
	}
	return nil
}

// replayCandidates returns the quarantined messages in folder: the named ones (base
// names or paths), or all of them.
func replayCandidates(folder string, only []string) ([]string, error) {
	if len(only) > 0 {
		var out []string
		for _, f := range only {
			name := filepath.Base(f)
			if _, err := os.Stat(filepath.Join(folder, name)); err == nil {
				out = append(out, name)
			}
		}
		return out, nil
	}
	entries, err := os.ReadDir(folder)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		n := e.Name()
		if !e.Type().IsRegular() || strings.HasPrefix(n, ".") || strings.HasSuffix(n, ".dsn.eml") {
			continue
		}
		if strings.HasSuffix(n, ".json") {
			if _, err := os.Stat(filepath.Join(folder, strings.TrimSuffix(n, ".json"))); err == nil {
				continue // the reason file of a message
			}
		}
		out = append(out, n)
	}
	return out, nil
}

// replayOne renames folder/name into target under a name that does not exist there,
// then removes its reason file and DSN copy.
func replayOne(folder, name, target string) error {
	dst := filepath.Join(target, name)
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("%s already exists", dst)
	}
	if err := os.Rename(filepath.Join(folder, name), dst); err != nil {
		return err
	}
	if err := durable.SyncDir(target); err != nil {
		return err
	}
	os.Remove(filepath.Join(folder, name+".json"))
	os.Remove(filepath.Join(folder, name+".dsn.eml"))
	return durable.SyncDir(folder)
}
