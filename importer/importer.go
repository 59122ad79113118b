// Package importer is mxdrop's core: a Message in, a Result out. It reads the envelope
// from the message's source or its header block, routes every recipient to a local
// account, and delivers one durable copy per account into its Maildir. It knows nothing
// of drop folders or POP3: sources hand it Messages and act on the Result (remove the
// source, quarantine it, bounce failed recipients).
package importer

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer/durable"
)

// Message is what a source hands the importer.
type Message struct {
	// ID is the message's stable identity at its source: drop file name, size and
	// mtime; poller, UIDVALIDITY and UID. Delivery file names derive from it, so a
	// repeated import of one ID can be recognised.
	ID string
	// Name labels the message in logs (a file name, a UID).
	Name string
	// Size in bytes; -1 if unknown.
	Size int64
	// Arrived is when the source received the message. It must be the same on every
	// attempt for one ID (a file's mtime, a UID's first-seen time): it is part of the
	// delivery file names.
	Arrived time.Time
	// Open returns a new reader of the raw message from its first byte. The importer
	// calls it once per delivery and closes what it returns.
	Open func() (io.ReadCloser, error)
	// Envelope, when not nil, is the envelope the source knows; otherwise it is read
	// from the header block.
	Envelope *Envelope
	// Header, when not nil, is the message's header block as ReadHeader parsed it from
	// Open's bytes (the source read it already); the importer does not read it again.
	Header *Header
	// Batch, when not nil, defers the fsync of the Maildir folders the deliveries are
	// renamed into (and of the folders where a recovered message's deliveries were
	// found) and the data sync of linked deliveries: the deliveries are durable only
	// once the caller's Batch.Sync has returned nil. A source importing many messages at
	// once fsyncs each folder once that way; the drop folder makes a linked copy visible
	// before it waits for the disk.
	Batch *durable.Batch
	// Lookup, when not nil, shares the listings of cur/ folders among the recovered
	// messages of a batch (see Lookup).
	Lookup *Lookup
	// Path, when not "", is the message's own file: a regular file holding exactly
	// Open's bytes. When a delivery would write those bytes unchanged (one account,
	// nothing prepended or removed, see identicalCopy) and the Maildir is on the same
	// file system, the importer links the file into the Maildir instead of copying it
	// (durable.LinkTemp says which files it refuses). The delivered copy then shares
	// the file's inode: the source must never write the file again; removing it or
	// renaming it away (an Imported/ folder) is fine.
	Path string
	// File, when not nil, is Path open for reading (with O_NOFOLLOW; a regular file),
	// held by the source for the whole import: a linked delivery uses it instead of
	// opening Path again (durable.LinkTemp). The source closes it only after the
	// import has returned.
	File *os.File
	// Recovered marks a message whose earlier import may have been interrupted (a
	// claim found at start-up, a retry after a transient error, a UID left in flight).
	// Before each delivery the target Maildir is searched for the delivery's file name
	// and the delivery is skipped when it is already there.
	Recovered bool
}

// Importer imports messages for one source (a connector or a poller). It is immutable
// and safe for concurrent use.
type Importer struct {
	opts     Options
	router   *Router
	accounts map[string]configs.Account // normalised address -> account

	notes doneNotes // finished LMTP deliveries (target.go)
}

