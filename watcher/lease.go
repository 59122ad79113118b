package watcher

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Claim leases: why flock is not enough on a share, and what replaces it there.
//
// An instance holds an exclusive flock on its claims folder's .lock while alive, and
// another instance adopts the claims of a folder whose flock it can take. Within one
// kernel that is exact. Across hosts it is not:
//   - SMB/CIFS: the Linux client serves flock locally unless mounted with nobrl off and
//     the server maps it to byte-range locks; other clients do not see it
//     (mount.cifs(8), "nobrl", "locallease"); Windows pickup writers never flock at all.
//   - NFS: the client emulates flock with whole-file POSIX locks through NLM (v3) or the
//     protocol's own locks (v4); with "nolock"/"local_lock=all" they stay local
//     (nfs(5), "local_lock"), and a local flock on the server does not conflict with
//     them (flock and POSIX locks are independent on Linux, flock(2) NOTES).
//   - FUSE: without the file system implementing flock (sshfs, bindfs do not), the
//     kernel keeps the lock per mount (fs/fuse/file.c, fuse_file_flock).
// So each instance also renews a lease: the file .lease in its claims folder, rewritten
// every claim_lease/3 with a new sequence number. On a shared file system another
// instance adopts a claims folder only when its flock is free AND it has watched the
// lease file's content stay unchanged for a whole claim_lease on its own monotonic clock.
// No time written by another host is compared with this host's clock, so clock skew
// between hosts cannot make a live lease look expired; it can only make adoption later
// (the observer starts its count when it first reads the content). A host paused for
// longer than claim_lease can lose its claims: the default 2m is far above any pause a
// healthy host makes, and a claim that vanished from under its owner is skipped by it.
// Within one kernel (the lease names this boot and a process start time) the owner's
// liveness is known exactly, so a dead local instance's claims are adopted at once.
//
// NFS reads of the lease are fresh: open(2) revalidates a file's attributes and data
// (close-to-open consistency, nfs(5) "Data and metadata coherence"), whatever actimeo says.

const leaseFile = ".lease"

// leaseOwner identifies a process on a kernel: the boot id tells whether the lease
// was written by this kernel, where the pid and its start time say if it still runs.
type leaseOwner struct {
	host  string
	boot  string
	pidNS string // the pid namespace (containers on one kernel share the boot id)
	pid   int
	start uint64 // process start time in clock ticks since boot (/proc/<pid>/stat field 22)
}

var (
	selfOnce  sync.Once
	selfOwner leaseOwner
)

// self returns this process's leaseOwner.
func self() leaseOwner {
	selfOnce.Do(func() {
		h, _ := os.Hostname()
		b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
		ns, _ := os.Readlink("/proc/self/ns/pid")
		selfOwner = leaseOwner{host: h, boot: strings.TrimSpace(string(b)), pidNS: ns, pid: os.Getpid()}
		selfOwner.start, _ = procStart(selfOwner.pid)
	})
	return selfOwner
}

// procStart returns the start time of process pid in clock ticks since boot.
func procStart(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces; fields
	// after its closing parenthesis start at field 3 (proc(5)).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, errors.New("short /proc stat")
	}
	return strconv.ParseUint(f[19], 10, 64) // field 22
}

// lease is this instance's heartbeat in its claims folder.
type lease struct {
	dir   string
	owner leaseOwner
	seq   uint64
}

