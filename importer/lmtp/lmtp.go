// Package lmtp is mxdrop's LMTP delivery target (RFC 2033): it hands each message to a
// mail server (Dovecot, Cyrus, Stalwart) in one transaction for all its recipients,
// over a pool of reused sessions, and returns the server's answer per recipient. The
// protocol is emersion/go-smtp's client (NewClientLMTP, CloseWithLMTPResponse).
package lmtp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer"
)

// Client delivers over LMTP. It is safe for concurrent use: at most Connections
// transactions run at once, each on its own session; idle sessions are kept for the
// next message. A session that failed in any way other than a reply is discarded.
type Client struct {
	network, address string
	tls              *tls.Config // nil: no STARTTLS
	timeout          time.Duration
	localName        string
	slots            chan struct{} // one per allowed session
	idle             chan *session // sessions ready for a transaction
}

// session is one LMTP session: go-smtp's client on conn.
type session struct {
	*smtp.Client
	conn *pipeConn
	// pipelining: the server announced PIPELINING (RFC 2920) in its LHLO reply.
	pipelining bool
}

// New returns a Client for cfg (a loaded configs.LMTP). localName is sent in LHLO.
func New(cfg configs.LMTP, localName string) (*Client, error) {
	if cfg.Address == "" {
		return nil, errors.New("lmtp: no address")
	}
	n := cfg.Connections
	if n <= 0 {
		n = 8
	}
	c := &Client{timeout: cfg.Timeout.D(), localName: localName, slots: make(chan struct{}, n), idle: make(chan *session, n)}
	if c.timeout <= 0 {
		c.timeout = time.Minute
	}
	if c.localName == "" {
		c.localName = "localhost"
	}
	c.network, c.address = cfg.Network()
	if cfg.TLS == "starttls" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if host, _, err := net.SplitHostPort(c.address); err == nil {
			tc.ServerName = host
		}
		if cfg.CAFile != "" {
			pem, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("lmtp: read ca_file: %w", err)
			}
			pool, err := x509.SystemCertPool()
			if err != nil || pool == nil {
				pool = x509.NewCertPool()
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("lmtp: ca_file %s holds no certificate", cfg.CAFile)
			}
			tc.RootCAs = pool
		}
		c.tls = tc
	}
	return c, nil
}

// Close ends the idle sessions with QUIT. Transactions still running end theirs when
// they finish.
func (c *Client) Close() error {
	for {
		select {
		case s := <-c.idle:
			s.Quit()
		default:
			return nil
		}
	}
}

// session returns an idle session (reused) or dials a new one.
func (c *Client) session(ctx context.Context) (s *session, reused bool, err error) {
	select {
	case s := <-c.idle:
		return s, true, nil
	default:
	}
	s, err = c.dial(ctx)
	return s, false, err
}

// dial opens a new session: connect, STARTTLS when configured, LHLO.
func (c *Client) dial(ctx context.Context) (*session, error) {
	d := net.Dialer{Timeout: c.timeout}
	conn, err := d.DialContext(ctx, c.network, c.address)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", c.address, err)
	}
	pc := &pipeConn{Conn: conn}
	if c.tls != nil {
		if pc, err = c.startTLS(conn); err != nil {
			return nil, fmt.Errorf("starttls %s: %w", c.address, err)
		}
	}
	s := &session{Client: smtp.NewClientLMTP(pc), conn: pc}
	s.CommandTimeout, s.SubmissionTimeout = c.timeout, c.timeout
	if err := s.Hello(c.localName); err != nil {
		s.Close()
		return nil, fmt.Errorf("lhlo %s: %w", c.address, err)
	}
	s.pipelining, _ = s.Extension("PIPELINING")
	return s, nil
}