// Options configure an Importer.
type Options struct {
	Accounts  []configs.Account
	Domains   []string // accepted domains; "." = all
	Mailboxes []string // accounts served; empty = all
	DeliverTo string   // every message goes to this account
	UnknownTo string   // account for unknown recipients of accepted domains; "" = fail them
	// EnvelopeHeaders lists the envelope conventions tried (DefaultEnvelopeHeaders if empty).
	EnvelopeHeaders []string
	// MaxMessageSize quarantines larger messages; 0 = no limit.
	MaxMessageSize int64
	// Spam, when not nil, judges messages for accounts with spam_check, or for every
	// account when SpamCheckAll (a connector's or poller's spam_check). Spam goes to
	// the account's SpamFolder (Maildir++, default "Junk").
	Spam         Classifier
	SpamCheckAll bool
	SpamFolder   string
	// Target, when not nil, receives every routed recipient instead of the accounts'
	// Maildirs (delivery: lmtp): accounts map aliases, +tag and catch-all to their
	// address, and every other recipient of an accepted domain goes to the server as
	// it is. Accounts need no Maildir then.
	Target Target
	// ProgressDir keeps, per message, the recipients the Target accepted while others
	// wait for a retry (state_dir/lmtp); "" keeps nothing.
	ProgressDir string
}

// New returns an Importer, or an error when the options name accounts that do not exist.
func New(opts Options) (*Importer, error) {
	r, err := buildRouter(opts.Accounts, opts.Domains, opts.Mailboxes, opts.DeliverTo, opts.UnknownTo, opts.Target != nil)
	if err != nil {
		return nil, err
	}
	im := &Importer{opts: opts, router: r, accounts: map[string]configs.Account{}}
	for _, a := range opts.Accounts {
		if strings.TrimSpace(a.Maildir) == "" && opts.Target == nil {
			// Maildir("") would deliver into the working folder.
			return nil, fmt.Errorf("account %s has no maildir", a.Address)
		}
		n, _ := NormalizeAddress(a.Address)
		im.accounts[n] = a
	}
	return im, nil
}

// Router returns the importer's router.
func (im *Importer) Router() *Router { return im.router }

// Outcome says what became of a message as a whole.
type Outcome string

const (
	// OutcomeDelivered: every recipient that was ours was delivered.
	OutcomeDelivered Outcome = "delivered"
	// OutcomePartial: delivered to some accounts; Failed lists the recipients to bounce.
	OutcomePartial Outcome = "partial"
	// OutcomeFailed: no recipient could be delivered; the source quarantines the
	// message and Failed lists the recipients to bounce.
	OutcomeFailed Outcome = "failed"
	// OutcomeRejected: the input is not a message mxdrop can import (Reason says why);
	// the source quarantines it. Nothing is bounced.
	OutcomeRejected Outcome = "rejected"
)

// DeliveredSome reports whether o is OutcomeDelivered or OutcomePartial: the message
// has its copies in at least one account and every recipient was served, so it is
// acknowledged at its source, not quarantined.
func (o Outcome) DeliveredSome() bool { return o == OutcomeDelivered || o == OutcomePartial }

// Result is what Import did with a message.
type Result struct {
	Outcome   Outcome
	Reason    string // machine-readable reason for failed and rejected outcomes
	Detail    string // for people
	MessageID string
	Subject   string
	Envelope  Envelope
	Size      int64
	Delivered []Delivery
	Failed    []Failure
	Ignored   []string // recipients that were not ours (guessed, outside accepted domains)
	// Header is the parsed header block (nil for a rejected message); the bounce
	// package uses it for loop rules and the DSN's text/rfc822-headers part.
	Header *Header
	// Spam is the spam check's outcome; nil when no delivery was checked.
	Spam *SpamResult
}

// SpamResult is what the spam check said of a message.
type SpamResult struct {
	Spam    bool
	Checked bool // false: the check failed and the message went to the inbox
	Score   float64
	Reason  string // the rule that fired, or why it was not checked
}

// Delivery is one durable copy in one account's Maildir.
type Delivery struct {
	Account    string   `json:"account"`
	Recipients []string `json:"recipients"`
	Path       string   `json:"path"`
	// Folder is the Maildir++ folder the copy went to ("" = the inbox).
	Folder string `json:"folder,omitempty"`
	// Existing is true when a recovered message's copy was found already delivered.
	Existing bool `json:"existing,omitempty"`
	// Linked is true when the copy is the message's own file (Message.Path), hard
	// linked into the Maildir instead of written.
	Linked bool `json:"linked,omitempty"`
}

