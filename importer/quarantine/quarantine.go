// Package quarantine owns the ImportFailed/ layout: where a message that could not be
// imported waits, with its machine-readable reason and a copy of the DSN sent for it,
// until someone fixes the configuration and replays it. Every source quarantines through
// it (a connector's drop folder, a poller's state folder), and `mxdrop status`, the
// metrics and `mxdrop replay` read it through it.
//
// A quarantine folder holds, per message:
//
//	<name>            the message, byte for byte as the source had it
//	<name>.json       its Record (written first: a message is never without its reason)
//	<name>.dsn.eml    the DSN built for its failed recipients, when one was made
//	.<...>.tmp        an interrupted durable write (ignored, overwritten)
//
// A quarantine reserves <name> before it writes the reason and puts the message there
// (reserve): until then <name> holds a line naming the message it is reserved for.
//
// A connector's folder is <drop_folder>/ImportFailed; a poller's is
// <state_dir>/ImportFailed/<poller>. The unsent DSN (no relay configured) of a message
// delivered to some of its recipients is written as <name>.<digest of its
// identity>.dsn.eml, with no message beside it (bounce.Bouncer).
package quarantine

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/mxdrop/mxdrop/importer"
	"github.com/mxdrop/mxdrop/importer/durable"
)

// FolderName is the name of the quarantine folder inside a drop folder, and of the
// folder of the pollers' quarantine folders inside the state folder.
const FolderName = "ImportFailed"

const (
	recordSuffix = ".json"
	dsnSuffix    = ".dsn.eml"
)

// Record is the machine-readable reason written beside a quarantined message as
// <name>.json.
type Record struct {
	Time   time.Time `json:"time"`
	Source string    `json:"source"` // connector or poller name
	File   string    `json:"file"`   // the original file name or UID
	// ID and Arrived are the message's identity at its source (importer.Message): a
	// replay hands the message over again under them, so that its delivery names and
	// its DSN's outbox entry are the ones of the first attempt.
	ID         string             `json:"id,omitempty"`
	Arrived    time.Time          `json:"arrived,omitzero"`
	Outcome    importer.Outcome   `json:"outcome"`
	Reason     string             `json:"reason"`
	Detail     string             `json:"detail"`
	MessageID  string             `json:"message_id,omitempty"`
	Sender     string             `json:"sender"`
	Size       int64              `json:"size"`
	Recipients []importer.Failure `json:"recipients,omitempty"`
	Ignored    []string           `json:"ignored,omitempty"`
}

// NewRecord returns the quarantine record of a result.
func NewRecord(source, file string, res importer.Result) Record {
	sender := "<>"
	if res.Envelope.SenderKnown && res.Envelope.Sender != "" {
		sender = res.Envelope.Sender
	} else if !res.Envelope.SenderKnown {
		sender = ""
	}
	return Record{
		Time: time.Now().UTC(), Source: source, File: file, Outcome: res.Outcome,
		Reason: res.Reason, Detail: res.Detail, MessageID: res.MessageID, Sender: sender,
		Size: res.Size, Recipients: res.Failed, Ignored: res.Ignored,
	}
}

// Folder is one source's quarantine folder. It is created on the first Move or Write.
type Folder string

// ForConnector returns the quarantine folder of a connector's drop folder.
func ForConnector(dropFolder string) Folder { return Folder(filepath.Join(dropFolder, FolderName)) }

// ForPoller returns the quarantine folder of a poller.
func ForPoller(stateDir, poller string) Folder {
	return Folder(filepath.Join(stateDir, FolderName, poller))
}

// Path returns the folder's path.
func (f Folder) Path() string { return string(f) }

// Move moves the file src into the folder as name (src's base name when ""), or a free
// variant of it, with rec as <name>.json beside it, and returns the quarantined path. The reason
// file is durable before the message is moved, so a quarantined message always has its
// reason. src must be on the folder's file system. A src already in the folder (a
// replayed message that failed again) stays where it is; only its reason is rewritten.
func (f Folder) Move(src, name string, rec Record) (string, error) {
	if filepath.Clean(filepath.Dir(src)) == filepath.Clean(string(f)) {
		if err := f.writeRecord(filepath.Base(src), rec); err != nil {
			return "", err
		}
		return src, nil
	}
	if err := durable.MkdirAll(string(f), 0o750); err != nil {
		return "", err
	}
	if name == "" {
		name = filepath.Base(src)
	}
	name, err := f.reserve(name, rec.ID)
	if err != nil {
		return "", err
	}
	dst := filepath.Join(string(f), name)
	if err := f.writeRecord(name, rec); err != nil {
		os.Remove(dst)
		return "", err
	}
	// Over the reservation, which is this call's own.
	if err := os.Rename(src, dst); err != nil {
		os.Remove(dst + recordSuffix)
		os.Remove(dst)
		return "", fmt.Errorf("move into %s: %w", FolderName, err)
	}
	return dst, durable.SyncDir(string(f))
}