// startTLS runs greeting, LHLO and STARTTLS (RFC 3207) on conn and returns the TLS
// connection, which reads a made-up greeting first. QUIRK: go-smtp v0.25 has STARTTLS
// only for SMTP clients (NewClientStartTLS); its LMTP client then starts with the
// greeting and LHLO again, as RFC 3207 section 4.2 requires after STARTTLS.
func (c *Client) startTLS(conn net.Conn) (*pipeConn, error) {
	conn.SetDeadline(time.Now().Add(c.timeout))
	tp := textproto.NewConn(conn)
	fail := func(err error) (*pipeConn, error) {
		conn.Close()
		return nil, err
	}
	if _, _, err := tp.ReadResponse(220); err != nil {
		return fail(err)
	}
	if err := tp.PrintfLine("LHLO %s", c.localName); err != nil {
		return fail(err)
	}
	if _, _, err := tp.ReadResponse(250); err != nil {
		return fail(err)
	}
	if err := tp.PrintfLine("STARTTLS"); err != nil {
		return fail(err)
	}
	if _, _, err := tp.ReadResponse(220); err != nil {
		return fail(err)
	}
	tc := tls.Client(conn, c.tls)
	if err := tc.Handshake(); err != nil {
		return fail(err)
	}
	conn.SetDeadline(time.Time{})
	return &pipeConn{Conn: tc, replay: []byte("220 after STARTTLS\r\n")}, nil
}

// Deliver implements importer.Target: MAIL, one RCPT per recipient, DATA streamed from
// write, then one reply per accepted recipient. Replies (2xx, 4xx, 5xx) come back as
// results; anything else (a dropped connection, a timeout) is the error, with the
// results of the recipients answered before it.
func (c *Client) Deliver(ctx context.Context, sender string, rcpts []string, write func(io.Writer) error) ([]importer.RcptResult, error) {
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-c.slots }()
	s, reused, err := c.session(ctx)
	if err != nil {
		return nil, err
	}
	streamed := false
	stream := func(w io.Writer) error {
		streamed = true
		return write(w)
	}
	results, ended, err := c.transaction(s, sender, rcpts, stream)
	if reused && !streamed && (err != nil || allClosing(results)) {
		// A pooled session the server ended while it sat idle: Dovecot closes idle
		// LMTP sessions after 5 minutes with a 421, and a restarted server leaves
		// every pooled session dead without a word. The message never left, so the
		// server delivered nothing of it (LMTP delivers only after the message):
		// the transaction runs again, once, on a new session, instead of every
		// recipient waiting for a retry. A session just dialled is not retried, so a
		// server that answers 421 to everything (shutting down, too many
		// connections) is reported as it answers.
		s.Close()
		if s, err = c.dial(ctx); err != nil {
			return nil, err
		}
		results, ended, err = c.transaction(s, sender, rcpts, stream)
	}
	if err != nil {
		s.Close()
		return results, err
	}
	// A transaction that ended with DATA's replies is over (RFC 5321 section 4.1.1.4);
	// one refused earlier is ended with RSET. go-smtp forgets the LHLO at RSET and
	// would send it again before the next MAIL, which a pipelined transaction cannot
	// let it do in the middle of its replayed replies, so LHLO is sent now. (That
	// round trip is why RSET is not sent after every transaction.)
	if !ended {
		if err := s.Reset(); err != nil {
			s.Close()
			return results, nil
		}
		if err := s.Hello(c.localName); err != nil {
			s.Close()
			return results, nil
		}
		s.pipelining, _ = s.Extension("PIPELINING")
	}
	select {
	case c.idle <- s:
	default:
		s.Quit()
	}
	return results, nil
}

// allClosing reports whether the server answered every recipient with 421 (RFC 5321
// section 3.8: the service is closing the channel), as at MAIL on a session it ended.
func allClosing(results []importer.RcptResult) bool {
	for _, r := range results {
		if r.Status.Code != 421 {
			return false
		}
	}
	return len(results) > 0
}

