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

// forget drops m from Init's memory, so that the next Init looks at the disk again.
func (m Maildir) forget() { initialized.Delete(m) }

// Folder returns the Maildir++ sub-folder name (".Junk") of m, creating it with its
// maildirfolder marker file when missing.
func (m Maildir) Folder(name string) (Maildir, error) {
	key, err := maildirpp.Join(strings.Split(name, "/"))
	if err != nil {
		return "", fmt.Errorf("folder name %q: %w", name, err)
	}
	f := Maildir(filepath.Join(string(m), string(key)))
	// Keyed apart from Init's entry: a folder counts as done only once its marker is.
	if _, ok := initialized.Load(folderDone(f)); ok {
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
	initialized.Store(folderDone(f), struct{}{})
	return f, nil
}

// folderDone keys a Maildir++ folder whose maildirfolder marker exists in initialized.
type folderDone Maildir

// Find looks for a delivery named name in new/ and cur/, where a mail reader may have
// moved it adding ":2,flags" or, like Dovecot, ",S=size" before that. It is only used
// for recovered messages: it reads cur/ in chunks, so it costs one scan of the folder
// but no memory that grows with it.
func (m Maildir) Find(name string) (string, bool) {
	p := filepath.Join(string(m), "new", name)
	if _, err := os.Lstat(p); err == nil {
		return p, true
	}
	cur := filepath.Join(string(m), "cur")
	if _, err := os.Lstat(filepath.Join(cur, name)); err == nil {
		return filepath.Join(cur, name), true
	}
	d, err := os.Open(cur)
	if err != nil {
		return "", false
	}
	defer d.Close()
	for {
		names, err := d.Readdirnames(1024)
		for _, n := range names {
			// Delivery names have a fixed length, so a longer name with this prefix is
			// this delivery with a suffix.
			if strings.HasPrefix(n, name) && len(n) > len(name) && strings.ContainsRune(":,!;", rune(n[len(name)])) {
				return filepath.Join(cur, n), true
			}
		}
		if err != nil {
			return "", false
		}
	}
}

// Deliver writes a message into tmp/name, fsyncs it, renames it to new/name and fsyncs
// new/ (or, with a non-nil batch, leaves that to batch.Sync). It returns the path in
// new/.
func (m Maildir) Deliver(name string, write durable.WriteFunc, batch *durable.Batch) (string, error) {
	newDir := filepath.Join(string(m), "new")
	if err := batch.WriteFile(filepath.Join(string(m), "tmp"), name, newDir, name, 0o600, write); err != nil {
		return "", err
	}
	return filepath.Join(newDir, name), nil
}
