// Package imap is the IMAP side of mxdrop's pollers: a small client over go-imap v2
// with exactly the operations a poller needs — connect with the configured TLS, log in,
// select a folder, list its UIDs, stream message bodies (BODY.PEEK[], so nothing is
// marked \Seen), delete by UID, and wait in IDLE. It knows nothing of poller state or
// the importer; package pollers drives it.
//
// Every wait on the server is bounded by Options.Timeout ("no byte for this long"),
// except the wait in IDLE, and every reply by a read budget per command (see
// timeoutConn): a server that sends more gets a *LimitError and a closed connection.
// A Client is not safe for concurrent use.
package imap

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/mail"
	"slices"
	"strings"
	"time"

	goimap "github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
)

// TLS modes of Options.TLS.
const (
	TLSNone     = "none"     // plaintext, as configured: never chosen silently
	TLSStartTLS = "starttls" // plain port, STARTTLS required before anything else
	TLSImplicit = "implicit" // TLS from the first byte
)

// Options configure Dial.
type Options struct {
	Addr string // host:port
	// TLS is TLSNone, TLSStartTLS or TLSImplicit. With TLSStartTLS a server that refuses
	// STARTTLS is an error: there is no fall-back to plaintext.
	TLS string
	// TLSConfig verifies the server; its ServerName must be set. Required unless TLS is
	// TLSNone.
	TLSConfig *tls.Config
	// Timeout bounds every wait for the server (connect, handshake, each read and
	// write) except the wait in IDLE. Default 60s.
	Timeout time.Duration
	// MaxMessageSize bounds the bytes of one message FetchBodies reads, past the
	// budget of its FETCH response (0: the size the server announces). The caller
	// counts message bytes itself; this is the connection's own bound behind it.
	MaxMessageSize int64
}

// Read budgets, in bytes from the socket (see timeoutConn). Every command may read
// replySlack besides what it expects per message: its status line, the untagged
// updates a server adds (EXISTS, EXPUNGE, FLAGS changed by other clients), TLS
// framing. A budget that grows with the mailbox is capped at maxListBytes, like the
// POP3 client's listings.
const (
	replySlack   = 1 << 20
	perUIDListed = 16      // UID SEARCH: a number and a space
	perUIDInfo   = 512     // UID FETCH (UID RFC822.SIZE INTERNALDATE): about 100 bytes
	perUIDHeader = 8 << 10 // UID FETCH BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]
	perUIDChange = 128     // UID STORE, EXPUNGE: a short untagged line, if any
	maxListBytes = 64 << 20
	idleBudget   = 16 << 20 // one IDLE (at most 29 minutes) of untagged updates
	// maxMessages bounds the UIDs a folder listing may hold. A real folder holds far
	// fewer; more is a broken server and ends the session.
	maxMessages = 1_000_000
	// maxFieldLiteral is the largest Message-ID header field MessageIDs keeps; a
	// larger one is read past (within the budget) and the message has no Message-ID.
	maxFieldLiteral = perUIDHeader
)

// listBudget is the budget of a command whose reply grows by per bytes for each of n
// messages.
func listBudget(per int64, n int) int64 {
	return min(maxListBytes, replySlack+per*int64(n))
}

// AuthError is a login the server refused (a NO or BAD answer to LOGIN or
// AUTHENTICATE), as opposed to a connection problem.
type AuthError struct{ Err error }

func (e *AuthError) Error() string { return "login refused: " + e.Err.Error() }
func (e *AuthError) Unwrap() error { return e.Err }

// ErrNoIdle is returned by Idle when the server does not offer IDLE.
var ErrNoIdle = errors.New("server does not support IDLE")

// Client is one IMAP connection.
type Client struct {
	c    *imapclient.Client
	conn *timeoutConn
	stop func() bool // unregisters the context's close hook
	max  int64       // Options.MaxMessageSize

	news chan struct{} // an EXISTS arrived outside a SELECT: the mailbox may have grown
}

