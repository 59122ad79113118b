package watcher

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxdrop/mxdrop/internal/testenv"
)

func TestDropFolderGoneAndBack(t *testing.T) {
	c, root := testConnector(t)
	var logs testenv.LogBuffer
	c.Log = zerolog.New(&logs)
	m := NewManager("daemon", 2, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, []*Connector{c}) }()
	defer func() { cancel(); <-done }()
	time.Sleep(100 * time.Millisecond)
	if err := os.RemoveAll(c.DropFolder); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the loss logged", 5*time.Second, func() bool { return strings.Contains(logs.String(), "watcher stopped") })
	os.MkdirAll(c.DropFolder, 0o750)
	dropRename(t, c.DropFolder, "back", message(1, "alice@example.com"))
	waitFor(t, "import after the folder came back", 10*time.Second, func() bool {
		return countNew(t, filepath.Join(root, "mail", "alice")) == 1
	})
}

// TestDropFolderBecomesMaildir: an MTA's Maildir delivery creates tmp/, new/ and cur/ in
// an empty drop folder on its first message; the watcher moves over to new/.
func TestDropFolderBecomesMaildir(t *testing.T) {
	c, root := testConnector(t)
	m := NewManager("daemon", 2, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, []*Connector{c}) }()
	defer func() { cancel(); <-done }()
	time.Sleep(100 * time.Millisecond)
	for _, sub := range []string{"tmp", "new", "cur"} {
		os.Mkdir(filepath.Join(c.DropFolder, sub), 0o750)
	}
	os.WriteFile(filepath.Join(c.DropFolder, "tmp", "1.x.host"), message(1, "alice@example.com"), 0o600)
	os.Rename(filepath.Join(c.DropFolder, "tmp", "1.x.host"), filepath.Join(c.DropFolder, "new", "1.x.host"))
	waitFor(t, "import from new/", 10*time.Second, func() bool {
		return countNew(t, filepath.Join(root, "mail", "alice")) == 1
	})
	if _, err := os.Stat(filepath.Join(c.DropFolder, "new", "1.x.host")); !os.IsNotExist(err) {
		t.Errorf("file still in new/: %v", err)
	}
}
