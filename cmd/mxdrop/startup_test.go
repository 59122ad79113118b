package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestStartupNamesFoldersEmbeddedDefault: the README's first command (no --config) says
// at start which folder it watches, how, and where mail lands, and a file dropped there
// does land there.
func TestStartupNamesFoldersEmbeddedDefault(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(binary)
	cmd.Dir = dir
	p := startProc(t, cmd)
	// The console format colours its fields; compare the plain text.
	text := func() string { return ansiRE.ReplaceAllString(p.Logs(), "") }
	waitUntil(t, "mxdrop started", 10*time.Second, func() bool { return strings.Contains(text(), "mxdrop started") })

	for _, want := range []string{
		"drop .eml files into ./var/drop; mail lands in ./var/mail/catchall",
		"drop_folder=./var/drop",
		"watch=events",
		`delivery="maildir ./var/mail/catchall"`,
	} {
		if !strings.Contains(text(), want) {
			t.Errorf("start-up log lacks %q:\n%s", want, text())
		}
	}
	dropFile(t, filepath.Join(dir, "var/drop"), "hello.eml", msg("hello@test", "", "anyone@example.net"))
	waitUntil(t, "the message in ./var/mail/catchall/new", 10*time.Second, func() bool {
		names, _ := os.ReadDir(filepath.Join(dir, "var/mail/catchall/new"))
		return len(names) == 1
	})
}

var ansiRE = regexp.MustCompile("\x1b\\[[0-9;]*m")
