package watcher

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
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

// claims is one instance's claims: its claims folder <drop>/.mxdrop/claims/<instance>/
// and the files it has claimed. The instance holds an exclusive flock on the folder's
// .lock file while alive; a claims folder whose lock can be taken belongs to an
// instance that died, and a live instance adopts its files.
//
// A file is claimed by a rename within the folder it arrived in, to a claim name that
// says which instance holds it (see claimName). Files whose claim name would be too
// long, and files claimed by releases before claim names, are in the claims folder
// itself; both are adopted alike.
//
// Where flock does not cross hosts (see lease.go) the instance also renews a lease in
// the claims folder, and another instance adopts only a folder whose lease it has seen
// expire.
type claims struct {
	dir    string
	drop   string // the drop folder
	tag    string // instanceTag of the instance: its claim names' mark
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
	cl := &claims{dir: dir, drop: drop, tag: instanceTag(id), lock: f, ttl: ttl, obs: newLeaseObserver(), stop: make(chan struct{}), done: make(chan struct{})}
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

// release removes the claims folder when this instance holds no claim any more; the
// lock goes with it. Claims left (files that met a transient error) keep the folder,
// whose released lease lets the next instance adopt them at once.
func (c *claims) release() {
	c.close()
	if files, err := listClaims(c.dir); err != nil || len(files) > 0 {
		return
	}
	if byTag, err := listClaimNames(c.drop); err != nil || len(byTag[c.tag]) > 0 {
		return
	}
	os.Remove(filepath.Join(c.dir, leaseFile))
	os.Remove(filepath.Join(c.dir, ".lock"))
	os.Remove(c.dir)
}

// claim takes src for this instance by an atomic rename to its claim name, within
// src's folder (a file of a claims folder, adopted, goes to the drop folder). Only one
// of several instances racing for one file wins; the losers get ok false. The claim
// never replaces a file already claimed: the claim name's number n is the first free one.
//
// Why within the folder: a rename between two folders takes the file system's one
// rename mutex before it waits for the two folders' locks
// (Documentation/filesystems/directory-locking.rst in the Linux sources, "cross-directory
// rename"), so while one claim waited for the drop folder's lock, which the MTA's writers
// hold as they create and rename their files, every other claim waited behind it. A
// rename within one folder takes that folder's lock only. With 16 fsyncing writers at
// 2,000 files/s the claim into a claims folder was the latency's tail (p99 about 2.4x
// that of a claim within the folder; README, "Latency").
func (c *claims) claim(src string) (path string, ok bool, err error) {
	if c.shared && c.ttl > 0 && time.Since(time.Unix(0, c.renewed.Load())) > c.ttl/2 {
		// The lease has not been renewed for half its time (the share is away or
		// this host was paused): another host may soon adopt what is claimed here, so
		// nothing more is claimed until the lease is fresh again.
		return "", false, errLeaseStale
	}
	name := OriginalName(src)
	dir := filepath.Dir(src)
	if filepath.Dir(dir) == claimsRoot(c.drop) {
		dir = c.drop // adopted from a claims folder
	}
	if maxClaimNameLen(name) <= maxNameLen {
		path, ok, err = c.claimAs(src, name, func(i int) string { return filepath.Join(dir, claimName(c.tag, i, name)) })
		if !errors.Is(err, unix.ENAMETOOLONG) {
			return path, ok, err
		}
	}
	// A name too long for a claim name is claimed into the claims folder.
	return c.claimAs(src, name, func(i int) string {
		if i == 0 {
			return filepath.Join(c.dir, name)
		}
		return filepath.Join(c.dir, name+"~"+strconv.Itoa(i))
	})
}

// maxNameLen is NAME_MAX of Linux file systems (ext4, XFS, tmpfs; an NFS or SMB server
// may allow fewer: ENAMETOOLONG then falls back too).
const maxNameLen = 255

// claimAs renames src to the first free name dst(i) of this instance, i from 0.
func (c *claims) claimAs(src, name string, dst func(i int) string) (path string, ok bool, err error) {
	for i := 0; i < 1000; i++ {
		d := dst(i)
		// On a share the retransmission check below needs d free. A local file system
		// has no retransmission, and there the lookup would cost a wait for the
		// folder's lock whenever d is not in the dentry cache: RENAME_NOREPLACE alone
		// finds a taken name.
		if c.shared {
			if _, err := os.Lstat(d); err == nil {
				continue // taken name
			}
		}
		err := claimRename(src, d)
		switch {
		case err == nil:
			return d, true, nil
		case c.shared && claimedAnyway(src, d):
			// QUIRK: an NFS rename whose reply was lost is retransmitted, and the
			// server's answer to the retry (ENOENT: src is gone; EEXIST: dst is there)
			// reports a failure although the first one succeeded. RFC 1813 section 3.3.14
			// asks only that the rename be atomic on the server; Postfix's
			// src/global/mbox_open.c and dot_lockfile.c note the false errors. Only this
			// instance makes its claim names and writes into its claims folder, so d
			// present and src gone means the claim is ours.
			return d, true, nil
		case errors.Is(err, os.ErrNotExist):
			return "", false, nil // another instance took it, or it went away
		case errors.Is(err, os.ErrExist):
			continue
		case errors.Is(err, unix.ENAMETOOLONG):
			return "", false, err
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
	return "", false, fmt.Errorf("claim %s: no free name in %s", name, filepath.Dir(dst(0)))
}

// claimRename is the rename of a claim (tests put a file server's quirks in its place).
var claimRename = renameNoReplace

// renameNoReplace renames like rename(2) but fails with an error matching os.ErrExist
// when dst exists. File systems without RENAME_NOREPLACE (NFS, whose client refuses
// every renameat2 flag) fall back to renameIfFree.
func renameNoReplace(src, dst string) error { return renameOr(src, dst, renameIfFree) }

// renameOr is renameat2(RENAME_NOREPLACE), or fallback where the file system refuses
// the flag.
func renameOr(src, dst string, fallback func(src, dst string) error) error {
	err := unix.Renameat2(unix.AT_FDCWD, src, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE)
	if err == nil {
		return nil
	}
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		return fallback(src, dst)
	}
	return &os.LinkError{Op: "rename", Old: src, New: dst, Err: err}
}

// renameIfFree renames src to dst unless dst exists (os.ErrExist): a check and a
// rename. No other process makes this instance's claim names or writes into its claims
// folder; within this process the check and the rename are one step under renameMu, so
// that two goroutines renaming different files to one free name (a new file and an
// adopted claim of the same name) cannot both find it free, the second replacing the
// first.
func renameIfFree(src, dst string) error {
	renameMu.Lock()
	defer renameMu.Unlock()
	if _, err := os.Lstat(dst); err == nil {
		return os.ErrExist
	}
	if checkedFree != nil {
		checkedFree()
	}
	return os.Rename(src, dst)
}

var renameMu sync.Mutex

// checkedFree, when not nil, runs between renameIfFree's check and its rename (tests
// widen the window there).
var checkedFree func()

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

// adopt claims the files of every dead instance and returns their paths. The adopted
// files are processed as recovered messages. c's own files are never returned: they
// are in flight or waiting for a retry.
//
// A dead instance is one whose claims folder's flock is free and whose lease says it
// ended (lease.go). Its files are its claim names in the drop folder (and new/) and the
// files in its claims folder. The claim names are listed before the claims folders: an
// instance makes claim names only while its claims folder exists, so a claim name whose
// instance has no folder in the later listing belongs to one that has ended (its folder
// adopted or released while a claim failed). On a share such an orphan is adopted only
// after it has been seen orphaned for claim_lease: a client's cached listing may not yet
// show a new instance's folder.
func (c *claims) adopt() ([]string, error) {
	var out []string
	take := func(files []string) (failed bool) {
		for _, f := range files {
			p, ok, err := c.claim(f)
			if err == nil && ok {
				out = append(out, p)
			} else if err != nil {
				failed = true
			}
		}
		return failed
	}
	byTag, err := listClaimNames(c.drop)
	if err != nil {
		return out, err
	}
	delete(byTag, c.tag)
	root := claimsRoot(c.drop)
	entries, err := os.ReadDir(root)
	if err != nil {
		return out, fmt.Errorf("list claims folders: %w", err)
	}
	for _, e := range entries {
		dir := filepath.Join(root, e.Name())
		if !e.IsDir() || dir == c.dir {
			continue
		}
		tag := instanceTag(e.Name())
		names := byTag[tag]
		delete(byTag, tag)
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
			failed := take(names)
			failed = take(files) || failed
			if rest, _ := listClaims(dir); len(rest) == 0 && !failed {
				os.Remove(filepath.Join(dir, leaseFile))
				os.Remove(filepath.Join(dir, ".lock"))
				os.Remove(dir)
			}
		}
		lf.Close()
	}
	for tag, names := range byTag {
		if c.obs.orphanDead(tag, c.shared, c.ttl) {
			take(names)
		}
	}
	c.obs.forgetOrphans(byTag)
	return out, nil
}

// listClaimNames lists the claim names in drop folder drop and its new/, by instance
// tag, in batches: a drop folder may hold a large backlog.
func listClaimNames(drop string) (map[string][]string, error) {
	byTag := map[string][]string{}
	for _, dir := range []string{drop, filepath.Join(drop, "new")} {
		d, err := os.Open(dir)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return byTag, fmt.Errorf("list claim names: %w", err)
		}
		for {
			names, err := d.Readdirnames(1024)
			for _, n := range names {
				if tag, _, ok := parseClaimName(n); ok {
					byTag[tag] = append(byTag[tag], filepath.Join(dir, n))
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				d.Close()
				return byTag, fmt.Errorf("list claim names: %w", err)
			}
		}
		d.Close()
	}
	return byTag, nil
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
