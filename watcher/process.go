package watcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxdrop/mxdrop/bounce"
	"github.com/mxdrop/mxdrop/importer"
	"github.com/mxdrop/mxdrop/importer/durable"
)

// Bouncer turns a message's failed recipients into a DSN. Bounce must make the DSN
// durable (or decide to suppress it, returning a nil DSN) before it returns: the source
// file is acknowledged right after. It returns the DSN it built, which is kept beside a
// quarantined original. An error means the source must keep the message and retry.
type Bouncer interface {
	Bounce(ctx context.Context, source string, msg importer.Message, res importer.Result) (dsn []byte, err error)
}

// Outcome of processing one claimed file, for counters.
type Outcome int

const (
	Imported    Outcome = iota // delivered to every (or some) account
	Quarantined                // moved to ImportFailed/
	Retry                      // transient error: kept in the claims folder
	Skipped                    // not taken (claimed elsewhere, vanished)
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
	Importer     *importer.Importer
	Bouncer      Bouncer // nil: no DSNs
	Log          zerolog.Logger
	// Observe, when not nil, is called once per processed file with the import's
	// result and what became of the file: the metrics hook.
	Observe func(connector string, res importer.Result, out Outcome, d time.Duration)
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
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	mtime = fi.ModTime()
	id = filepath.Base(path) + "|" + strconv.FormatInt(fi.Size(), 10) + "|" +
		strconv.FormatInt(mtime.UnixNano(), 10) + "|" + strconv.FormatUint(ino, 10)
	return id, fi.Size(), mtime, nil
}

// process imports one claimed file and acknowledges it: removed (or moved to
// Imported/) once every delivery and DSN is durable, or quarantined in ImportFailed/.
// On a transient error the file stays claimed and Retry is returned.
// last is what an earlier attempt on the file delivered, or nil; the one returned is
// what the next attempt needs to know.
func (c *Connector) process(ctx context.Context, path string, recovered bool, last *delivered) (Outcome, *delivered) {
	start := time.Now()
	var res importer.Result
	var msg importer.Message
	out := c.processResult(ctx, path, recovered, last, start, &msg, &res)
	if c.Observe != nil {
		c.Observe(c.Name, res, out, time.Since(start))
	}
	if out == Retry && (res.Outcome == importer.OutcomeDelivered || res.Outcome == importer.OutcomePartial) {
		return out, &delivered{msg: msg, res: res}
	}
	return out, last
}