// Dial connects to opts.Addr, negotiates TLS as opts.TLS says and waits for the
// greeting. Cancelling ctx closes the connection for as long as the Client lives, so
// it aborts whatever the Client is doing. The caller must Close the Client.
func Dial(ctx context.Context, opts Options) (*Client, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 60 * time.Second
	}
	if opts.TLS != TLSNone && (opts.TLSConfig == nil || opts.TLSConfig.ServerName == "") {
		return nil, errors.New("imap: TLS requires a configuration with ServerName")
	}
	d := net.Dialer{Timeout: opts.Timeout, KeepAlive: 30 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	cl := &Client{conn: newTimeoutConn(raw, opts.Timeout, "greeting", replySlack), max: opts.MaxMessageSize, news: make(chan struct{}, 1)}
	cl.stop = context.AfterFunc(ctx, func() { raw.Close() })
	copts := &imapclient.Options{
		UnilateralDataHandler: &imapclient.UnilateralDataHandler{
			Mailbox: func(d *imapclient.UnilateralDataMailbox) {
				if d.NumMessages != nil {
					select {
					case cl.news <- struct{}{}:
					default:
					}
				}
			},
		},
	}
	fail := func(err error) (*Client, error) {
		cl.stop()
		raw.Close()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, err
	}
	switch opts.TLS {
	case TLSImplicit:
		cfg := opts.TLSConfig.Clone()
		if cfg.NextProtos == nil {
			cfg.NextProtos = []string{"imap"}
		}
		tc := tls.Client(cl.conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fail(fmt.Errorf("tls handshake: %w", err))
		}
		cl.c = imapclient.New(tc, copts)
	case TLSStartTLS:
		copts.TLSConfig = opts.TLSConfig
		c, err := imapclient.NewStartTLS(cl.conn, copts)
		if err != nil {
			return fail(fmt.Errorf("starttls: %w", err))
		}
		cl.c = c
	case TLSNone:
		cl.c = imapclient.New(cl.conn, copts)
	default:
		return fail(fmt.Errorf("imap: unknown TLS mode %q", opts.TLS))
	}
	if err := cl.c.WaitGreeting(); err != nil {
		cl.c.Close()
		return fail(cl.fail(fmt.Errorf("greeting: %w", err)))
	}
	return cl, nil
}

// Close closes the connection without logging out.
func (c *Client) Close() error {
	c.stop()
	err := c.c.Close()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	if err != nil {
		return c.fail(err)
	}
	return nil
}

// fail returns the connection's *LimitError in place of err once the read budget was
// exceeded: imapclient formats the errors of its reader with %v, so the cause would
// not survive in err itself.
func (c *Client) fail(err error) error {
	if le := c.conn.limitErr(); le != nil {
		return le
	}
	if se := c.conn.slowErr(); se != nil {
		return se
	}
	return err
}

// Logout says goodbye and closes the connection.
func (c *Client) Logout() error {
	err := c.conn.setBudget("logout", replySlack)
	if err == nil {
		err = c.fail(c.c.Logout().Wait())
	}
	if cerr := c.Close(); err == nil {
		err = cerr
	}
	return err
}

// Login authenticates with a password: LOGIN, or AUTHENTICATE PLAIN where the server
// has disabled LOGIN. A refusal is an *AuthError.
func (c *Client) Login(user, password string) error {
	if err := c.conn.setBudget("login", replySlack); err != nil {
		return err
	}
	caps := c.c.Caps()
	if caps.Has(goimap.CapLoginDisabled) {
		if !slices.Contains(caps.AuthMechanisms(), sasl.Plain) {
			return &AuthError{Err: errors.New("server disables LOGIN and offers no AUTH=PLAIN")}
		}
		return c.authErr(c.c.Authenticate(sasl.NewPlainClient("", user, password)))
	}
	return c.authErr(c.c.Login(user, password).Wait())
}

// Authenticate authenticates with a SASL client (XOAUTH2 and others). A refusal is an
// *AuthError.
func (c *Client) Authenticate(sc sasl.Client) error {
	if err := c.conn.setBudget("authenticate", replySlack); err != nil {
		return err
	}
	return c.authErr(c.c.Authenticate(sc))
}

func (c *Client) authErr(err error) error {
	if le := c.conn.limitErr(); le != nil {
		return le
	}
	var ie *goimap.Error
	if errors.As(err, &ie) {
		return &AuthError{Err: err}
	}
	return err
}

// Mailbox is a selected folder.
type Mailbox struct {
	Name        string
	UIDValidity uint32
	UIDNext     uint32 // 0 if the server did not say
	NumMessages uint32
}

