package importer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/mxdrop/mxdrop/importer/durable"
)

// A Target is a mail server that takes deliveries (LMTP, RFC 2033): one transaction
// per message for all its recipients, one answer per recipient. Its user database,
// Sieve rules, quotas and indexes are the server's. Package importer/lmtp implements it.
type Target interface {
	// Deliver sends the message write produces from sender ("" = the null sender) to
	// rcpts and returns one RcptResult per recipient, in the order of rcpts. An error
	// means the transaction did not complete (connection refused or dropped, a
	// timeout): the results returned with it (possibly none) are the recipients whose
	// answer is known; every other recipient is to be tried again. write may be
	// called at most once and streams the message.
	Deliver(ctx context.Context, sender string, rcpts []string, write func(io.Writer) error) ([]RcptResult, error)
}

// RcptResult is a server's answer for one recipient.
type RcptResult struct {
	Rcpt string
	// Status is the zero Status when the server accepted the message for Rcpt, else
	// its reply code and enhanced code (Text is "" : the server's words are in Reply).
	Status Status
	// Reply is the server's reply line, for the DSN's Diagnostic-Code.
	Reply string
}

// maxDiagnostic bounds a server's reply kept for a DSN.
const maxDiagnostic = 400

// importTarget delivers a routed message through im.opts.Target. targets maps each
// RCPT address to the recipients routed to it. Recipients the server accepted on an
// earlier attempt of the same message (kept under ProgressDir) are not sent again.
func (im *Importer) importTarget(ctx context.Context, msg Message, h *Header, res *Result, order []string, targets map[string][]string) error {
	done := map[string]bool{}
	if msg.Recovered {
		done = im.progress(msg.ID)
	}
	var send []string
	for _, rcpt := range order {
		if done[rcpt] {
			res.Delivered = append(res.Delivered, Delivery{Account: rcpt, Recipients: targets[rcpt], Path: "lmtp", Existing: true})
			continue
		}
		send = append(send, rcpt)
	}
	var extra []string
	if im.opts.Spam != nil && len(send) > 0 {
		check := im.opts.SpamCheckAll
		for _, r := range send {
			check = check || im.accounts[r].SpamCheck
		}
		if check {
			sv := im.classify(ctx, msg, h, res.Envelope)
			reason := sv.reason
			if sv.checked {
				reason = sv.v.Reason
			}
			res.Spam = &SpamResult{Spam: sv.v.Spam, Checked: sv.checked, Score: sv.v.Score, Reason: reason}
			extra = spamFields(sv.v, sv.checked, sv.reason)
		}
	}
	mine := map[string]bool{}
	for _, r := range send {
		for a := range ownAddresses(im.accounts[r], append([]string{r}, targets[r]...)) {
			mine[a] = true
		}
	}
	write := func(w io.Writer) error {
		rc, err := msg.openSized()
		if err != nil {
			return fmt.Errorf("reopen message: %w", err)
		}
		defer rc.Close()
		// The server writes Return-Path and Delivered-To itself.
		return writeMessage(w, rc, h, res.Envelope, "", mine, extra)
	}
	sender := ""
	if res.Envelope.SenderKnown {
		sender = res.Envelope.Sender
	}
	var results []RcptResult
	var err error
	if len(send) > 0 {
		results, err = im.opts.Target.Deliver(ctx, sender, send, write)
	}
	answered := map[string]bool{}
	var temp *RcptResult
	for i := range results {
		r := &results[i]
		answered[r.Rcpt] = true
		switch {
		case r.Status.IsZero():
			done[r.Rcpt] = true
			res.Delivered = append(res.Delivered, Delivery{Account: r.Rcpt, Recipients: targets[r.Rcpt], Path: "lmtp"})
		case r.Status.Temporary():
			if temp == nil {
				temp = r
			}
		default:
			reply := r.Reply
			if len(reply) > maxDiagnostic {
				reply = reply[:maxDiagnostic]
			}
			rcpts := targets[r.Rcpt]
			if len(rcpts) == 0 {
				rcpts = []string{r.Rcpt}
			}
			for _, orig := range rcpts {
				res.Failed = append(res.Failed, Failure{Recipient: orig, Status: r.Status.Enhanced, Reason: r.Status.Text, Rule: "server", Diagnostic: reply})
			}
		}
	}
	if err == nil && temp == nil {
		for _, r := range send {
			if !answered[r] {
				err = fmt.Errorf("no answer for %s", r)
			}
		}
	}
	if err != nil || temp != nil {
		// Keep what the server accepted, so that the retry does not send it again.
		if perr := im.saveProgress(msg.ID, done, pendingSuffix); perr != nil {
			return &Error{Status: StatusLocalError, Op: "keep lmtp progress", Err: perr}
		}
		if err != nil {
			return &Error{Status: Status{451, "4.4.2", "mail server unavailable"}, Op: "deliver over lmtp", Err: err}
		}
		st := temp.Status
		st.Text = "mail server answered " + temp.Reply
		return &Error{Status: st, Op: "deliver over lmtp to " + temp.Rcpt, Err: errors.New(temp.Reply)}
	}
	// Finished. The source acknowledges the message next; should mxdrop die before it
	// does, the retry finds this note and sends nothing again. A process crash keeps
	// the page cache, so the note needs no fsync: only a power loss in the
	// milliseconds before the acknowledgement can still duplicate (see doneFor).
	if len(results) > 0 && len(done) > 0 && im.opts.ProgressDir != "" {
		if perr := im.notes.add(im.opts.ProgressDir, msg.ID, done); perr != nil {
			return &Error{Status: StatusLocalError, Op: "note lmtp delivery", Err: perr}
		}
	}
	if msg.Recovered {
		im.dropProgress(msg.ID, pendingSuffix)
	}
	return nil
}

