package watcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxdrop/mxdrop/importer"
	"github.com/mxdrop/mxdrop/importer/durable"
	"github.com/mxdrop/mxdrop/importer/intake"
	"github.com/mxdrop/mxdrop/importer/quarantine"
)

// Connector is one drop folder's immutable processing setup. A configuration reload
// builds new Connectors; jobs in flight finish with the one they started with.
type Connector struct {
	Name       string
	DropFolder string
	Settle     time.Duration
	// Watch is auto, events or poll (see ChooseMode); "" means auto.
	Watch string
	// PollInterval is how often a polled drop folder is listed (0: 1s).
	PollInterval time.Duration
	// ClaimLease is how long a lease another host no longer renews protects its claims
	// on a share (0: 2m); this instance renews its own every ClaimLease/3.
	ClaimLease   time.Duration
	KeepImported bool
	// Intake imports, bounces, quarantines (into the drop folder's ImportFailed/),
	// logs and counts the claimed files; the connector acknowledges them.
	Intake *intake.Intake
	Log    zerolog.Logger
}

// watchDir is the folder files arrive in: new/ when the drop folder is itself a
// Maildir (Postfix virtual, Maildir-style writers), else the drop folder.
func (c *Connector) watchDir() string {
	nd := filepath.Join(c.DropFolder, "new")
	if fi, err := os.Stat(nd); err == nil && fi.IsDir() {
		return nd
	}
	return c.DropFolder
}

// isMaildir reports whether files arrive through a Maildir's new/: such files are
// complete by the Maildir convention (written in tmp/, renamed into new/).
func (c *Connector) isMaildir(dir string) bool { return dir != c.DropFolder }

// errNotRegular marks a claimed entry that is not a regular file (a symbolic link, a
// FIFO, a folder, a socket): it is never read.
var errNotRegular = errors.New("not a regular file")

// identity returns a claimed file's stable identity and arrival time. It does not
// follow a symbolic link, and an entry that is not a regular file is errNotRegular.
func identity(path string) (id string, size int64, mtime time.Time, err error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return "", 0, time.Time{}, err
	}
	if !fi.Mode().IsRegular() {
		return "", 0, time.Time{}, fmt.Errorf("%w (%s)", errNotRegular, fi.Mode().Type())
	}
	id, size, mtime = identityOf(path, fi)
	return id, size, mtime, nil
}

// openClaimed opens a claimed file for the whole of its import and returns it with its
// identity, from one open and one fstat: the header is read through it, a linked
// delivery links and syncs it (importer.Message.File), and no lookup by name is needed
// for the identity. When the open fails, or finds no regular file, the entry is looked
// up by name (identity) to tell why: gone (fs.ErrNotExist), not a regular file
// (errNotRegular: a symbolic link, which O_NOFOLLOW refuses; a FIFO, a socket, a
// folder), or a regular file mxdrop cannot open (that error).
func openClaimed(path string) (f *os.File, id string, size int64, mtime time.Time, err error) {
	var fi os.FileInfo
	f, fi, err = openRegularStat(path)
	if err != nil {
		if _, _, _, ierr := identity(path); ierr != nil {
			return nil, "", 0, time.Time{}, ierr
		}
		if errors.Is(err, errNotRegular) {
			// A regular file again by name: swapped since the open. Not wrapped, so
			// that it is tried again rather than quarantined as not regular.
			err = fmt.Errorf("claimed file changed while it was opened: %v", err)
		}
		return nil, "", 0, time.Time{}, err
	}
	id, size, mtime = identityOf(path, fi)
	return f, id, size, mtime, nil
}

// identityOf is the identity of the regular file path whose status is fi.
func identityOf(path string, fi os.FileInfo) (id string, size int64, mtime time.Time) {
	return Identity(OriginalName(path), fi), fi.Size(), fi.ModTime()
}

// Identity is the identity of a drop file called name (its own name, not a claim name)
// whose status is fi: name, size, mtime and inode. Its delivery names and its DSN's
// outbox entry derive from it (importer.Message.ID).
func Identity(name string, fi os.FileInfo) string {
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	return name + "|" + strconv.FormatInt(fi.Size(), 10) + "|" +
		strconv.FormatInt(fi.ModTime().UnixNano(), 10) + "|" + strconv.FormatUint(ino, 10)
}