// delivered is an import whose every copy is durable but whose file was not
// acknowledged (its DSN or its removal failed): enough to find its copies again.
type delivered struct {
	msg importer.Message
	res importer.Result
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
func (c *Connector) vanished(path string, last *delivered, resp *importer.Result) Outcome {
	name := filepath.Base(path)
	if last != nil && last.found() {
		resp.Outcome = last.res.Outcome
		ev := c.Log.Warn().Str("file", name).Str("outcome", "vanished").Strs("accounts", last.res.SortedAccounts())
		if len(last.res.Failed) > 0 {
			ev = ev.Strs("failed", last.res.FailedRecipients())
		}
		ev.Msg("claimed file removed by someone else after its delivery: finished, no DSN sent for its failed recipients")
		return Imported
	}
	c.Log.Error().Str("file", name).Str("outcome", "vanished").
		Msg("claimed file removed by someone else before its delivery was complete: nothing left to import; not retried")
	return Skipped
}

func (c *Connector) processResult(ctx context.Context, path string, recovered bool, last *delivered, start time.Time, msgp *importer.Message, resp *importer.Result) Outcome {
	id, size, mtime, err := identity(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return c.vanished(path, last, resp)
	case errors.Is(err, errNotRegular):
		// Renaming moves the entry itself, never what a link points to.
		res := importer.Result{Outcome: importer.OutcomeRejected, Reason: "not_regular_file", Detail: err.Error()}
		*resp = res
		folder := filepath.Join(c.DropFolder, importer.FailedFolder)
		if _, qerr := importer.Quarantine(folder, path, importer.NewRecord(c.Name, filepath.Base(path), res)); qerr != nil {
			c.Log.Error().Err(qerr).Str("file", filepath.Base(path)).Msg("claimed entry is not a regular file and cannot be quarantined")
			return Retry
		}
		c.Log.Warn().Str("file", filepath.Base(path)).Str("outcome", "quarantined").Str("reason", "not_regular_file").
			Str("detail", err.Error()).Msg("claimed entry is not a regular file: quarantined unread")
		return Quarantined
	case err != nil:
		c.Log.Error().Err(err).Str("file", filepath.Base(path)).Msg("claimed file unreadable")
		return Retry
	}
	msg := importer.Message{
		ID: id, Name: filepath.Base(path), Size: size, Arrived: mtime, Recovered: recovered,
		Open: func() (io.ReadCloser, error) { return openRegular(path) },
	}
	*msgp = msg
	res, err := c.Importer.Import(ctx, msg)
	*resp = res
	if err != nil {
		importer.LogResult(c.Log, msg, res, "retry", err, start)
		return Retry
	}
	switch res.Outcome {
	case importer.OutcomeDelivered, importer.OutcomePartial:
		if len(res.Failed) > 0 && c.Bouncer != nil {
			if _, err := c.Bouncer.Bounce(ctx, c.Name, msg, res); err != nil {
				importer.LogResult(c.Log, msg, res, "retry", fmt.Errorf("bounce: %w", err), start)
				return Retry
			}
		}
		action := "removed"
		if c.KeepImported {
			action = "kept"
			err = moveInto(filepath.Join(c.DropFolder, ImportedFolder), path)
		} else {
			err = os.Remove(path)
		}
		if err != nil {
			importer.LogResult(c.Log, msg, res, "retry", fmt.Errorf("acknowledge: %w", err), start)
			return Retry
		}
		importer.LogResult(c.Log, msg, res, action, nil, start)
		return Imported
	default:
		// The DSN is durable before the original leaves the claims folder: a crash in
		// between re-imports the message, and the outbox recognises the DSN by the
		// message identity.
		var dsn []byte
		if len(res.Failed) > 0 && c.Bouncer != nil {
			if dsn, err = c.Bouncer.Bounce(ctx, c.Name, msg, res); err != nil {
				importer.LogResult(c.Log, msg, res, "retry", fmt.Errorf("bounce: %w", err), start)
				return Retry
			}
		}
		folder := filepath.Join(c.DropFolder, importer.FailedFolder)
		q, err := importer.Quarantine(folder, path, importer.NewRecord(c.Name, msg.Name, res))
		if err != nil {
			importer.LogResult(c.Log, msg, res, "retry", fmt.Errorf("quarantine: %w", err), start)
			return Retry
		}
		if dsn != nil {
			if _, err := bounce.WriteCopy(folder, filepath.Base(q), dsn); err != nil {
				c.Log.Warn().Err(err).Str("file", msg.Name).Msg("could not keep a copy of the DSN beside the quarantined message")
			}
		}
		importer.LogResult(c.Log, msg, res, "quarantined", nil, start)
		return Quarantined
	}
}

// moveInto renames path into folder (created when missing) under a free name.
func moveInto(folder, path string) error {
	if err := durable.MkdirAll(folder, 0o750); err != nil {
		return err
	}
	base := filepath.Base(path)
	for i := 0; i < 1000; i++ {
		name := base
		if i > 0 {
			name = base + "." + strconv.Itoa(i)
		}
		err := renameNoReplace(path, filepath.Join(folder, name))
		if err == nil {
			return nil
		}
		if !os.IsExist(err) {
			return err
		}
	}
	return fmt.Errorf("no free name for %s in %s", base, folder)
}

// openRegular opens path for reading only if it is a regular file: O_NOFOLLOW refuses
// a symbolic link, O_NONBLOCK keeps a FIFO from blocking the open, and fstat on the
// open descriptor checks what is really read, whatever was swapped in since a check
// by name.
func openRegular(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("open %s: %w (%s)", path, errNotRegular, fi.Mode().Type())
	}
	return f, nil
}