// Select selects folder read-write.
func (c *Client) Select(folder string) (Mailbox, error) {
	if err := c.conn.setBudget("select", replySlack); err != nil {
		return Mailbox{}, err
	}
	d, err := c.c.Select(folder, nil).Wait()
	if err != nil {
		return Mailbox{}, c.fail(fmt.Errorf("select %s: %w", folder, err))
	}
	return Mailbox{Name: folder, UIDValidity: d.UIDValidity, UIDNext: uint32(d.UIDNext), NumMessages: d.NumMessages}, nil
}

// UIDs returns the UIDs of every message in the selected folder, ascending (oldest
// first). A folder of more than maxMessages is a *LimitError.
func (c *Client) UIDs() ([]uint32, error) {
	if err := c.conn.setBudget("uid search", c.mailboxBudget(perUIDListed)); err != nil {
		return nil, err
	}
	var opts *goimap.SearchOptions
	if c.c.Caps().Has(goimap.CapESearch) {
		opts = &goimap.SearchOptions{ReturnAll: true}
	}
	d, err := c.c.UIDSearch(&goimap.SearchCriteria{}, opts).Wait()
	if err != nil {
		return nil, c.fail(fmt.Errorf("uid search: %w", err))
	}
	uids, err := c.allUIDs("uid search", d)
	if err != nil {
		return nil, err
	}
	slices.Sort(uids)
	return uids, nil
}

// mailboxBudget is the budget of a command whose reply grows by per bytes for each
// message of the selected folder, as many as the server last said it holds.
func (c *Client) mailboxBudget(per int64) int64 {
	n := 0
	if mb := c.c.Mailbox(); mb != nil {
		n = int(min(mb.NumMessages, maxMessages))
	}
	return listBudget(per, n)
}

// allUIDs returns the UIDs of a search result, counting them before it expands the
// ranges: an ESEARCH reply of a few bytes ("ALL 1:4294967295") would otherwise become
// 16 GB of UIDs.
func (c *Client) allUIDs(what string, d *goimap.SearchData) ([]uint32, error) {
	set, _ := d.All.(goimap.UIDSet)
	if set.Dynamic() {
		return nil, fmt.Errorf("%s: the server answered with a UID set containing \"*\"", what)
	}
	var n uint64
	for _, r := range set {
		n += uint64(r.Stop) - uint64(r.Start) + 1
	}
	if n > maxMessages {
		le := &LimitError{What: what, Limit: maxMessages, Unit: "messages"}
		c.conn.trip(le)
		return nil, c.fail(le)
	}
	return fromUIDs(d.AllUIDs()), nil
}

// Info is what a listing knows of a message.
type Info struct {
	UID          uint32
	Size         int64     // RFC822.SIZE
	InternalDate time.Time // when the server received it
}

// Infos returns the size and internal date of each UID that still exists, in UID order.
func (c *Client) Infos(uids []uint32) ([]Info, error) {
	var out []Info
	for chunk := range slices.Chunk(uids, 500) {
		if err := c.conn.setBudget("uid fetch sizes", listBudget(perUIDInfo, len(chunk))); err != nil {
			return nil, err
		}
		msgs, err := c.collect(c.c.Fetch(uidSet(chunk), &goimap.FetchOptions{
			UID: true, RFC822Size: true, InternalDate: true,
		}), nil)
		if err != nil {
			return nil, c.fail(fmt.Errorf("uid fetch sizes: %w", err))
		}
		for _, m := range msgs {
			if m.uid == 0 {
				continue
			}
			out = append(out, Info{UID: m.uid, Size: m.size, InternalDate: m.date})
		}
	}
	slices.SortFunc(out, func(a, b Info) int { return int64cmp(int64(a.UID), int64(b.UID)) })
	return out, nil
}

// MessageIDs returns the Message-ID field of each UID that still exists and has one,
// read with BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)].
func (c *Client) MessageIDs(uids []uint32) (map[uint32]string, error) {
	out := map[uint32]string{}
	section := &goimap.FetchItemBodySection{
		Specifier: goimap.PartSpecifierHeader, HeaderFields: []string{"Message-ID"}, Peek: true,
	}
	for chunk := range slices.Chunk(uids, 500) {
		if err := c.conn.setBudget("uid fetch message-id", listBudget(perUIDHeader, len(chunk))); err != nil {
			return nil, err
		}
		msgs, err := c.collect(c.c.Fetch(uidSet(chunk), &goimap.FetchOptions{
			UID: true, BodySection: []*goimap.FetchItemBodySection{section},
		}), section)
		if err != nil {
			return nil, c.fail(fmt.Errorf("uid fetch message-id: %w", err))
		}
		for _, m := range msgs {
			if m.uid == 0 || m.section == nil {
				continue
			}
			if msg, err := mail.ReadMessage(io.MultiReader(bytes.NewReader(m.section), strings.NewReader("\r\n"))); err == nil {
				if id := strings.TrimSpace(msg.Header.Get("Message-Id")); id != "" {
					out[m.uid] = id
				}
			}
		}
	}
	return out, nil
}