// renew writes the lease with the next sequence number: written beside and renamed
// over the old one, so a reader never sees half a lease. No fsync: a lease lost in a
// crash only looks older, which is the truth.
func (l *lease) renew(every time.Duration) error {
	l.seq++
	o := l.owner
	body := fmt.Sprintf("mxdrop-lease 1\nhost %s\nboot %s\npidns %s\npid %d\nstart %d\nseq %d\nrenew_every %s\nrenewed %s\n",
		o.host, o.boot, o.pidNS, o.pid, o.start, l.seq, every, time.Now().UTC().Format(time.RFC3339Nano))
	tmp := filepath.Join(l.dir, leaseFile+".tmp")
	if err := os.WriteFile(tmp, []byte(body), 0o640); err != nil {
		return fmt.Errorf("write lease: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(l.dir, leaseFile)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("renew lease: %w", err)
	}
	return nil
}

// releaseLease marks the lease of a claims folder whose instance has stopped cleanly:
// its leftover claims (transient errors) may be adopted at once.
func releaseLease(dir string) {
	tmp := filepath.Join(dir, leaseFile+".tmp")
	if os.WriteFile(tmp, []byte(leaseReleased), 0o640) == nil {
		if os.Rename(tmp, filepath.Join(dir, leaseFile)) != nil {
			os.Remove(tmp)
		}
	}
}

const leaseReleased = "mxdrop-lease 1\nreleased\n"

// readLease returns the lease file of claims folder dir ("" when there is none),
// bounded to 4 KiB: it is written by another instance, perhaps another version.
func readLease(dir string) (string, error) {
	f, err := os.Open(filepath.Join(dir, leaseFile))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	return string(b), err
}

// parseOwner reads the owner lines of a lease.
func parseOwner(content string) (o leaseOwner, ok bool) {
	for _, line := range strings.Split(content, "\n") {
		k, v, _ := strings.Cut(line, " ")
		switch k {
		case "host":
			o.host = v
		case "boot":
			o.boot = v
		case "pidns":
			o.pidNS = v
		case "pid":
			o.pid, _ = strconv.Atoi(v)
		case "start":
			o.start, _ = strconv.ParseUint(v, 10, 64)
		}
	}
	return o, o.boot != "" && o.pid > 0
}

// leaseSeen is what an observer last read in a foreign lease, and since when (on its
// own monotonic clock) it has read exactly that.
type leaseSeen struct {
	content string
	since   time.Time
}

// leaseObserver judges the claims folders of other instances.
type leaseObserver struct {
	me   leaseOwner
	now  func() time.Time
	seen map[string]leaseSeen // claims folder -> lease content
	// orphans is when each instance tag whose claim names have no claims folder was
	// first seen so (see orphanDead).
	orphans map[string]time.Time
}

func newLeaseObserver() *leaseObserver {
	return &leaseObserver{me: self(), now: time.Now, seen: map[string]leaseSeen{}, orphans: map[string]time.Time{}}
}

// dead reports whether the instance of claims folder dir is dead, given that its
// flock is free. shared says the drop folder is on a network or FUSE file system,
// where a free flock proves nothing; ttl is claim_lease.
func (o *leaseObserver) dead(dir string, shared bool, ttl time.Duration) (bool, string) {
	content, err := readLease(dir)
	if err != nil {
		return false, "lease unreadable: " + err.Error()
	}
	if content == leaseReleased {
		return true, "its instance stopped and released it"
	}
	if owner, ok := parseOwner(content); ok && owner.boot == o.me.boot && owner.pidNS == o.me.pidNS {
		// Written on this kernel, in this pid namespace: the process itself says
		// whether it lives. (A container on the same kernel has the same boot id
		// but its own pids; its lease is judged by expiry like another host's.)
		start, err := procStart(owner.pid)
		if err == nil && start == owner.start {
			return false, "owner process " + strconv.Itoa(owner.pid) + " is running on this host"
		}
		return true, "owner process " + strconv.Itoa(owner.pid) + " on this host has ended"
	}
	if !shared {
		if content == "" {
			return true, "lock free on a local file system, no lease"
		}
		if owner, ok := parseOwner(content); ok && owner.host == o.me.host {
			return true, "lock free; the lease is from an earlier boot of this host"
		}
	}
	now := o.now()
	s, ok := o.seen[dir]
	if !ok || s.content != content {
		o.seen[dir] = leaseSeen{content: content, since: now}
		return false, "lease renewed since last look"
	}
	if age := now.Sub(s.since); age < ttl {
		return false, "lease unchanged for " + age.Round(time.Second).String() + " of " + ttl.String()
	}
	return true, "lease not renewed for " + now.Sub(s.since).Round(time.Second).String()
}

// forget drops what the observer knows of a claims folder that is gone.
func (o *leaseObserver) forget(dir string) { delete(o.seen, dir) }

// runLease writes the lease of claims folder dir and renews it every ttl/3 until stop
// is closed; failed renewals go to warn (a share that is away for a moment), and
// renewed gets the time of each one that succeeded.
func runLease(dir string, ttl time.Duration, owner leaseOwner, stop <-chan struct{}, warn func(error), renewed func(time.Time)) {
	every := ttl / 3
	l := &lease{dir: dir, owner: owner}
	if err := l.renew(every); err != nil {
		warn(err)
	} else {
		renewed(time.Now())
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if err := l.renew(every); err != nil {
				warn(err)
			} else {
				renewed(time.Now())
			}
		}
	}
}