// Failure is a recipient that cannot be delivered.
type Failure struct {
	Recipient string `json:"recipient"`
	Status    string `json:"status"` // enhanced status code, "5.1.1"
	Reason    string `json:"reason"`
	Rule      string `json:"rule"`
	// Diagnostic is the mail server's reply for a recipient it refused (LMTP), for
	// the DSN's Diagnostic-Code; "" for mxdrop's own refusals.
	Diagnostic string `json:"diagnostic,omitempty"`
}

// Import routes msg and delivers it into every target account's Maildir. It returns an
// error only for transient trouble (disk full, permission denied, a source that cannot
// be read): the source then keeps the message and retries with Recovered set. Input
// that is not a message is a Result with OutcomeRejected; undeliverable recipients are
// Failures. Import never writes to the source.
func (im *Importer) Import(ctx context.Context, msg Message) (Result, error) {
	res := Result{Size: msg.Size}
	if im.opts.MaxMessageSize > 0 && msg.Size > im.opts.MaxMessageSize {
		res.Outcome, res.Reason = OutcomeRejected, "too_large"
		res.Detail = fmt.Sprintf("message of %d bytes is larger than max_message_size %d", msg.Size, im.opts.MaxMessageSize)
		return res, nil
	}
	h, err := msg.Header, error(nil)
	if h == nil {
		h, err = im.readHeader(msg)
	}
	if err != nil {
		var ie *InputError
		if errors.As(err, &ie) {
			res.Outcome, res.Reason, res.Detail = OutcomeRejected, ie.Reason, ie.Text
			return res, nil
		}
		return res, &Error{Status: StatusLocalError, Op: "read message", Err: err}
	}
	res.Header = h
	res.MessageID, _ = h.Get("message-id")
	res.Subject, _ = h.Get("subject")
	if msg.Envelope != nil {
		res.Envelope = *msg.Envelope
		if res.Envelope.Source == "" {
			res.Envelope.Source = "source"
		}
	} else {
		res.Envelope = ExtractEnvelope(h, im.opts.EnvelopeHeaders)
	}

	// Route: one delivery per account, however many of its addresses were recipients.
	targets := map[string][]string{}
	var order []string
	for _, rcpt := range res.Envelope.Recipients {
		rt := im.router.Route(rcpt, res.Envelope.Guessed)
		switch {
		case rt.Ignored:
			res.Ignored = append(res.Ignored, rcpt)
		case rt.Account == "":
			res.Failed = append(res.Failed, Failure{Recipient: rcpt, Status: rt.Status.Enhanced, Reason: rt.Status.Text, Rule: rt.Rule})
		default:
			if _, ok := targets[rt.Account]; !ok {
				order = append(order, rt.Account)
			}
			targets[rt.Account] = append(targets[rt.Account], rcpt)
		}
	}
	if len(res.Envelope.Recipients) == 0 && im.router.deliverTo != "" {
		// A single-account source needs no recipient at all.
		order = append(order, im.router.deliverTo)
		targets[im.router.deliverTo] = nil
	}
	if len(order) == 0 {
		res.Outcome = OutcomeFailed
		switch {
		case len(res.Failed) > 0:
			res.Reason, res.Detail = "no_deliverable_recipient", "no recipient could be delivered"
		case len(res.Ignored) > 0:
			res.Reason, res.Detail = "no_accepted_recipient", "no recipient is in an accepted domain (recipients guessed from To/Cc)"
		default:
			res.Reason, res.Detail = "no_recipient", "no envelope recipient and no To/Cc address"
		}
		return res, nil
	}
	if im.opts.Target != nil {
		if err := im.importTarget(ctx, msg, h, &res, order, targets); err != nil {
			return res, err
		}
		order = nil
	}
	var verdict *spamVerdict
	for _, acct := range order {
		if err := ctx.Err(); err != nil {
			return res, &Error{Status: StatusLocalError, Op: "import", Err: err}
		}
		var sv *spamVerdict
		if im.opts.Spam != nil && (im.opts.SpamCheckAll || im.accounts[acct].SpamCheck) {
			if verdict == nil {
				verdict = im.classify(ctx, msg, h, res.Envelope)
				reason := verdict.reason
				if verdict.checked {
					reason = verdict.v.Reason
				}
				res.Spam = &SpamResult{Spam: verdict.v.Spam, Checked: verdict.checked, Score: verdict.v.Score, Reason: reason}
			}
			sv = verdict
		}
		d, err := im.deliver(msg, h, res.Envelope, acct, targets[acct], sv, len(order) == 1)
		var e *Error
		if errors.As(err, &e) && !e.Temporary() {
			// The account takes no more mail (quota): its recipients fail, the others
			// are delivered.
			rcpts := targets[acct]
			if len(rcpts) == 0 {
				rcpts = []string{acct}
			}
			for _, r := range rcpts {
				res.Failed = append(res.Failed, Failure{Recipient: r, Status: e.Status.Enhanced, Reason: e.Status.Text, Rule: "quota"})
			}
			continue
		}
		if err != nil {
			return res, err
		}
		res.Delivered = append(res.Delivered, d)
	}
	switch {
	case len(res.Delivered) == 0:
		res.Outcome, res.Reason, res.Detail = OutcomeFailed, "no_deliverable_recipient", "no recipient could be delivered"
	case len(res.Failed) > 0:
		res.Outcome = OutcomePartial
	default:
		res.Outcome = OutcomeDelivered
	}
	return res, nil
}