// progressPath is the file that keeps the recipients a server accepted for message
// id while other recipients wait for a retry; "" without a ProgressDir.
func (im *Importer) progressPath(id string) string {
	if im.opts.ProgressDir == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(id))
	return filepath.Join(im.opts.ProgressDir, hex.EncodeToString(sum[:16]))
}

// maxProgress bounds the progress file read back, and a journal line.
const maxProgress = 1 << 20

// Progress notes: a ".pending" file per message while recipients wait for a retry
// (fsynced, removed when the message is finished); once the server answered every
// recipient, a line in a journal of finished deliveries (see doneNotes), not fsynced,
// kept at least doneFor: by then the source has acknowledged the message. ".done"
// files, one per message, are what earlier versions wrote; they are still read and
// swept.
const (
	pendingSuffix = ".pending"
	doneSuffix    = ".done"
	doneFor       = 10 * time.Minute
)

// progress returns the recipients the server accepted on earlier attempts of id.
func (im *Importer) progress(id string) map[string]bool {
	done := map[string]bool{}
	p := im.progressPath(id)
	if p == "" {
		return done
	}
	for _, suffix := range []string{pendingSuffix, doneSuffix} {
		f, err := os.Open(p + suffix)
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(io.LimitReader(f, maxProgress))
		f.Close()
		lines := strings.Split(string(b), "\n")
		if len(lines) == 0 || lines[0] != oneLine(id) {
			continue // another message's file (a hash collision is not expected)
		}
		for _, l := range lines[1:] {
			if l != "" {
				done[l] = true
			}
		}
	}
	readJournals(im.opts.ProgressDir, id, done)
	return done
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

// saveProgress writes id's ".pending" file, fsynced, with the recipients in done.
func (im *Importer) saveProgress(id string, done map[string]bool, suffix string) error {
	p := im.progressPath(id)
	if p == "" || len(done) == 0 {
		return nil
	}
	dir := filepath.Dir(p)
	if err := durable.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString(oneLine(id) + "\n")
	for r := range done {
		b.WriteString(r + "\n")
	}
	return durable.WriteFile(dir, filepath.Base(p)+".tmp", dir, filepath.Base(p)+suffix, 0o600, func(w io.Writer) error {
		_, err := io.WriteString(w, b.String())
		return err
	})
}

func (im *Importer) dropProgress(id, suffix string) {
	if p := im.progressPath(id); p != "" {
		os.Remove(p + suffix)
	}
}

// Journals of finished deliveries are ProgressDir/done-*.log.
const (
	journalPrefix = "done-"
	journalSuffix = ".log"
)

// doneNotes notes an Importer's finished LMTP deliveries in a journal of its own: one
// line per message, the message's id and the recipients the server accepted, separated
// by NUL. A new journal is started every doneFor, and a journal untouched for twice
// that is swept. Appending a line to an existing file costs no inode and no directory
// entry: a file per message did (create, write, rename), and at 16 LMTP sessions that
// was half of mxdrop's CPU time in mxdrop-bench -mode lmtp, more than the protocol.
// The zero value is ready to use.
type doneNotes struct {
	mu     sync.Mutex
	name   string    // the journal being appended to; "" before the first
	opened time.Time // when it was created
	swept  time.Time // when the folder was last swept
}

// add appends id's line to the journal in dir.
func (n *doneNotes) add(dir, id string, done map[string]bool) error {
	var b strings.Builder
	b.WriteString(journalField(id))
	for r := range done {
		b.WriteByte(0)
		b.WriteString(journalField(r))
	}
	b.WriteByte('\n')
	n.mu.Lock()
	defer n.mu.Unlock()
	now := time.Now()
	if n.name == "" || now.Sub(n.opened) > doneFor {
		if err := n.start(dir, now); err != nil {
			return err
		}
	}
	// Opened for each line, so that no descriptor outlives the Importer (a reload
	// replaces Importers). O_APPEND without O_CREATE: a journal swept away meanwhile
	// is started again, not recreated half-empty under its old name.
	f, err := os.OpenFile(n.name, os.O_WRONLY|os.O_APPEND, 0)
	if errors.Is(err, fs.ErrNotExist) {
		if err = n.start(dir, now); err == nil {
			f, err = os.OpenFile(n.name, os.O_WRONLY|os.O_APPEND, 0)
		}
	}
	if err != nil {
		return err
	}
	_, err = f.WriteString(b.String())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		n.name = "" // a short write may have left half a line: start a new journal
		return err
	}
	if now.Sub(n.swept) > time.Minute {
		n.swept = now
		go sweep(dir)
	}
	return nil
}