// fetched is what collect keeps of one FETCH response.
type fetched struct {
	uid     uint32
	size    int64
	date    time.Time
	section []byte // the wanted body section; nil if absent, NIL or too large
}

// collect reads the responses of a FETCH command. It keeps the body section want (if
// not nil, and at most maxFieldLiteral bytes), and reads past every other literal the
// server sends (a BODY[] it was not asked for) without keeping it: what the server may
// send is bounded by the command's budget, what collect keeps by what it asked for.
// imapclient's Collect would read every literal whole into memory.
func (c *Client) collect(cmd *imapclient.FetchCommand, want *goimap.FetchItemBodySection) ([]fetched, error) {
	defer cmd.Close()
	var out []fetched
	for {
		msg := cmd.Next()
		if msg == nil {
			break
		}
		var f fetched
		for {
			item := msg.Next()
			if item == nil {
				break
			}
			var lit goimap.LiteralReader
			keep := false
			switch it := item.(type) {
			case imapclient.FetchItemDataUID:
				f.uid = uint32(it.UID)
			case imapclient.FetchItemDataRFC822Size:
				f.size = it.Size
			case imapclient.FetchItemDataInternalDate:
				f.date = it.Time
			case imapclient.FetchItemDataBodySection:
				lit = it.Literal
				keep = want != nil && sameSection(it.Section, want)
			case imapclient.FetchItemDataBinarySection:
				lit = it.Literal
			}
			if lit == nil {
				continue
			}
			keep = keep && lit.Size() <= maxFieldLiteral
			var buf bytes.Buffer
			var dst io.Writer = io.Discard
			if keep {
				dst = &buf
			}
			if _, err := c.readLiteral(dst, lit); err != nil {
				return nil, err
			}
			if keep {
				f.section = buf.Bytes()
			}
		}
		out = append(out, f)
	}
	if err := cmd.Close(); err != nil {
		return nil, c.fail(err)
	}
	return out, nil
}

// readLiteral copies the whole of lit to w and returns the number of bytes. An error
// of w or of the connection closes the connection.
func (c *Client) readLiteral(w io.Writer, lit goimap.LiteralReader) (int64, error) {
	lr := &literalReader{r: lit}
	n, err := io.Copy(w, lr)
	if err != nil && lr.err == nil {
		c.abortLiteral(lr)
		return n, fmt.Errorf("store literal: %w", err)
	}
	if lr.err == nil && n == lit.Size() {
		return n, nil
	}
	// QUIRK: once a literal's read has failed (or ended early: a closed connection
	// reads as EOF), go-imap's reader goroutine moves on while FetchCommand.Close
	// would drain the same buffer again, a data race. Closing the client first stops
	// that goroutine; the drain then just sees the error.
	c.c.Close()
	if lr.err != nil {
		return n, c.fail(fmt.Errorf("read literal: %w", lr.err))
	}
	return n, c.fail(fmt.Errorf("read literal: got %d of %d bytes", n, lit.Size()))
}

// sameSection reports whether a body section of a FETCH response is the header
// fields section asked for (imapclient's own matching is not exported).
func sameSection(got, want *goimap.FetchItemBodySection) bool {
	return got != nil && got.Specifier == want.Specifier && len(got.Part) == 0 && len(want.Part) == 0 &&
		slices.EqualFunc(got.HeaderFields, want.HeaderFields, strings.EqualFold) &&
		len(got.HeaderFieldsNot) == 0 && len(want.HeaderFieldsNot) == 0 && got.Partial == nil
}

