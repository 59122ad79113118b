package watcher

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

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
//
// Where flock does not cross hosts (see lease.go) the instance also renews a lease in
// the claims folder, and another instance adopts only a folder whose lease it has seen
// expire.
type claims struct {
	dir    string
	lock   *os.File
	shared bool          // on a network or FUSE file system: a free flock proves nothing
	ttl    time.Duration // claim_lease
	obs    *leaseObserver
	stop   chan struct{} // closed by close: the lease stops being renewed
	done   chan struct{} // closed when the lease renewer has ended
	// renewed is when the lease was last renewed (this host's clock, UnixNano).
	renewed atomic.Int64
}

// DefaultClaimLease is claim_lease when a Connector leaves it 0.
const DefaultClaimLease = 2 * time.Minute

func claimsRoot(drop string) string { return filepath.Join(drop, WorkDir, "claims") }

// openClaims creates and locks the claims folder of instance id, and starts renewing
// its lease every ttl/3 (warn gets failed renewals).
func openClaims(drop, id string, ttl time.Duration, warn func(error)) (*claims, error) {
	return openClaimsAs(drop, id, ttl, warn, self())
}

// openClaimsAs is openClaims with the lease naming owner (tests play other hosts).
func openClaimsAs(drop, id string, ttl time.Duration, warn func(error), owner leaseOwner) (*claims, error) {
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
	if ttl <= 0 {
		ttl = DefaultClaimLease
	}
	cl := &claims{dir: dir, lock: f, ttl: ttl, obs: newLeaseObserver(), stop: make(chan struct{}), done: make(chan struct{})}
	cl.shared = ChooseMode(drop, WatchAuto).Shared
	cl.renewed.Store(time.Now().UnixNano())
	go func() {
		defer close(cl.done)
		runLease(dir, ttl, owner, cl.stop, warn, func(t time.Time) { cl.renewed.Store(t.UnixNano()) })
	}()
	return cl, nil
}

// tryLock takes the flock of a claims folder without waiting. ok is false when a live
// instance holds it.
func tryLock(dir string) (f *os.File, ok bool, err error) {
	f, err = durable.TryLock(filepath.Join(dir, ".lock"), 0o640)
	if errors.Is(err, durable.ErrLocked) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("lock claims folder: %w", err)
	}
	return f, true, nil
}

func (c *claims) close() {
	if c.stop != nil {
		select {
		case <-c.stop:
		default:
			close(c.stop)
			<-c.done
			// Every job has ended: whatever is left here waits for any instance.
			releaseLease(c.dir)
		}
	}
	if c.lock != nil {
		c.lock.Close()
	}
}

// release removes the claims folder if it is empty; the lock goes with it.
func (c *claims) release() {
	c.close()
	if files, err := listClaims(c.dir); err == nil && len(files) == 0 {
		os.Remove(filepath.Join(c.dir, leaseFile))
		os.Remove(filepath.Join(c.dir, ".lock"))
		os.Remove(c.dir)
	}
}

// claim moves src into the claims folder by an atomic rename. Only one of several
// instances racing for one file wins; the losers get ok false. The claim never replaces
// a file already claimed: a file of the same name gets a "~N" suffix.
func (c *claims) claim(src string) (path string, ok bool, err error) {
	if c.shared && c.ttl > 0 && time.Since(time.Unix(0, c.renewed.Load())) > c.ttl/2 {
		// The lease has not been renewed for half its time (the share is away or
		// this host was paused): another host may soon adopt what is claimed here, so
		// nothing more is claimed until the lease is fresh again.
		return "", false, errLeaseStale
	}
	base := filepath.Base(src)
	for i := 0; i < 1000; i++ {
		name := base
		if i > 0 {
			name = base + "~" + strconv.Itoa(i)
		}
		dst := filepath.Join(c.dir, name)
		// The retransmission check below needs dst free. The lookup also leaves a
		// negative entry in the dentry cache, so that the rename, which holds the file
		// system's cross-folder rename lock, does not search the claims folder itself:
		// without it the claim was slower at 2,000 files/s, not faster.
		if _, err := os.Lstat(dst); err == nil {
			continue // taken name
		}
		err := claimRename(src, dst)
		switch {
		case err == nil:
			return dst, true, nil
		case claimedAnyway(src, dst):
			// QUIRK: an NFS rename whose reply was lost is retransmitted, and the
			// server's answer to the retry (ENOENT: src is gone; EEXIST: dst is there)
			// reports a failure although the first one succeeded. RFC 1813 section 3.3.14
			// asks only that the rename be atomic on the server; Postfix's
			// src/global/mbox_open.c and dot_lockfile.c note the false errors. Only this
			// instance writes into its claims folder, so dst present and src gone means
			// the claim is ours.
			return dst, true, nil
		case errors.Is(err, os.ErrNotExist):
			return "", false, nil // another instance took it, or it went away
		case errors.Is(err, os.ErrExist):
			continue
		case c.shared && notYet(err):
			// An SMB server refuses (or holds back, waiting for an oplock break) the
			// rename of a file another client still has open (MS-CIFS 3.3.5.10,
			// STATUS_SHARING_VIOLATION; the Linux client maps it to EBUSY or EACCES):
			// the writer has not finished. Not ours yet; the next listing offers it again.
			return "", false, nil
		default:
			return "", false, fmt.Errorf("claim: %w", err)
		}
	}
	return "", false, fmt.Errorf("claim %s: no free name in %s", base, c.dir)
}

// claimRename is the rename of a claim (tests put a file server's quirks in its place).
var claimRename = renameNoReplace

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

// errLeaseStale refuses a claim while this instance's lease is not being renewed.
var errLeaseStale = errors.New("claim lease not renewed for half of claim_lease: not claiming until it is")

// claimedAnyway reports whether a failed rename of src to dst did happen.
func claimedAnyway(src, dst string) bool {
	if _, err := os.Lstat(dst); err != nil {
		return false
	}
	_, err := os.Lstat(src)
	return errors.Is(err, os.ErrNotExist)
}

// notYet reports a rename on a share refused because another client has the file open.
// On a local file system these errors are real and reported.
func notYet(err error) bool {
	return errors.Is(err, unix.EBUSY) || errors.Is(err, unix.ETXTBSY) || errors.Is(err, unix.EACCES)
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
		if dead, _ := c.obs.dead(dir, c.shared, c.ttl); !dead {
			lf.Close()
			continue
		}
		c.obs.forget(dir)
		files, err := listClaims(dir)
		if err == nil {
			for _, f := range files {
				p, ok, err := c.claim(f)
				if err == nil && ok {
					out = append(out, p)
				}
			}
			if rest, _ := listClaims(dir); len(rest) == 0 {
				os.Remove(filepath.Join(dir, leaseFile))
				os.Remove(filepath.Join(dir, ".lock"))
				os.Remove(dir)
			}
		}
		lf.Close()
	}
	return out, nil
}

// listClaims returns the claimed files in dir (not the lock, not temporary files).
//
// An entry that is not a regular file (swapped in between a claim's check and its
// rename) is listed too: processing quarantines it unread, so it neither stays unseen
// nor keeps a dead instance's claims folder alive.
func listClaims(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list claims: %w", err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		out = append(out, filepath.Join(dir, e.Name()))
	}
	return out, nil
}
