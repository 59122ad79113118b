package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/watcher"
)

// describeWatch writes, per connector, how its drop folder is watched here and why:
// the file system type decides under watch: auto. It only calls statfs, so check-config
// and status may use it beside a running daemon.
func describeWatch(w io.Writer, cfg *configs.Config, indent string) {
	for _, c := range cfg.Connectors {
		ch := watchChoice(&c)
		how := ch.Mode
		if ch.Mode == watcher.WatchPoll {
			how = fmt.Sprintf("poll every %s", c.PollInterval)
		}
		fmt.Fprintf(w, "%s%s  %s (%s)\n", indent, c.Name, how, ch.Reason)
	}
}

// watchChoice is how connector c's drop folder is watched on this host, decided as the
// watcher decides it, before the watcher runs (the folder may not exist yet).
func watchChoice(c *configs.Connector) watcher.ModeChoice {
	return watcher.ChooseMode(existingFolder(watchFolder(c.DropFolder)), c.Watch)
}

// watchFolder is the drop folder's new/ when it is a Maildir, else the drop folder.
func watchFolder(drop string) string {
	if fi, err := os.Stat(filepath.Join(drop, "new")); err == nil && fi.IsDir() {
		return filepath.Join(drop, "new")
	}
	return drop
}

// existingFolder is dir, or its nearest existing parent when dir is not made yet (the
// daemon creates it): it lies on the same mount unless a share is mounted there later.
func existingFolder(dir string) string {
	for {
		if _, err := os.Stat(dir); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return dir
		}
		dir = parent
	}
}