// FetchBodies streams the whole of each message in uids (UID FETCH ... BODY.PEEK[]).
// For each message the server sends, open is called with its sequence number, its UID
// when it came before the body (0 otherwise), and its size as the server sends it (CRLF
// line endings), and returns where its bytes go; once the message is complete, done is
// called with the sequence number, its UID and the byte count. (The UID is not
// required to precede the body in a FETCH response, hence the two steps.) A message
// the server no longer has is skipped. An error of open, done or the connection stops
// the fetch and is returned; messages already passed to done are complete. An error of
// open or of the writer also closes the connection: the rest of a literal cannot be
// skipped but by reading it, and its size is the server's to choose.
//
// The read budget is that of a size listing, grown by each message's size (at most
// Options.MaxMessageSize) as its body begins: bodies are streamed to open's writers,
// never held in memory.
func (c *Client) FetchBodies(uids []uint32, open func(seq, uid uint32, size int64) (io.Writer, error), done func(seq, uid uint32, n int64) error) error {
	if err := c.conn.setBudget("uid fetch bodies", listBudget(perUIDInfo, len(uids))); err != nil {
		return err
	}
	c.conn.startPace()
	cmd := c.c.Fetch(uidSet(uids), &goimap.FetchOptions{
		UID: true, BodySection: []*goimap.FetchItemBodySection{{Peek: true}},
	})
	defer cmd.Close()
	for {
		msg := cmd.Next()
		if msg == nil {
			break
		}
		var uid uint32
		var n int64
		got := false
		for {
			item := msg.Next()
			if item == nil {
				break
			}
			switch it := item.(type) {
			case imapclient.FetchItemDataUID:
				uid = uint32(it.UID)
			case imapclient.FetchItemDataBodySection:
				if it.Literal == nil {
					continue // NIL body: nothing to store
				}
				size := it.Literal.Size()
				w, err := open(msg.SeqNum, uid, size)
				if err != nil {
					c.abortLiteral(it.Literal)
					return err
				}
				if c.max > 0 {
					size = min(size, c.max)
				}
				c.conn.grow(size)
				if n, err = c.readLiteral(w, it.Literal); err != nil {
					return fmt.Errorf("message body: %w", c.fail(err))
				}
				got = true
			}
		}
		if !got {
			continue // a FLAGS update or an expunged message
		}
		if uid == 0 {
			return fmt.Errorf("uid fetch: message %d came without its UID", msg.SeqNum)
		}
		if err := done(msg.SeqNum, uid, n); err != nil {
			return err
		}
	}
	if err := cmd.Close(); err != nil {
		return c.fail(fmt.Errorf("uid fetch: %w", err))
	}
	return nil
}

// UIDPlus reports whether the server can expunge by UID (UIDPLUS or IMAP4rev2).
func (c *Client) UIDPlus() bool { return c.c.Caps().Has(goimap.CapUIDPlus) }

// Delete flags uids \Deleted and expunges them: FlagDeleted, then Expunge.
func (c *Client) Delete(uids []uint32, mayExpunge func(uid uint32) bool) (expunged bool, err error) {
	if err := c.FlagDeleted(uids); err != nil {
		return false, err
	}
	return c.Expunge(uids, mayExpunge)
}

// FlagDeleted flags uids \Deleted (UID STORE +FLAGS.SILENT); Expunge removes them.
func (c *Client) FlagDeleted(uids []uint32) error {
	if len(uids) == 0 {
		return nil
	}
	if err := c.conn.setBudget("uid store", listBudget(perUIDChange, len(uids))); err != nil {
		return err
	}
	store := &goimap.StoreFlags{Op: goimap.StoreFlagsAdd, Silent: true, Flags: []goimap.Flag{goimap.FlagDeleted}}
	if err := c.c.Store(uidSet(uids), store, nil).Close(); err != nil {
		return c.fail(fmt.Errorf("uid store \\Deleted: %w", err))
	}
	return nil
}

