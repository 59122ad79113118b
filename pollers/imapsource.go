package pollers

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/mxdrop/mxdrop/pollers/imap"
)

// imapSession is a logged-in IMAP connection.
type imapSession struct {
	p   *Poller
	c   *imap.Client
	cur string // the selected folder
	// seen0 is the highest UID the last cycle listed in the first folder (the one IDLE
	// watches); a higher UIDNEXT on selecting it again means new mail.
	seen0 uint32
}

func newIMAPSession(p *Poller, c *imap.Client) *imapSession { return &imapSession{p: p, c: c} }

func (s *imapSession) folders() []string { return s.p.cfg.Folders }

func (s *imapSession) open(ctx context.Context, name string) (folder, error) {
	mb, err := s.c.Select(name)
	if err != nil {
		s.cur = ""
		return nil, err
	}
	s.cur = name
	return &imapFolder{s: s, mb: mb, flagged: map[uint32]bool{}}, nil
}

func (s *imapSession) close() { s.c.Logout() }

func (s *imapSession) canIdle() bool { return s.c.CanIdle() }

// idle waits in IDLE on the first folder. Selecting it again first may show mail that
// arrived while the cycle was in other folders: then it returns at once.
func (s *imapSession) idle(ctx context.Context, max time.Duration) (bool, error) {
	first := s.p.cfg.Folders[0]
	if s.cur != first {
		mb, err := s.c.Select(first)
		if err != nil {
			return false, err
		}
		s.cur = first
		if mb.UIDNext > 0 && mb.UIDNext-1 > s.seen0 {
			return true, nil
		}
	}
	return s.c.Idle(ctx, max)
}

// imapFolder is a selected IMAP folder.
type imapFolder struct {
	s  *imapSession
	mb imap.Mailbox
	// flagged holds our messages flagged \Deleted but not yet expunged: until commit,
	// or for the whole session on a server without UIDPLUS where someone else's
	// message is flagged \Deleted too.
	flagged map[uint32]bool
	maxUID  uint32 // the highest UID listed
}

func (f *imapFolder) scope() string    { return "imap:" + f.mb.Name }
func (f *imapFolder) validity() uint32 { return f.mb.UIDValidity }

func (f *imapFolder) id(m remoteMsg) string {
	return "poller/" + f.s.p.name + "/imap/" + f.mb.Name + "/" + strconv.FormatUint(uint64(f.mb.UIDValidity), 10) + "/" + m.Key
}

func (f *imapFolder) label(m remoteMsg) string { return f.mb.Name + "/" + m.Key }

func (f *imapFolder) list(ctx context.Context) ([]remoteMsg, error) {
	uids, err := f.s.c.UIDs()
	if err != nil {
		return nil, err
	}
	out := make([]remoteMsg, len(uids))
	for i, u := range uids {
		out[i] = remoteMsg{Key: strconv.FormatUint(uint64(u), 10), Num: u, Size: -1}
		f.maxUID = max(f.maxUID, u)
	}
	return out, nil
}

func (f *imapFolder) describe(ctx context.Context, msgs []remoteMsg) ([]remoteMsg, error) {
	infos, err := f.s.c.Infos(nums(msgs))
	if err != nil {
		return nil, err
	}
	byUID := make(map[uint32]imap.Info, len(infos))
	for _, in := range infos {
		byUID[in.UID] = in
	}
	out := msgs[:0:0]
	for _, m := range msgs {
		if in, ok := byUID[m.Num]; ok {
			m.Size, m.Arrived = in.Size, in.InternalDate
			out = append(out, m)
		}
	}
	return out, nil
}