// process hands one claimed file to the intake and acknowledges it: removed (or moved
// to Imported/) once every delivery and DSN is durable; quarantine moves it to
// ImportFailed/ itself. On a transient error the file stays claimed and Retry is
// returned. last is what an earlier attempt on the file delivered, or nil; the one
// returned is what the next attempt needs to know. detach, when not nil, is called
// once the copies are in place and only the wait for the disk remains before the
// acknowledgement (see Manager.runJob).
func (c *Connector) process(ctx context.Context, path string, recovered bool, last *delivered, detach func()) (intake.Outcome, *delivered) {
	start := time.Now()
	f, id, size, mtime, err := openClaimed(path)
	if f != nil {
		// Deferred before batch.Close, so it runs after it: the batch's data sync of a
		// linked delivery uses f (importer.Message.File).
		defer f.Close()
	}
	h := intake.Handover{File: path, Ack: intake.AckFunc(func(_ context.Context, out intake.Outcome) (string, error) {
		if out == intake.Quarantined {
			return "", nil // moved to ImportFailed/ by the quarantine
		}
		if c.KeepImported {
			return "kept", moveInto(filepath.Join(c.DropFolder, ImportedFolder), path, OriginalName(path))
		}
		return "removed", os.Remove(path)
	})}
	openByName := func() (io.ReadCloser, error) { return openRegular(path) }
	open := openByName
	if f != nil {
		// Every reader reads f from its first byte (pread), without opening the file
		// again; the reader's Close leaves f open.
		open = func() (io.ReadCloser, error) { return io.NopCloser(io.NewSectionReader(f, 0, math.MaxInt64)), nil }
	}
	h.Msg = importer.Message{
		ID: id, Name: OriginalName(path), Size: size, Arrived: mtime, Recovered: recovered,
		Open: open,
		// The claimed file is never written again, only removed or moved to
		// Imported/: a delivery may be the file itself, linked.
		Path: path,
		File: f,
	}
	// The deliveries' folder fsyncs and linked copies' data syncs wait until every
	// copy is in place, shared with the other files in flight (durable.SyncDir).
	batch := &durable.Batch{}
	defer batch.Close()
	h.Msg.Batch = batch
	h.Commit = func() error {
		stagePath(path, stageVisible)
		defer stagePath(path, stageSynced)
		if detach != nil {
			detach()
		}
		return batch.Sync()
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return c.vanished(path, last, start), last
	case errors.Is(err, errNotRegular):
		// Renaming moves the entry itself, never what a link points to: it is
		// quarantined unread.
		res := importer.Result{Outcome: importer.OutcomeRejected, Reason: "not_regular_file", Detail: err.Error()}
		return c.Intake.Reject(ctx, h, res), last
	case err != nil:
		return c.Intake.Retry(h, importer.Result{}, fmt.Errorf("claimed file unreadable: %w", err), start), last
	case last != nil && id != last.msg.ID:
		// Changed since an earlier attempt delivered it to some of its accounts and
		// kept it for a retry (a writer still had it open, or someone edited it). Its
		// new identity would give new delivery names, and those accounts a second
		// copy. It is set aside instead, under the identity of that delivery, so that
		// a replay (once an admin has looked at it) finds the copies made and delivers
		// only the rest. Only this process knows of the earlier attempt: a restart in
		// between recovers the file under its new identity.
		h.Msg.ID, h.Msg.Arrived = last.msg.ID, last.msg.Arrived
		res := importer.Result{Outcome: importer.OutcomeRejected, Reason: "changed_after_delivery",
			Detail: fmt.Sprintf("claimed file changed after its delivery to %s: now %d bytes, then %d",
				strings.Join(last.res.SortedAccounts(), ", "), size, last.msg.Size)}
		return c.Intake.Reject(ctx, h, res), last
	}
	out, res := c.Intake.Handle(ctx, h)
	if out == intake.Retry && len(res.Delivered) > 0 {
		// Kept for the next attempt, after f is closed: only its names are used.
		msg := h.Msg
		msg.File, msg.Open = nil, openByName
		return out, &delivered{msg: msg, res: res}
	}
	return out, last
}

// delivered is an import that made copies but whose file was not acknowledged: its
// DSN or its removal failed (complete), or a transient error stopped it before every
// account had its copy. It is enough to find its copies again.
type delivered struct {
	msg importer.Message
	res importer.Result
}

