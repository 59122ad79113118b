package watcher

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestDropFolderGoneAndBack(t *testing.T) {
	c, root := testConnector(t)
	var logs syncBuf
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