// start creates a new journal in dir.
func (n *doneNotes) start(dir string, now time.Time) error {
	if err := durable.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, journalPrefix+"*"+journalSuffix)
	if err != nil {
		return err
	}
	n.name, n.opened = f.Name(), now
	return f.Close()
}

// journalField is s as a field of a journal line.
func journalField(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == 0 {
			return ' '
		}
		return r
	}, s)
}

// readJournals adds to done the recipients the journals in dir hold for id. Only the
// journals whose index (see journalIndex) holds id are read. A line longer than
// maxProgress ends the reading of its journal.
func readJournals(dir, id string, done map[string]bool) {
	want := journalField(id) + "\x00"
	for _, name := range indexFor(dir).candidates(dir, journalField(id)) {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, maxProgress)
		for sc.Scan() {
			l := sc.Text()
			if rest, ok := strings.CutPrefix(l, want); ok {
				for _, r := range strings.Split(rest, "\x00") {
					if r != "" {
						done[r] = true
					}
				}
			}
		}
		f.Close()
	}
}

// isJournal reports whether name is a journal of finished deliveries.
func isJournal(name string) bool {
	return strings.HasPrefix(name, journalPrefix) && strings.HasSuffix(name, journalSuffix)
}

// journalIndexes holds a *journalIndex per progress folder, shared by the Importers of
// every configuration generation (each reads the journals of all of them).
var journalIndexes sync.Map