// Write writes a message read from r into the folder as name (or a free variant) with
// rec beside it, and returns the quarantined path: the quarantine of a source that has
// no file on the folder's file system (a poller). A reader error leaves nothing behind.
func (f Folder) Write(name string, r io.Reader, rec Record) (string, error) {
	if err := durable.MkdirAll(string(f), 0o750); err != nil {
		return "", err
	}
	name, err := f.reserve(name, rec.ID)
	if err != nil {
		return "", err
	}
	dir := string(f)
	if err := f.writeRecord(name, rec); err != nil {
		os.Remove(filepath.Join(dir, name))
		return "", err
	}
	// Written over the reservation; the temporary name is this call's own too.
	err = durable.WriteFile(dir, "."+name+".tmp", dir, name, 0o640, func(w io.Writer) error {
		_, err := io.Copy(w, r)
		return err
	})
	if err != nil {
		os.Remove(filepath.Join(dir, name+recordSuffix)) // no reason without its message
		os.Remove(filepath.Join(dir, name))
		return "", err
	}
	return filepath.Join(dir, name), nil
}

// WriteDSN writes dsn durably into the folder (created when missing) as
// <name>.dsn.eml and returns its path: the copy of a DSN beside the quarantined message
// called name, or an unsent DSN. An existing copy of the same name is replaced. name
// must be a plain file name.
func (f Folder) WriteDSN(name string, dsn []byte) (string, error) {
	if name == "" || name != filepath.Base(name) || name == "." || name == ".." {
		return "", fmt.Errorf("write dsn copy: %q is not a file name", name)
	}
	dir := string(f)
	if err := durable.MkdirAll(dir, 0o750); err != nil {
		return "", fmt.Errorf("write dsn copy: %w", err)
	}
	file := name + dsnSuffix
	err := durable.WriteFile(dir, "."+file+".tmp", dir, file, 0o640, func(w io.Writer) error {
		_, err := w.Write(dsn)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("write dsn copy: %w", err)
	}
	return filepath.Join(dir, file), nil
}

// Has reports whether a message called name is in the folder: a reservation (see
// reserve) is not one yet.
func (f Folder) Has(name string) bool {
	if _, err := os.Lstat(filepath.Join(string(f), name)); err != nil {
		return false
	}
	_, reserved := f.reservation(name)
	return !reserved
}

// Entry is one quarantined message.
type Entry struct {
	Name string
	Path string
	// ModTime is when it was quarantined (its reason file's mtime), else the message's
	// own mtime.
	ModTime time.Time
	// Record is its reason; nil when the reason file is missing or unreadable.
	Record *Record
	// DSN reports whether a DSN copy lies beside it.
	DSN bool
}

// List returns the quarantined messages, newest first, with their reasons. A missing
// folder is an empty quarantine.
func (f Folder) List() ([]Entry, error) {
	names, err := f.names()
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(names))
	for _, n := range names {
		if _, ok := f.reservation(n); ok {
			continue // its reason written, its message not yet in place (reserve)
		}
		e := Entry{Name: n, Path: filepath.Join(string(f), n)}
		if fi, err := os.Lstat(e.Path + recordSuffix); err == nil {
			e.ModTime = fi.ModTime()
		} else if fi, err := os.Lstat(e.Path); err == nil {
			e.ModTime = fi.ModTime()
		}
		if b, err := os.ReadFile(e.Path + recordSuffix); err == nil {
			var r Record
			if json.Unmarshal(b, &r) == nil {
				e.Record = &r
			}
		}
		e.DSN = f.exists(n + dsnSuffix)
		out = append(out, e)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].ModTime.After(out[j].ModTime) })
	return out, nil
}

// Count returns how many messages are quarantined; 0 when the folder cannot be read.
func (f Folder) Count() int {
	names, _ := f.names()
	return len(names)
}