// ErrSizeChanged reports a message whose source held other than Size bytes when it was
// copied: a drop file truncated or appended to after it was claimed. The copy is not
// delivered; the error is temporary, and the retry takes the file as it is then.
var ErrSizeChanged = errors.New("message size changed while it was read")

// openSized is msg.Open, whose reader fails with ErrSizeChanged instead of ending when
// the bytes read differ from msg.Size (when known): a short or long copy is never
// delivered as the message that was claimed.
func (msg Message) openSized() (io.ReadCloser, error) {
	rc, err := msg.Open()
	if err != nil || msg.Size < 0 {
		return rc, err
	}
	return &sizedReader{ReadCloser: rc, want: msg.Size}, nil
}

type sizedReader struct {
	io.ReadCloser
	want, got int64
}

func (r *sizedReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.got += int64(n)
	if r.got > r.want || (err == io.EOF && r.got != r.want) {
		return n, fmt.Errorf("%w: read %d bytes of %d", ErrSizeChanged, r.got, r.want)
	}
	return n, err
}

func (im *Importer) readHeader(msg Message) (*Header, error) {
	rc, err := msg.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	br := getReader(rc)
	defer putReader(br)
	return ReadHeader(br)
}

// readers holds 64 KiB read buffers: a new one per message read would make the garbage
// collector busy at thousands of messages a second. The size matters: ReadHeader's
// view of where a header ends depends on it (see bodyAhead).
var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 64<<10) }}

