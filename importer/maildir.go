package importer

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

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
// but no memory that grows with it. FindIn shares the scans of a batch.
func (m Maildir) Find(name string) (string, bool) {
	return m.FindIn(name, nil)
}

// FindIn is Find with the listing of cur/ taken from lk, when not nil.
func (m Maildir) FindIn(name string, lk *Lookup) (string, bool) {
	p := filepath.Join(string(m), "new", name)
	if _, err := os.Lstat(p); err == nil {
		return p, true
	}
	cur := filepath.Join(string(m), "cur")
	if _, err := os.Lstat(filepath.Join(cur, name)); err == nil {
		return filepath.Join(cur, name), true
	}
	if lk != nil {
		if n, ok, done := lk.find(cur, name); done {
			if !ok {
				return "", false
			}
			return filepath.Join(cur, n), true
		}
	}
	return scanFor(cur, name)
}

// scanFor looks for a file of dir delivered as name (see deliveryBase), reading dir in
// chunks.
func scanFor(dir, name string) (string, bool) {
	return findEntry(dir, func(n string) bool {
		base, ok := deliveryBase(n)
		return ok && base == name
	})
}

// findEntry returns the path of the first entry of dir whose name match accepts,
// reading dir in chunks so that a large folder is never listed whole.
func findEntry(dir string, match func(name string) bool) (string, bool) {
	d, err := os.Open(dir)
	if err != nil {
		return "", false
	}
	defer d.Close()
	for {
		names, err := d.Readdirnames(1024)
		for _, n := range names {
			if match(n) {
				return filepath.Join(dir, n), true
			}
		}
		if err != nil {
			return "", false
		}
	}
}

// linkedCopy looks in the new/ and cur/ folders of mds for a delivery of mxdrop that is
// the file src itself (its inode): a linked copy is visible before its data sync
// (durable.LinkTemp), and a power loss in between can shorten src, which is then
// imported again under a new identity whose delivery name was never used. Only a src
// with another name is looked for, and only mxdrop's delivery names are stat'ed.
func linkedCopy(src string, mds ...Maildir) (string, bool) {
	fi, err := os.Lstat(src)
	if err != nil {
		return "", false
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Nlink < 2 {
		return "", false
	}
	for _, md := range mds {
		for _, sub := range []string{"new", "cur"} {
			dir := filepath.Join(string(md), sub)
			p, ok := findEntry(dir, func(n string) bool {
				if !strings.Contains(n, ".mxdrop") {
					return false
				}
				li, err := os.Lstat(filepath.Join(dir, n))
				return err == nil && os.SameFile(fi, li)
			})
			if ok {
				return p, true
			}
		}
	}
	return "", false
}

// deliveryBase returns the name a file of cur/ was delivered as: the part before the
// suffix a reader added (":2,flags", Dovecot's ",S=size", and the other separators in
// use); ok is false for a name without one (Lstat finds those).
func deliveryBase(n string) (string, bool) {
	i := strings.IndexAny(n, ":,!;")
	if i <= 0 {
		return "", false
	}
	return n[:i], true
}

// A Lookup shares the listing of cur/ folders among the recovered messages of a batch,
// so that finding their earlier deliveries costs one scan of each folder rather than
// one per message: a poller whose state was lost imports a whole mailbox as recovered.
// A listing is used only while the folder's modification time is the one read before
// it was taken, and only when that time is at least lookupSettled old, so a rename into
// the folder in the same clock tick as the listing cannot hide from it. A Lookup is
// safe for concurrent use; its memory grows with the folders' sizes, so it should live
// for one batch.
type Lookup struct {
	mu    sync.Mutex
	lists map[string]*curList
	scans int // listings taken (tests)
}

type curList struct {
	mtime time.Time
	base  map[string]string // delivery name -> file name in cur/
}

// lookupSettled is how long a cur/ folder must have been unchanged for its listing to
// be kept: longer than any file system's timestamp granularity.
const lookupSettled = 2 * time.Second

// find looks name up in the listing of cur. done is false when no listing can be
// used: the folder changed too recently, or cannot be read (the caller scans).
func (lk *Lookup) find(cur, name string) (file string, found, done bool) {
	fi, err := os.Stat(cur)
	if err != nil || time.Since(fi.ModTime()) < lookupSettled {
		return "", false, false
	}
	lk.mu.Lock()
	defer lk.mu.Unlock()
	l := lk.lists[cur]
	if l == nil || !l.mtime.Equal(fi.ModTime()) {
		l = &curList{mtime: fi.ModTime(), base: map[string]string{}}
		d, err := os.Open(cur)
		if err != nil {
			return "", false, false
		}
		defer d.Close()
		for {
			names, err := d.Readdirnames(1024)
			for _, n := range names {
				if b, ok := deliveryBase(n); ok {
					l.base[b] = n
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return "", false, false
			}
		}
		lk.scans++
		if lk.lists == nil {
			lk.lists = map[string]*curList{}
		}
		lk.lists[cur] = l
	}
	file, found = l.base[name]
	return file, found, true
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

// LinkSource is the file a linked delivery shares: its path and, when the source holds
// it open already, that descriptor (Message.File), which spares opening it again.
type LinkSource struct {
	Path string
	File *os.File
}

// Link is Deliver for a copy that is the file src of size bytes (size < 0: any) as it
// is: src is hard linked into tmp/name instead of written (durable.LinkTemp), renamed to
// new/name, and new/ fsynced or left to batch. Any error means nothing was delivered
// and a written copy may be tried instead.
func (m Maildir) Link(name string, src LinkSource, size int64, batch *durable.Batch) (string, error) {
	newDir := filepath.Join(string(m), "new")
	if err := batch.Link(src.Path, src.File, size, filepath.Join(string(m), "tmp"), name, newDir, name); err != nil {
		return "", err
	}
	return filepath.Join(newDir, name), nil
}