// fetch streams msgs into the spool. A body whose literal announces more than
// max_message_size (RFC822.SIZE, checked before, is only the server's word) is refused
// before a byte of it is read: FetchBodies closes the connection, and fetch returns the
// *tooLargeError. The spool's writer bounds the copy as well.
func (f *imapFolder) fetch(ctx context.Context, msgs []remoteMsg, sp *spool) ([]spooled, error) {
	files := map[uint32]*lfWriter{} // by sequence number, while being written
	done := map[uint32]spooled{}    // by UID
	byUID := make(map[uint32]remoteMsg, len(msgs))
	for _, m := range msgs {
		byUID[m.Num] = m
	}
	err := f.s.c.FetchBodies(nums(msgs),
		func(seq, uid uint32, size int64) (io.Writer, error) {
			if old := files[seq]; old != nil {
				old.w.discard()
			}
			// The literal's size, and the key when the UID came first (go-imap
			// needs it first to tell the response is ours); done fills in the rest.
			m := remoteMsg{Key: byUID[uid].Key, Size: size}
			if err := sp.refuse(m); err != nil {
				return nil, err
			}
			files[seq] = &lfWriter{w: sp.create(m)}
			return files[seq], nil
		},
		func(seq, uid uint32, _ int64) error {
			l := files[seq]
			delete(files, seq)
			m, ok := byUID[uid]
			if !ok {
				l.w.discard() // not asked for
				return nil
			}
			l.w.m = m
			err := l.flush()
			g, ferr := l.w.finish()
			if err == nil {
				err = ferr
			}
			if err != nil {
				sp.release(g)
				return fmt.Errorf("spool: %w", err)
			}
			done[uid] = g
			return nil
		})
	for _, l := range files { // incomplete messages
		l.w.discard()
	}
	out := make([]spooled, 0, len(done))
	for _, m := range msgs {
		if g, ok := done[m.Num]; ok {
			out = append(out, g)
		}
	}
	return out, err
}

// expungeEvery bounds how many of our messages stay flagged \Deleted before an
// expunge. One expunge for many messages costs the server far less than one per batch;
// the bound keeps other clients from seeing a long tail of deleted messages while a
// large folder is drained.
const expungeEvery = 1000

// remove flags msgs \Deleted; commit expunges them, or remove itself once
// expungeEvery are flagged. It returns how many it expunged.
func (f *imapFolder) remove(ctx context.Context, msgs []remoteMsg) (int, error) {
	if err := f.s.c.FlagDeleted(nums(msgs)); err != nil {
		return 0, err
	}
	for _, m := range msgs {
		f.flagged[m.Num] = true
	}
	if len(f.flagged) >= expungeEvery {
		return f.commit(ctx)
	}
	return 0, nil
}

// commit expunges the messages remove flagged.
func (f *imapFolder) commit(ctx context.Context) (int, error) {
	if len(f.flagged) == 0 {
		return 0, nil
	}
	uids := slices.Sorted(maps.Keys(f.flagged))
	expunged, err := f.s.c.Expunge(uids, func(uid uint32) bool { return f.flagged[uid] })
	if err != nil {
		return 0, err
	}
	if !expunged {
		f.s.p.log.Warn().Str("folder", f.mb.Name).Int("messages", len(f.flagged)).
			Msg("server lacks UIDPLUS and another client's message is flagged \\Deleted: ours stay flagged, not expunged; retried later")
		return 0, nil
	}
	n := len(f.flagged)
	clear(f.flagged)
	return n, nil
}

func (f *imapFolder) messageIDs(ctx context.Context, msgs []remoteMsg) (map[string]string, error) {
	ids, err := f.s.c.MessageIDs(nums(msgs))
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(ids))
	for u, id := range ids {
		out[strconv.FormatUint(uint64(u), 10)] = id
	}
	return out, nil
}

func (f *imapFolder) done() {
	if f.mb.Name == f.s.p.cfg.Folders[0] {
		// Every UID below UIDNEXT at SELECT was there for the listing that followed.
		f.s.seen0 = f.maxUID
		if f.mb.UIDNext > 0 {
			f.s.seen0 = max(f.maxUID, f.mb.UIDNext-1)
		}
	}
}

// lfWriter writes a spool file, turning CRLF line endings into LF: IMAP sends
// messages with CRLF, Maildir files have LF (the POP3 client converts the same way). A
// bare CR is kept.
type lfWriter struct {
	w   *spoolWriter
	cr  bool // the previous chunk ended in a CR not yet written
	buf []byte
}

func (l *lfWriter) Write(p []byte) (int, error) {
	out := l.buf[:0]
	for _, c := range p {
		if l.cr {
			l.cr = false
			if c != '\n' {
				out = append(out, '\r')
			}
		}
		if c == '\r' {
			l.cr = true
			continue
		}
		out = append(out, c)
	}
	l.buf = out
	if _, err := l.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// flush writes a CR held back at the end of the message.
func (l *lfWriter) flush() error {
	if !l.cr {
		return nil
	}
	l.cr = false
	_, err := l.w.Write([]byte{'\r'})
	return err
}

func nums(msgs []remoteMsg) []uint32 {
	out := make([]uint32, len(msgs))
	for i, m := range msgs {
		out[i] = m.Num
	}
	return out
}