// names returns the quarantined messages' names: regular files that are neither
// temporary files, DSN copies nor the reason file of a message beside them, nor
// reservations without a reason. It reads the folder and nothing more for messages
// with their reason (Count runs at every metrics scrape); List also leaves out a
// reservation whose reason is written.
func (f Folder) names() ([]string, error) {
	entries, err := os.ReadDir(string(f))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	present := make(map[string]bool, len(entries))
	for _, e := range entries {
		present[e.Name()] = true
	}
	var out []string
	for _, e := range entries {
		n := e.Name()
		if !e.Type().IsRegular() || strings.HasPrefix(n, ".") || strings.HasSuffix(n, dsnSuffix) {
			continue
		}
		if strings.HasSuffix(n, recordSuffix) && present[strings.TrimSuffix(n, recordSuffix)] {
			continue // the reason file of a message
		}
		if !present[n+recordSuffix] {
			if _, ok := f.reservation(n); ok {
				// A name reserved, its reason not yet written (reserve), or left so
				// by a crash until that message's next attempt takes it again.
				continue
			}
			if fi, err := e.Info(); err == nil && fi.Size() == 0 {
				// A reservation cut short before it said for whom (where links are
				// refused, reserve creates it, then writes): a message always has
				// its reason before it takes its name.
				continue
			}
		}
		out = append(out, n)
	}
	return out, nil
}

// Remove removes a quarantined message with its reason and DSN copy: the
// acknowledgement of a replay that delivered it.
func (f Folder) Remove(name string) error {
	dir := string(f)
	if err := os.Remove(filepath.Join(dir, name)); err != nil {
		return err
	}
	os.Remove(filepath.Join(dir, name+recordSuffix))
	os.Remove(filepath.Join(dir, name+dsnSuffix))
	return durable.SyncDir(dir)
}

// Restore moves the quarantined message name into the folder target (a drop folder)
// as as (its name at the source, or name when ""), which must not exist there, then
// removes its reason file and DSN copy. The file keeps its inode and mtime, so under
// its name at the source it keeps its identity (when it has not changed since).
//
// It links rather than renames: a link fails on a name taken, where a rename after a
// look would replace a file a writer dropped under that name in between. A crash
// between the link and the removal leaves the message in both folders; the import of
// the restored one and a later replay of the other find the same copies (same identity).
func (f Folder) Restore(name, target, as string) error {
	if as == "" {
		as = name
	}
	dst := filepath.Join(target, as)
	src := filepath.Join(string(f), name)
	if err := link(src, dst); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s already exists", dst)
		}
		if !noLinks(err) {
			return err
		}
		// No hard links here (some shares, or protected_hardlinks for a file of
		// another user): a look, then a rename.
		if _, err := os.Lstat(dst); err == nil {
			return fmt.Errorf("%s already exists", dst)
		}
		if err := os.Rename(src, dst); err != nil {
			return err
		}
	}
	if err := durable.SyncDir(target); err != nil {
		return err
	}
	if err := os.Remove(src); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	os.Remove(filepath.Join(string(f), name+recordSuffix))
	os.Remove(filepath.Join(string(f), name+dsnSuffix))
	return durable.SyncDir(string(f))
}

func (f Folder) writeRecord(name string, rec Record) error {
	dir := string(f)
	return durable.WriteFile(dir, "."+name+".json.tmp", dir, name+recordSuffix, 0o640, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rec)
	})
}

func (f Folder) exists(name string) bool {
	_, err := os.Lstat(filepath.Join(string(f), name))
	return err == nil
}

// maxName bounds a quarantined message's name, so that its longest companion
// ("."+name+".dsn.eml.tmp" beside a ".9999" variant) still fits NAME_MAX (255 bytes).
const maxName = 200

