package importer

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/emersion/go-maildir/maildirpp"

	"github.com/mxdrop/mxdrop/importer/durable"
)

// Maildir is a Maildir folder path (the one holding tmp/, new/ and cur/). go-maildir
// gives the layout and folder names; the writes are mxdrop's own because go-maildir's
// Delivery does not fsync.
type Maildir string

var initialized sync.Map // Maildir -> struct{}

// Init creates the Maildir (0700) and its tmp/, new/ and cur/ when missing, durably.
// It checks the disk once per Maildir and process.
func (m Maildir) Init() error {
	if _, ok := initialized.Load(m); ok {
		return nil
	}
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := durable.MkdirAll(filepath.Join(string(m), sub), 0o700); err != nil {
			return err
		}
	}
	initialized.Store(m, struct{}{})
	return nil
}

// Folder returns the Maildir++ sub-folder name (".Junk") of m, creating it with its
// maildirfolder marker file when missing.
func (m Maildir) Folder(name string) (Maildir, error) {
	key, err := maildirpp.Join(strings.Split(name, "/"))
	if err != nil {
		return "", fmt.Errorf("folder name %q: %w", name, err)
	}
	f := Maildir(filepath.Join(string(m), string(key)))
	if _, ok := initialized.Load(f); ok {
		return f, nil
	}
	if err := f.Init(); err != nil {
		return "", err
	}
	marker := filepath.Join(string(f), "maildirfolder")
	if _, err := os.Stat(marker); os.IsNotExist(err) {
		if err := os.WriteFile(marker, nil, 0o600); err != nil {
			return "", err
		}
		if err := durable.SyncDir(string(f)); err != nil {
			return "", err
		}
	}
	return f, nil
}

// Find looks for a delivery named name in new/ and cur/ (where a mail reader may have
// moved it, adding ":2,flags"). It is only used for recovered messages.
func (m Maildir) Find(name string) (string, bool) {
	p := filepath.Join(string(m), "new", name)
	if _, err := os.Lstat(p); err == nil {
		return p, true
	}
	cur := filepath.Join(string(m), "cur", name)
	if _, err := os.Lstat(cur); err == nil {
		return cur, true
	}
	if matches, _ := filepath.Glob(cur + ":*"); len(matches) > 0 {
		return matches[0], true
	}
	return "", false
}

// Deliver writes a message into tmp/name, fsyncs it, renames it to new/name and fsyncs
// new/. It returns the path in new/.
func (m Maildir) Deliver(name string, write durable.WriteFunc) (string, error) {
	newDir := filepath.Join(string(m), "new")
	if err := durable.WriteFile(filepath.Join(string(m), "tmp"), name, newDir, name, 0o600, write); err != nil {
		return "", err
	}
	return filepath.Join(newDir, name), nil
}
