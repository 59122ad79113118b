package pollers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"

	"github.com/emersion/go-sasl"

	"github.com/mxdrop/mxdrop/pollers/pop3"
)

// connectPOP3 dials and logs in. Cancelling ctx closes the connection for as long as the
// session lives.
func (p *Poller) connectPOP3(ctx context.Context, addr string) (session, error) {
	mode, err := pop3.ParseTLSMode(p.cfg.TLS)
	if err != nil {
		return nil, err
	}
	c, err := pop3.Dial(ctx, pop3.Options{Addr: addr, TLS: mode, TLSConfig: p.tls, Timeout: p.cfg.Timeout.D()})
	if err != nil {
		return nil, fmt.Errorf("pop3 %s: %w", addr, err)
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	if err := p.login(ctx, pop3Auth{c}); err != nil {
		stop()
		c.Close()
		return nil, err
	}
	return &pop3Session{p: p, c: c, stop: stop}, nil
}

// pop3Auth adapts the POP3 client to authenticator: USER/PASS, or AUTH PLAIN where the
// server offers SASL PLAIN but not USER (RFC 2449 section 6.3).
type pop3Auth struct{ c *pop3.Client }

func (a pop3Auth) Login(user, password string) error {
	if caps, err := a.c.Capabilities(); err == nil && len(caps) > 0 && !caps.Has("USER") &&
		slices.Contains(caps.SASL(), sasl.Plain) {
		return a.c.AuthPlain(user, password)
	}
	return a.c.Login(user, password)
}

func (a pop3Auth) Authenticate(sc sasl.Client) error { return a.c.Auth(sc) }

func isPOP3AuthError(err error) bool {
	var pe *pop3.Error
	return errors.As(err, &pe) && pe.AuthFailed()
}

// pop3Session is a logged-in POP3 session: one folder, the maildrop.
type pop3Session struct {
	p     *Poller
	c     *pop3.Client
	stop  func() bool
	marks []remoteMsg // messages marked deleted (DELE answered +OK), removed by QUIT
	quit  bool        // QUIT was sent
}

func (s *pop3Session) folders() []string { return []string{""} }

func (s *pop3Session) open(ctx context.Context, name string) (folder, error) {
	return &pop3Folder{s: s}, nil
}

// close ends the session (quit) if commit did not, and closes the connection.
func (s *pop3Session) close() {
	s.stop()
	s.quitSession()
	s.c.Close()
}

// quitSession sends QUIT, which makes the server remove the messages marked deleted (RFC 1939
// section 6), and logs each message it removed, or that it may not have. It returns how
// many the server removed: none unless it answered QUIT with +OK. Those it did not
// remove stay on the server, and a later cycle deletes them again once it has verified
// them (their state says they are handled).
func (s *pop3Session) quitSession() int {
	if s.quit {
		return 0
	}
	s.quit = true
	marks := s.marks
	s.marks = nil
	if err := s.c.Quit(); err != nil {
		if len(marks) > 0 {
			s.p.log.Warn().Err(err).Int("messages", len(marks)).
				Msg("QUIT failed: the messages marked deleted may still be on the server; a later cycle deletes them")
		}
		for _, m := range marks {
			s.p.log.Warn().Str("uid", m.Key).Str("file", "pop3/"+m.Key).Str("action", "delete_unconfirmed").
				Msg("message not confirmed deleted from the server")
		}
		return 0
	}
	for _, m := range marks {
		s.p.log.Info().Str("uid", m.Key).Str("file", "pop3/"+m.Key).Str("action", "deleted").
			Msg("message deleted from the server")
	}
	return len(marks)
}

// pop3Folder is the maildrop.
type pop3Folder struct {
	s       *pop3Session
	refused int // RETRs answered -ERR, see fetchRefused
}

func (f *pop3Folder) fetchRefused() int {
	n := f.refused
	f.refused = 0
	return n
}

func (f *pop3Folder) scope() string    { return "pop3" }
func (f *pop3Folder) validity() uint32 { return 0 }

func (f *pop3Folder) id(m remoteMsg) string {
	id := "poller/" + f.s.p.name + "/pop3/" + m.Key
	if m.Gen != "" {
		id += "/" + m.Gen
	}
	return id
}

func (f *pop3Folder) label(m remoteMsg) string { return "pop3/" + m.Key }

// list is UIDL and LIST, oldest (lowest message number) first.
func (f *pop3Folder) list(ctx context.Context) ([]remoteMsg, error) {
	uids, err := f.s.c.UIDL()
	if err != nil {
		var pe *pop3.Error
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("the server does not support UIDL, without which messages cannot be told apart across sessions: %w", err)
		}
		return nil, err
	}
	sizes, err := f.s.c.List()
	if err != nil {
		return nil, err
	}
	size := make(map[int]int64, len(sizes))
	for _, s := range sizes {
		size[s.Num] = s.Size
	}
	sort.Slice(uids, func(i, j int) bool { return uids[i].Num < uids[j].Num })
	seen := make(map[string]bool, len(uids))
	out := make([]remoteMsg, 0, len(uids))
	for _, u := range uids {
		if seen[u.UID] {
			// QUIRK: a server that repeats a UIDL breaks RFC 1939 section 7; only the first
			// message of that id can be tracked.
			f.s.p.log.Warn().Str("uidl", u.UID).Int("num", u.Num).Msg("server repeats a UIDL; message skipped")
			continue
		}
		seen[u.UID] = true
		sz, ok := size[u.Num]
		if !ok {
			sz = -1
		}
		out = append(out, remoteMsg{Key: u.UID, Num: uint32(u.Num), Size: sz})
	}
	return out, nil
}