// FitName returns name, or when it is longer than maxName, a prefix of it and a short
// hash of the whole name: recognisable, and distinct for distinct long names. The
// prefix ends at a UTF-8 character boundary, so a name in UTF-8 stays valid UTF-8 (file
// managers, JSON logs). The reason record keeps the original name in its file field.
func FitName(name string) string {
	if len(name) <= maxName {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	keep := maxName - 17
	for keep > 0 && !utf8.RuneStart(name[keep]) {
		keep--
	}
	return name[:keep] + "-" + hex.EncodeToString(sum[:8])
}

// reserve makes name, or name.1, name.2 ..., this quarantine's own and returns it: the
// name is taken by a hard link to a file that says which message it is reserved for
// (id, the message's identity at its source), and a link, like an O_EXCL create, fails
// on a name taken: among this process's workers and among instances sharing the folder.
// Free names found by a look alone let two quarantines of same-named files (a writer
// that reuses names, two hosts) both take one name, and the second rename replaced the
// first message: lost. The caller then writes the reason and puts the message over the
// reservation, or removes both.
//
// The reservation is written under a temporary name of the message's own before it is
// linked, so that a name is never taken without saying for whom. A quarantine
// interrupted by a crash leaves its reservation, and perhaps its reason and that
// temporary file; the message, still claimed at its source, comes back with the same
// id and takes that name again (its temporary files too). On NFS a link whose reply
// was lost fails as taken on the retransmission: the reservation's content tells that
// it is this call's own. A reason file without its message and without a reservation
// (left by an earlier release) is reused the same way. But <n>.json may also be a
// quarantined message named so (its own reason is then <n>.json.json): n is not free
// then.
func (f Folder) reserve(name, id string) (string, error) {
	name = FitName(name)
	key := id
	if key == "" {
		key = strconv.FormatInt(time.Now().UnixNano(), 36) + "." + strconv.Itoa(os.Getpid()) // nothing to take again
	}
	sum := sha256.Sum256([]byte(key))
	tmp := filepath.Join(string(f), "."+hex.EncodeToString(sum[:8])+".reserved.tmp")
	if err := os.WriteFile(tmp, []byte(reservedFor+id+"\n"), 0o640); err != nil {
		return "", fmt.Errorf("reserve a name in %s: %w", FolderName, err)
	}
	defer os.Remove(tmp)
	for i := 0; i < 10000; i++ {
		n := name
		if i > 0 {
			n = name + "." + strconv.Itoa(i)
		}
		if f.exists(n+recordSuffix) && f.exists(n+recordSuffix+recordSuffix) {
			continue
		}
		err := link(tmp, filepath.Join(string(f), n))
		if noLinks(err) {
			err = createWith(filepath.Join(string(f), n), reservedFor+id+"\n")
		}
		if err == nil {
			return n, nil
		}
		if !errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("reserve a name in %s: %w", FolderName, err)
		}
		if r, ok := f.reservation(n); ok && id != "" && r == id {
			return n, nil
		}
	}
	return "", fmt.Errorf("no free name for %s in %s", name, string(f))
}

// link is durable.LinkNew (tests refuse links in its place, as some shares do).
var link = durable.LinkNew

// noLinks reports a link refused because the file system has no hard links (some
// shares), or because protected_hardlinks keeps a process from linking another user's
// file.
func noLinks(err error) bool {
	return errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ENOTSUP)
}

// createWith creates path with O_EXCL and writes content into it: where links are
// refused, a reservation that a crash between the two steps leaves empty, nobody's.
func createWith(path, content string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return err
	}
	_, err = f.WriteString(content)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// reservedFor starts a reservation's content; the message's id follows.
const reservedFor = "mxdrop: name reserved for the quarantine of "

// reservation reports whether n is a reservation, and for which message's id: a small
// regular file that says so, and no quarantined message with that content (its reason
// would give its size).
func (f Folder) reservation(n string) (id string, ok bool) {
	p := filepath.Join(string(f), n)
	fi, err := os.Lstat(p)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() > int64(len(reservedFor))+4096 {
		return "", false
	}
	b, err := os.ReadFile(p)
	if err != nil || !bytes.HasPrefix(b, []byte(reservedFor)) || !bytes.HasSuffix(b, []byte("\n")) {
		return "", false
	}
	if size, ok := f.recordSize(n); ok && size == int64(len(b)) {
		return "", false // a message that reads like one, with its reason
	}
	return string(b[len(reservedFor) : len(b)-1]), true
}

// recordSize is the message size n's reason names; ok is false when it has no
// readable reason.
func (f Folder) recordSize(n string) (size int64, ok bool) {
	b, err := os.ReadFile(filepath.Join(string(f), n+recordSuffix))
	if err != nil {
		return 0, false
	}
	var rec Record
	if json.Unmarshal(b, &rec) != nil {
		return 0, false
	}
	return rec.Size, true
}