// transaction runs one transaction on s, pipelined where the server allows it. ended
// is true when it ended with the replies to DATA; err is set when the session is
// broken.
func (c *Client) transaction(s *session, sender string, rcpts []string, write func(io.Writer) error) (out []importer.RcptResult, ended bool, err error) {
	if s.pipelining {
		var dataOpen bool
		if dataOpen, err = s.pipeline(sender, rcpts); err != nil {
			return nil, false, err
		}
		dataSent := false
		defer func() {
			s.conn.endReplay()
			if dataOpen && !dataSent && err == nil {
				// The server waits for a message no recipient was accepted for
				// (or after a refused MAIL): the session cannot go on, and
				// closing it makes the RSET that follows fail.
				s.conn.Close()
			}
		}()
		return c.steps(s, sender, rcpts, write, func() { dataSent = true; s.conn.endReplay() })
	}
	return c.steps(s, sender, rcpts, write, func() {})
}

// steps runs MAIL, RCPT, DATA and the message on s with go-smtp, each command waiting
// for its reply, or, after pipeline, reading the replies already received; dataOpened
// is called once DATA was answered with 354, before the message is written.
func (c *Client) steps(s *session, sender string, rcpts []string, write func(io.Writer) error, dataOpened func()) (out []importer.RcptResult, ended bool, err error) {
	if err := s.Mail(sender, nil); err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			// The server refused the sender: every recipient gets that answer.
			out = make([]importer.RcptResult, len(rcpts))
			for i, r := range rcpts {
				out[i] = result(r, se)
			}
			return out, false, nil
		}
		return nil, false, fmt.Errorf("mail from: %w", err)
	}
	out = make([]importer.RcptResult, 0, len(rcpts))
	var accepted []string
	for _, r := range rcpts {
		err := s.Rcpt(r, nil)
		var se *smtp.SMTPError
		switch {
		case err == nil:
			accepted = append(accepted, r)
		case errors.As(err, &se):
			out = append(out, result(r, se))
		default:
			return out, false, fmt.Errorf("rcpt to: %w", err)
		}
	}
	if len(accepted) == 0 {
		return out, false, nil
	}
	w, err := s.Data()
	if err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			for _, r := range accepted {
				out = append(out, result(r, se))
			}
			return out, false, nil
		}
		return out, false, fmt.Errorf("data: %w", err)
	}
	dataOpened()
	if err := write(w); err != nil {
		// The message could not be read: the transaction cannot be ended cleanly
		// (a dot would deliver a truncated message), so the session is dropped.
		return out, false, fmt.Errorf("write message: %w", err)
	}
	resp, err := w.CloseWithLMTPResponse()
	var perRcpt smtp.LMTPDataError
	if err != nil && !errors.As(err, &perRcpt) {
		// The connection broke while the replies came: keep those that came.
		for _, r := range accepted {
			if _, ok := resp[r]; ok {
				out = append(out, importer.RcptResult{Rcpt: r, Reply: "250"})
			}
		}
		return out, false, fmt.Errorf("end of data: %w", err)
	}
	for _, r := range accepted {
		if se, ok := perRcpt[r]; ok {
			out = append(out, result(r, se))
			continue
		}
		if d, ok := resp[r]; ok {
			out = append(out, importer.RcptResult{Rcpt: r, Reply: "250 " + d.StatusText})
		}
	}
	return out, true, nil
}

// result turns a server's refusal into a recipient's result.
func result(rcpt string, se *smtp.SMTPError) importer.RcptResult {
	code := se.Code
	if code < 400 || code > 599 {
		code = 451 // a reply outside 4xx/5xx where a refusal is expected: retry
	}
	class := code / 100
	enh := fmt.Sprintf("%d.0.0", class)
	if e := se.EnhancedCode; e[0] == class && e[1] >= 0 && e[2] >= 0 && (e[1] != 0 || e[2] != 0) {
		enh = fmt.Sprintf("%d.%d.%d", e[0], e[1], e[2])
	}
	reply := fmt.Sprintf("%d %s %s", code, enh, strings.TrimSpace(se.Message))
	return importer.RcptResult{Rcpt: rcpt, Status: importer.Status{Code: code, Enhanced: enh}, Reply: reply}
}
