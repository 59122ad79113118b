package watcher

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/mxdrop/mxdrop/importer/durable"
)

// WorkDir is mxdrop's work folder inside a drop folder. Dot-folders are never taken as
// messages, so the MTA's writers and mxdrop's claims never mix.
const WorkDir = ".mxdrop"

// ImportedFolder receives imported files of a connector with keep_imported.
const ImportedFolder = "Imported"

// claims is one instance's claims folder: <drop>/.mxdrop/claims/<instance>/. The
// instance holds an exclusive flock on its .lock file while alive; a claims folder
// whose lock can be taken belongs to an instance that died, and a live instance adopts
// its files.
type claims struct {
	dir  string
	lock *os.File
}

func claimsRoot(drop string) string { return filepath.Join(drop, WorkDir, "claims") }

// openClaims creates and locks the claims folder of instance id.
func openClaims(drop, id string) (*claims, error) {
	dir := filepath.Join(claimsRoot(drop), id)
	if err := durable.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create claims folder: %w", err)
	}
	f, ok, err := tryLock(dir)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("claims folder %s is locked by a running instance with the same id", dir)
	}
	return &claims{dir: dir, lock: f}, nil
}

// tryLock takes the flock of a claims folder without waiting. ok is false when a live
// instance holds it.
func tryLock(dir string) (f *os.File, ok bool, err error) {
	f, err = os.OpenFile(filepath.Join(dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, false, fmt.Errorf("open claims lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("lock claims folder: %w", err)
	}
	return f, true, nil
}

func (c *claims) close() {
	if c.lock != nil {
		c.lock.Close()
	}
}

// release removes the claims folder if it is empty; the lock goes with it.
func (c *claims) release() {
	entries, err := os.ReadDir(c.dir)
	if err == nil && len(entries) <= 1 {
		os.Remove(filepath.Join(c.dir, ".lock"))
		os.Remove(c.dir)
	}
	c.close()
}

// claim moves src into the claims folder by an atomic rename. Only one of several
// instances racing for one file wins; the losers get ok false. The claim never replaces
// a file already claimed: a file of the same name gets a "~N" suffix.
func (c *claims) claim(src string) (path string, ok bool, err error) {
	base := filepath.Base(src)
	for i := 0; i < 1000; i++ {
		name := base
		if i > 0 {
			name = base + "~" + strconv.Itoa(i)
		}
		dst := filepath.Join(c.dir, name)
		err := renameNoReplace(src, dst)
		switch {
		case err == nil:
			return dst, true, nil
		case errors.Is(err, os.ErrNotExist):
			return "", false, nil // another instance took it, or it went away
		case errors.Is(err, os.ErrExist):
			continue
		default:
			return "", false, fmt.Errorf("claim: %w", err)
		}
	}
	return "", false, fmt.Errorf("claim %s: no free name in %s", base, c.dir)
}

// renameNoReplace renames like rename(2) but fails with an error matching os.ErrExist
// when dst exists. File systems without RENAME_NOREPLACE fall back to a check and a
// rename, which is safe because only this process writes into its claims folder.
func renameNoReplace(src, dst string) error {
	err := unix.Renameat2(unix.AT_FDCWD, src, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE)
	if err == nil {
		return nil
	}
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		if _, serr := os.Lstat(dst); serr == nil {
			return os.ErrExist
		}
		return os.Rename(src, dst)
	}
	return &os.LinkError{Op: "rename", Old: src, New: dst, Err: err}
}

// adopt moves the files of every dead instance's claims folder into c and returns
// their paths in c. The adopted files are processed as recovered messages. c's own
// files are never returned: they are in flight or waiting for a retry.
func (c *claims) adopt() ([]string, error) {
	var out []string
	root := filepath.Dir(c.dir)
	entries, err := os.ReadDir(root)
	if err != nil {
		return out, fmt.Errorf("list claims folders: %w", err)
	}
	for _, e := range entries {
		dir := filepath.Join(root, e.Name())
		if !e.IsDir() || dir == c.dir {
			continue
		}
		lf, ok, err := tryLock(dir)
		if err != nil || !ok {
			continue // alive, or not ours to judge
		}
		files, err := listClaims(dir)
		if err == nil {
			for _, f := range files {
				p, ok, err := c.claim(f)
				if err == nil && ok {
					out = append(out, p)
				}
			}
			if rest, _ := listClaims(dir); len(rest) == 0 {
				os.Remove(filepath.Join(dir, ".lock"))
				os.Remove(dir)
			}
		}
		lf.Close()
	}
	return out, nil
}

// listClaims returns the claimed files in dir (not the lock, not temporary files).
func listClaims(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list claims: %w", err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") || !e.Type().IsRegular() {
			continue
		}
		out = append(out, filepath.Join(dir, e.Name()))
	}
	return out, nil
}