// complete reports whether every account was served (delivered, or failed for good).
func (d *delivered) complete() bool {
	return d.res.Outcome.DeliveredSome()
}

// found reports whether every copy is still in its Maildir under its deterministic
// name (in new/, or in cur/ where a reader moved it).
func (d *delivered) found() bool {
	for _, dl := range d.res.Delivered {
		md := importer.Maildir(filepath.Dir(filepath.Dir(dl.Path)))
		if _, ok := md.Find(importer.DeliveryName(d.msg, dl.Account)); !ok {
			return false
		}
	}
	return len(d.res.Delivered) > 0
}

// vanished ends a claimed file that someone else removed (an admin, a cleanup job).
// When an earlier attempt delivered it and every copy is still found, it is finished:
// only its acknowledgement, and a DSN still owed, go with the file. Otherwise its
// content is gone undelivered, which is reported once, at error level. Either way no
// retry can do more.
func (c *Connector) vanished(path string, last *delivered, start time.Time) intake.Outcome {
	name := OriginalName(path)
	if last != nil && last.complete() && last.found() {
		ev := c.Log.Warn().Str("file", name).Str("outcome", "vanished").Strs("accounts", last.res.SortedAccounts())
		if len(last.res.Failed) > 0 {
			ev = ev.Strs("failed", last.res.FailedRecipients())
		}
		ev.Msg("claimed file removed by someone else after its delivery: finished, no DSN sent for its failed recipients")
		if in := c.Intake; in.Observe != nil {
			in.Observe(intake.Event{Source: in.Source, Kind: in.Kind, Outcome: intake.Delivered,
				Result: importer.Result{Outcome: last.res.Outcome}, Duration: time.Since(start)})
		}
		return intake.Delivered
	}
	c.Log.Error().Str("file", name).Str("outcome", "vanished").
		Msg("claimed file removed by someone else before its delivery was complete: nothing left to import; not retried")
	return intake.Skipped
}

// moveInto renames path into folder (created when missing) as base, or a free variant.
func moveInto(folder, path, base string) error {
	if err := durable.MkdirAll(folder, 0o750); err != nil {
		return err
	}
	for i := 0; i < 1000; i++ {
		name := base
		if i > 0 {
			// Bounded as a quarantined name is: a variant of a name near NAME_MAX
			// would be too long, and the acknowledgement fail at every retry.
			name = quarantine.FitName(base) + "." + strconv.Itoa(i)
		}
		err := moveRename(path, filepath.Join(folder, name))
		if err == nil {
			return nil
		}
		if !os.IsExist(err) {
			return err
		}
	}
	return fmt.Errorf("no free name for %s in %s", base, folder)
}

// moveRename is moveInto's rename: without replacing, by moveByLink where the file
// system refuses RENAME_NOREPLACE.
var moveRename = func(src, dst string) error { return renameOr(src, dst, moveByLink) }

// moveByLink moves src to dst unless dst exists (os.ErrExist) where renames cannot
// refuse to replace (NFS): a hard link, which fails on a name taken on the server
// itself, then the removal of src. renameIfFree's look and rename would let two
// instances sharing Imported/ both find a name free, and the second rename replace the
// first one's file. A crash between the link and the removal leaves the claimed file,
// whose recovery finds its copies and comes here again (durable.LinkNew takes dst being
// src's own file as done).
//
// Only for a file this instance alone may move (its claimed file, after its import):
// while it has two names another instance could take the first.
func moveByLink(src, dst string) error {
	if err := durable.LinkNew(src, dst); err != nil {
		return err
	}
	if err := os.Remove(src); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// openRegular opens path for reading only if it is a regular file: O_NOFOLLOW refuses
// a symbolic link, O_NONBLOCK keeps a FIFO from blocking the open, and fstat on the
// open descriptor checks what is really read, whatever was swapped in since a check
// by name.
func openRegular(path string) (*os.File, error) {
	f, _, err := openRegularStat(path)
	return f, err
}

// openRegularStat is openRegular that also returns the open file's status.
func openRegularStat(path string) (*os.File, os.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("open %s: %w (%s)", path, errNotRegular, fi.Mode().Type())
	}
	return f, fi, nil
}