// headerPrint reads the server copy's header block with TOP n 0; empty when the server
// refuses TOP.
func (f *pop3Folder) headerPrint(ctx context.Context, m remoteMsg) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	r, err := f.s.c.Top(int(m.Num), 0)
	var pe *pop3.Error
	if errors.As(err, &pe) {
		return "", nil // TOP is optional (RFC 1939 section 7): cannot verify
	}
	if err != nil {
		return "", err
	}
	hp, err := headerPrint(r)
	if err == nil {
		// TOP n 0 is the header block and its empty line. Closing the reply reads it to
		// its end, which a hostile server never sends: read at most topSlack more, and
		// leave the session rather than read on.
		if n, _ := io.CopyN(io.Discard, r, topSlack+1); n > topSlack {
			f.s.c.Close()
			return "", fmt.Errorf("TOP %d 0: the reply goes on past the header block (over %d bytes more): %w", m.Num, topSlack, pop3.ErrReplyTooLong)
		}
	}
	if cerr := r.Close(); err == nil {
		err = cerr
	}
	return hp, err
}

// topSlack bounds what headerPrint reads of a TOP n 0 reply after the header block
// (headerPrintMax bounds the block itself): a server answering TOP with more than a
// header ends the session.
const topSlack = 64 << 10

// describe has nothing to add: LIST gave the sizes, and POP3 has no arrival date (it is
// read from the message's header).
func (f *pop3Folder) describe(ctx context.Context, msgs []remoteMsg) ([]remoteMsg, error) {
	return msgs, nil
}

// fetch is one RETR per message, pipelined where the server allows it, each streamed
// into the spool. A message that grows past max_message_size (LIST gave only the
// server's word for its size) ends the session: a RETR cannot be left midway but by
// reading it to its end, which a hostile server never sends, so the connection is
// closed and fetch returns the *tooLargeError. The message stays on the server.
func (f *pop3Folder) fetch(ctx context.Context, msgs []remoteMsg, sp *spool) ([]spooled, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	nums := make([]int, len(msgs))
	for i, m := range msgs {
		nums[i] = int(m.Num)
	}
	var out []spooled
	var tooLarge error
	err := f.s.c.RetrAll(nums, func(i int, r io.Reader, refused *pop3.Error) error {
		m := msgs[i]
		if refused != nil {
			if refused.Temporary() {
				return fmt.Errorf("retr %d: %w", m.Num, refused)
			}
			// The server refuses a message it listed: it stays there unfetched, which
			// the cycle counts as an error rather than letting it sit unnoticed.
			f.refused++
			f.s.p.log.Warn().Err(refused).Str("uid", m.Key).Str("file", f.label(m)).Str("reason", "retr_refused").
				Msg("the server refused to send a message it listed; it stays on the server and is retried")
			return nil
		}
		w := sp.create(m)
		if _, err := io.Copy(w, r); err != nil {
			w.discard()
			if asTooLarge(err) != nil {
				f.s.c.Close() // RetrAll would read the rest, without end
				tooLarge = err
			}
			return fmt.Errorf("retr %d: %w", m.Num, err)
		}
		g, err := w.finish()
		if err != nil {
			return err
		}
		out = append(out, g)
		return ctx.Err()
	})
	if tooLarge != nil {
		err = tooLarge // rather than the closed connection it caused
	}
	return out, err
}

// remove marks msgs deleted, pipelined where the server allows it, and returns 0:
// POP3 removes them only at QUIT, which commit sends and counts.
func (f *pop3Folder) remove(ctx context.Context, msgs []remoteMsg) (int, error) {
	nums := make([]int, len(msgs))
	for i, m := range msgs {
		nums[i] = int(m.Num)
	}
	refused, err := f.s.c.DeleAll(nums)
	if err != nil {
		// Which were marked before the connection broke is unknown, and none is
		// removed without a QUIT: their state says they are handled, so a later
		// cycle deletes them again.
		for _, m := range msgs {
			f.s.p.log.Warn().Str("uid", m.Key).Str("file", f.label(m)).Str("action", "kept").Err(err).
				Msg("message not deleted from the server: the connection failed; a later cycle deletes it")
		}
		return 0, err
	}
	for i, e := range refused {
		if e == nil {
			f.s.marks = append(f.s.marks, msgs[i])
		} else {
			f.s.p.log.Warn().Str("uid", msgs[i].Key).Str("file", f.label(msgs[i])).Err(e).
				Msg("the server refused DELE; a later cycle tries again")
		}
	}
	return 0, nil
}

// commit ends the session with QUIT, which removes the messages marked deleted, and
// returns how many the server confirmed removed. A cycle has one POP3 folder and no
// further use of the session.
func (f *pop3Folder) commit(ctx context.Context) (int, error) {
	return f.s.quitSession(), nil
}

func (f *pop3Folder) done() {}