// Expunge removes uids, flagged \Deleted before: UID EXPUNGE where the server has
// UIDPLUS. Otherwise a plain EXPUNGE would also remove messages someone else flagged
// \Deleted, so it is only sent when mayExpunge accepts every \Deleted message of the
// folder (the caller's messages, flagged by this or an earlier call); else the messages
// stay flagged and expunged is false, and the caller tries again later. RFC 4315
// section 2.1, RFC 3501 section 6.4.3.
func (c *Client) Expunge(uids []uint32, mayExpunge func(uid uint32) bool) (expunged bool, err error) {
	if len(uids) == 0 {
		return true, nil
	}
	set := uidSet(uids)
	if c.UIDPlus() {
		if err := c.conn.setBudget("uid expunge", listBudget(perUIDChange, len(uids))); err != nil {
			return false, err
		}
		if err := c.c.UIDExpunge(set).Close(); err != nil {
			return false, c.fail(fmt.Errorf("uid expunge: %w", err))
		}
		return true, nil
	}
	if err := c.conn.setBudget("uid search deleted", c.mailboxBudget(perUIDListed)); err != nil {
		return false, err
	}
	d, err := c.c.UIDSearch(&goimap.SearchCriteria{Flag: []goimap.Flag{goimap.FlagDeleted}}, nil).Wait()
	if err != nil {
		return false, c.fail(fmt.Errorf("uid search deleted: %w", err))
	}
	deleted, err := c.allUIDs("uid search deleted", d)
	if err != nil {
		return false, err
	}
	for _, u := range deleted {
		if !set.Contains(goimap.UID(u)) && (mayExpunge == nil || !mayExpunge(u)) {
			return false, nil
		}
	}
	if err := c.conn.setBudget("expunge", c.mailboxBudget(perUIDChange)); err != nil {
		return false, err
	}
	if err := c.c.Expunge().Close(); err != nil {
		return false, c.fail(fmt.Errorf("expunge: %w", err))
	}
	return true, nil
}

// CanIdle reports whether the server offers IDLE (RFC 2177).
func (c *Client) CanIdle() bool { return c.c.Caps().Has(goimap.CapIdle) }

// Idle waits in IDLE on the selected folder until the server reports a new message
// (newMail true), max has passed, or ctx is done. An EXISTS that arrived since the last
// Idle returns at once. Callers renew IDLE by calling it again: keep max below the 29
// minutes after which servers may drop an idle client (RFC 2177 section 3).
func (c *Client) Idle(ctx context.Context, max time.Duration) (newMail bool, err error) {
	if !c.CanIdle() {
		return false, ErrNoIdle
	}
	// The budget covers the NOOP and the whole IDLE: untagged updates only.
	if err := c.conn.setBudget("idle", idleBudget); err != nil {
		return false, err
	}
	// QUIRK: not every server reports at the start of IDLE what arrived since the last
	// command (go-imap's own server does not). A NOOP first collects those EXISTS.
	if err := c.c.Noop().Wait(); err != nil {
		return false, c.fail(fmt.Errorf("noop: %w", err))
	}
	select {
	case <-c.news:
		return true, nil
	default:
	}
	c.conn.setIdle(true)
	cmd, err := c.c.Idle()
	if err != nil {
		c.conn.setIdle(false)
		return false, c.fail(fmt.Errorf("idle: %w", err))
	}
	t := time.NewTimer(max)
	defer t.Stop()
	select {
	case <-c.news:
		newMail = true
	case <-t.C:
	case <-ctx.Done():
	case <-c.c.Closed():
	}
	c.conn.setIdle(false)
	if err := cmd.Close(); err != nil {
		return newMail, c.fail(fmt.Errorf("idle done: %w", err))
	}
	if err := cmd.Wait(); err != nil {
		return newMail, c.fail(fmt.Errorf("idle: %w", err))
	}
	return newMail, ctx.Err()
}

// abortLiteral closes the connection in the middle of lit, a literal of a FETCH
// response, instead of reading the rest. go-imap's reader goroutine waits until lit is
// read to its end or fails, and FetchCommand.Close would drain it: closing the socket
// first makes lit fail after what is buffered, that failure lets the goroutine end,
// and the Client is closed once it has (see the QUIRK in readLiteral).
func (c *Client) abortLiteral(lit io.Reader) {
	c.conn.Close()
	io.Copy(io.Discard, lit)
	c.c.Close()
}

// literalReader remembers a failed read of a literal.
type literalReader struct {
	r   io.Reader
	err error
}

func (l *literalReader) Read(b []byte) (int, error) {
	n, err := l.r.Read(b)
	if err != nil && err != io.EOF {
		l.err = err
	}
	return n, err
}

func uidSet(uids []uint32) goimap.UIDSet {
	var s goimap.UIDSet
	for _, u := range uids {
		s.AddNum(goimap.UID(u))
	}
	return s
}

func fromUIDs(in []goimap.UID) []uint32 {
	out := make([]uint32, len(in))
	for i, u := range in {
		out[i] = uint32(u)
	}
	return out
}

func int64cmp(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