func getReader(r io.Reader) *bufio.Reader {
	br := readers.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

func putReader(br *bufio.Reader) {
	br.Reset(nil)
	readers.Put(br)
}

// DeliveryName returns the Maildir file name of msg's copy for account: derived from the
// message's identity and the account only, so a repeated delivery has the same name.
func DeliveryName(msg Message, account string) string {
	sum := sha256.Sum256([]byte(msg.ID + "\x00" + account))
	sec := msg.Arrived.Unix()
	if sec < 0 {
		sec = 0
	}
	// Maildir names are time.unique.host; the host part is fixed so that any instance
	// derives the same name when it adopts another's claims.
	return fmt.Sprintf("%d.X%s.mxdrop", sec, hex.EncodeToString(sum[:12]))
}

// spamVerdict is a classification as the deliveries of one message use it.
type spamVerdict struct {
	v       Verdict
	checked bool
	reason  string // why it was not checked
}

func (im *Importer) classify(ctx context.Context, msg Message, h *Header, env Envelope) *spamVerdict {
	v, err := im.opts.Spam.Classify(ctx, h, env, msg.Open)
	if err != nil {
		return &spamVerdict{reason: "spam check failed: " + err.Error()}
	}
	return &spamVerdict{v: v, checked: true}
}

func (im *Importer) spamFolder() string {
	if im.opts.SpamFolder != "" {
		return im.opts.SpamFolder
	}
	return "Junk"
}

// deliver puts one account's copy of msg into its Maildir; alone is true when the
// account is the message's only one.
func (im *Importer) deliver(msg Message, h *Header, env Envelope, account string, rcpts []string, sv *spamVerdict, alone bool) (Delivery, error) {
	acct := im.accounts[account]
	inbox := Maildir(acct.Maildir)
	quota := Quota{Bytes: int64(acct.Quota), Messages: acct.QuotaMessages}
	d := Delivery{Account: account, Recipients: rcpts}
	name := DeliveryName(msg, account)
	if err := inbox.Init(); err != nil {
		return d, classify("prepare maildir "+acct.Maildir, err)
	}
	md := inbox
	var extra []string
	if sv != nil {
		extra = spamFields(sv.v, sv.checked, sv.reason)
		if sv.checked && sv.v.Spam {
			junk, err := inbox.Folder(im.spamFolder())
			if err != nil {
				return d, classify("prepare spam folder of "+acct.Maildir, err)
			}
			md, d.Folder = junk, im.spamFolder()
		}
	}
	if msg.Recovered {
		// The verdict may differ from the interrupted attempt's (spamd was down): look
		// in the inbox and in the spam folder.
		found := func(p string) (Delivery, error) {
			// The interrupted attempt may have renamed the copy in but not fsynced
			// the folder, nor, for a linked copy, its data (LinkTemp): do that now,
			// or it could still vanish in a power loss.
			d.Path, d.Existing = p, true
			if err := msg.Batch.SyncData(p); err != nil {
				return d, classify("sync found copy for "+account, err)
			}
			if err := msg.Batch.SyncDir(filepath.Dir(p)); err != nil {
				return d, classify("sync maildir folder of "+account, err)
			}
			return d, nil
		}
		if p, ok := inbox.FindIn(name, msg.Lookup); ok {
			return found(p)
		}
		// The Maildirs the interrupted attempt may have delivered into.
		mds := []Maildir{inbox}
		if sv != nil {
			if junk, err := inbox.Folder(im.spamFolder()); err == nil {
				mds = append(mds, junk)
			}
		}
		if !quota.IsZero() {
			// Quota deliveries are named name,S=<size> in new/ too, in the inbox or,
			// when the interrupted attempt judged it spam, in the spam folder.
			for _, md := range mds {
				if p, ok := scanFor(filepath.Join(string(md), "new"), name); ok {
					return found(p)
				}
			}
		}
		for _, md := range mds[1:] {
			if p, ok := md.FindIn(name, msg.Lookup); ok {
				return found(p)
			}
		}
		if msg.Path != "" && alone {
			if p, ok := linkedCopy(msg.Path, mds...); ok {
				return found(p)
			}
		}
	}
	delivTo := account
	if len(rcpts) == 1 {
		if n, ok := NormalizeAddress(rcpts[0]); ok {
			delivTo = n
		}
	}
	write := func(w io.Writer) error {
		rc, err := msg.openSized()
		if err != nil {
			return fmt.Errorf("reopen message: %w", err)
		}
		defer rc.Close()
		return writeMessage(w, rc, h, env, delivTo, ownAddresses(acct, rcpts), extra)
	}
	// A copy that would be the message's own file byte for byte is that file, linked.
	// Several accounts each get their own copy (each names only its own recipients).
	// A quota delivery links too: its name carries the size (S=) either way.
	link := msg.Path != "" && alone && identicalCopy(h, env, delivTo, ownAddresses(acct, rcpts), extra)
	put := func() (string, error) {
		if link {
			var p string
			var err error
			src := LinkSource{Path: msg.Path, File: msg.File}
			if quota.IsZero() {
				p, err = md.Link(name, src, msg.Size, msg.Batch)
			} else {
				p, err = md.LinkQuota(inbox, name, src, msg.Size, msg.Batch, quota)
			}
			if err == nil || errors.Is(err, ErrQuotaExceeded) {
				d.Linked = err == nil
				return p, err
			}
			// Another file system (EXDEV), a file a link would expose, no hard links
			// here: copy as for any other message. Nothing was delivered.
		}
		d.Linked = false
		if quota.IsZero() {
			return md.Deliver(name, write, msg.Batch)
		}
		return md.DeliverQuota(inbox, name, write, msg.Batch, quota)
	}
	path, err := put()
	if errors.Is(err, fs.ErrNotExist) {
		// Init checks the disk once per process; an administrator may have removed the
		// Maildir since. Create it again, once, rather than fail until a restart.
		md.forget()
		if err = md.Init(); err == nil {
			path, err = put()
		}
	}
	if errors.Is(err, ErrQuotaExceeded) {
		return d, &Error{Status: StatusQuotaExceeded, Op: "deliver to " + account, Err: err}
	}
	if err != nil {
		return d, classify("deliver to "+account, err)
	}
	d.Path = path
	return d, nil
}

// classify wraps a delivery error with the status its cause deserves. Every delivery
// error is temporary: the message stays at its source and is retried.
func classify(op string, err error) error {
	st := StatusLocalError
	switch {
	case errors.Is(err, syscall.ENOSPC):
		st = StatusSystemFull
	case errors.Is(err, syscall.EDQUOT):
		st = StatusMailboxFull
	}
	return &Error{Status: st, Op: op, Err: err}
}

// envelopeFields are the fields a delivered copy loses unless they name only its own
// recipients: they would show one account the other envelope recipients (Bcc).
var envelopeFields = map[string]bool{
	"x-sender": true, "x-receiver": true, "envelope-to": true, "x-original-to": true,
	"delivered-to": true, "x-envelope-to": true,
}

// ownAddresses returns the normalised addresses an account's copy may name in its
// envelope fields without telling it about other recipients: the recipients routed to
// it, its address and its aliases.
func ownAddresses(acct configs.Account, rcpts []string) map[string]bool {
	mine := map[string]bool{}
	for _, a := range append(append([]string{acct.Address}, acct.Aliases...), rcpts...) {
		if n, ok := NormalizeAddress(a); ok {
			mine[n] = true
		}
	}
	return mine
}

// writeMessage writes one account's copy: Return-Path and Delivered-To as a delivery
// agent prepends them (not with delivTo "": a mail server taking the message over LMTP
// adds them itself), then the message as it arrived less the envelope fields above the
// first Received that name addresses not in mine (Bcc privacy), then the body, streamed.
func writeMessage(w io.Writer, rc io.Reader, h *Header, env Envelope, delivTo string, mine map[string]bool, extra []string) error {
	br := getReader(rc)
	defer putReader(br)
	if _, err := br.Discard(int(h.Size)); err != nil {
		return fmt.Errorf("skip header: %w", err)
	}
	p := planCopy(h, env, delivTo, mine, extra)
	nl := h.Newline()
	for _, line := range p.prepend {
		if _, err := io.WriteString(w, line+nl); err != nil {
			return err
		}
	}
	for i, f := range h.Fields {
		if p.keep[i] {
			if _, err := w.Write(f.Raw); err != nil {
				return err
			}
		}
	}
	// Without a separator (the header ended at the end of the file, or the body starts
	// without a blank line) nothing is added: the copy is the message as it arrived.
	if _, err := w.Write(h.Sep); err != nil {
		return err
	}
	if _, err := io.Copy(w, br); err != nil {
		return fmt.Errorf("copy body: %w", err)
	}
	return nil
}

// copyPlan is how writeMessage turns a message into one account's copy: the lines it
// writes first (without line ending) and which header fields it keeps.
type copyPlan struct {
	prepend []string
	keep    []bool
}

// planCopy decides the copy writeMessage writes (see there) for the given arguments.
func planCopy(h *Header, env Envelope, delivTo string, mine map[string]bool, extra []string) copyPlan {
	local := delivTo != ""
	if local {
		mine[delivTo] = true
	}
	top := len(trustedTop(h))
	_, _, iisN := iisBlock(h)
	p := copyPlan{keep: make([]bool, len(h.Fields))}
	haveRP, haveDT := false, false
	for i, f := range h.Fields {
		p.keep[i] = true
		if i < iisN {
			p.keep[i] = false // the IIS x-sender/x-receiver block is never part of a message
			continue
		}
		if i >= top {
			continue
		}
		if f.Name == "return-path" && i == iisN {
			haveRP = strings.EqualFold(parseReturnPath(f.Value), env.Sender)
		}
		if envelopeFields[f.Name] {
			if !onlyMine(f.Value, mine) {
				p.keep[i] = false
			} else if f.Name == "delivered-to" && !haveDT {
				haveDT = true
			}
		}
	}
	// Prepend as a delivery agent does, unless the top of the file already says so.
	if !haveRP && env.SenderKnown && local {
		p.prepend = append(p.prepend, "Return-Path: <"+env.Sender+">")
	}
	if !haveDT && local {
		p.prepend = append(p.prepend, "Delivered-To: "+delivTo)
	}
	p.prepend = append(p.prepend, extra...)
	return p
}

// identicalCopy reports whether writeMessage, given these arguments, writes exactly the
// bytes of the message as it arrived: nothing prepended (its own Delivered-To and a
// matching Return-Path on top already, as Postfix virtual(8) and local(8) write them,
// no spam fields), no field removed, and no mbox "From " line or other byte of the
// header block that the fields and separator do not account for. Such a copy can be
// the message's own file, linked instead of written.
func identicalCopy(h *Header, env Envelope, delivTo string, mine map[string]bool, extra []string) bool {
	p := planCopy(h, env, delivTo, mine, extra)
	if len(p.prepend) > 0 {
		return false
	}
	n := int64(len(h.Sep))
	for i, f := range h.Fields {
		if !p.keep[i] {
			return false
		}
		n += int64(len(f.Raw))
	}
	return n == h.Size
}

// onlyMine reports whether every address in an envelope field's value is one of this
// copy's own recipients.
func onlyMine(v string, mine map[string]bool) bool {
	list := parseAddrList(v)
	if len(list) == 0 {
		return false
	}
	for _, a := range list {
		n, ok := NormalizeAddress(a)
		if !ok || !mine[n] {
			return false
		}
	}
	return true
}

// SortedAccounts returns the delivered account addresses, sorted, for logs.
func (r Result) SortedAccounts() []string {
	out := make([]string, 0, len(r.Delivered))
	for _, d := range r.Delivered {
		out = append(out, d.Account)
	}
	sort.Strings(out)
	return out
}

// Linked reports whether a delivery of r was the message's own file, hard linked
// (Delivery.Linked); a message that is linked has one delivery.
func (r Result) Linked() bool {
	for _, d := range r.Delivered {
		if d.Linked {
			return true
		}
	}
	return false
}

// FailedRecipients returns the failed recipient addresses.
func (r Result) FailedRecipients() []string {
	out := make([]string, 0, len(r.Failed))
	for _, f := range r.Failed {
		out = append(out, f.Recipient)
	}
	return out
}