func indexFor(dir string) *journalIndex {
	x, _ := journalIndexes.LoadOrStore(dir, &journalIndex{files: map[string]*journalFile{}})
	return x.(*journalIndex)
}

// journalIndex knows which message ids each journal of a folder notes, so that a
// recovered message reads only the journals that hold its line, not every journal.
// Every message retried after a temporary error is a recovered one: during a mail
// server outage thousands of them would otherwise each read up to half an hour of
// journals. The index is brought up to date on each lookup by reading only what was
// appended since; it keeps 8 bytes and map overhead per line of the journals not yet
// swept (about 30 MB for a million deliveries in the last 20 to 30 minutes).
type journalIndex struct {
	mu    sync.Mutex
	files map[string]*journalFile
}

type journalFile struct {
	read int64               // bytes indexed, whole lines only
	ids  map[uint64]struct{} // hashes of the ids of those lines
	bad  bool                // could not be indexed: always a candidate
}

// candidates returns the journals in dir that may hold a line of id (a journal field).
func (x *journalIndex) candidates(dir, id string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	key := idHash([]byte(id))
	x.mu.Lock()
	defer x.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	for _, e := range ents {
		name := e.Name()
		if !isJournal(name) {
			continue
		}
		seen[name] = true
		jf := x.files[name]
		if jf == nil {
			jf = &journalFile{ids: map[uint64]struct{}{}}
			x.files[name] = jf
		}
		jf.update(filepath.Join(dir, name))
		if _, ok := jf.ids[key]; ok || jf.bad {
			out = append(out, name)
		}
	}
	for name := range x.files {
		if !seen[name] {
			delete(x.files, name) // swept
		}
	}
	return out
}

// update indexes the whole lines appended to the journal at path since the last call.
// A line still being written (no newline yet) is indexed once it is whole.
func (jf *journalFile) update(path string) {
	if jf.bad {
		return
	}
	f, err := os.Open(path)
	if err != nil {
		jf.bad = true
		return
	}
	defer f.Close()
	if _, err := f.Seek(jf.read, io.SeekStart); err != nil {
		jf.bad = true
		return
	}
	br := bufio.NewReaderSize(f, 64<<10)
	var line int64 // bytes of the current line read so far
	for {
		chunk, err := br.ReadSlice('\n')
		if line == 0 && len(chunk) > 0 {
			// The id is the line's first field: before the first NUL, or the line.
			id := bytes.TrimSuffix(chunk, []byte("\n"))
			if i := bytes.IndexByte(id, 0); i >= 0 {
				id = id[:i]
			}
			if err == nil || errors.Is(err, bufio.ErrBufferFull) {
				jf.ids[idHash(id)] = struct{}{}
			}
		}
		line += int64(len(chunk))
		if errors.Is(err, bufio.ErrBufferFull) {
			continue // a long line: its id is noted, skip to its end
		}
		if err != nil {
			return // the end, or a line not yet whole: read again from jf.read next time
		}
		jf.read += line
		line = 0
	}
}

// idHash is the index key of a journal id.
func idHash(id []byte) uint64 {
	h := fnv.New64a()
	h.Write(id)
	return h.Sum64()
}

// sweep removes, in the background, the ".done" files older than doneFor and the
// journals untouched for twice that (a journal is appended to for doneFor at most).
func sweep(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	defer d.Close()
	for {
		ents, err := d.ReadDir(1024)
		for _, e := range ents {
			name := e.Name()
			age := doneFor
			switch {
			case strings.HasSuffix(name, doneSuffix):
			case strings.HasPrefix(name, journalPrefix) && strings.HasSuffix(name, journalSuffix):
				age = 2 * doneFor
			default:
				continue
			}
			if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > age {
				os.Remove(filepath.Join(dir, name))
			}
		}
		if err != nil {
			return
		}
	}
}
