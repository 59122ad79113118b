package pop3

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// TLSMode is how a connection is secured: the poller configuration's tls key.
type TLSMode int

const (
	// TLSNone is plaintext, credentials included. Only for loopback or trusted networks.
	TLSNone TLSMode = iota
	// TLSStartTLS connects in plaintext and upgrades with STLS (RFC 2595) before anything
	// else; a server that refuses STLS is an error.
	TLSStartTLS
	// TLSImplicit speaks TLS from the first byte (port 995).
	TLSImplicit
)

// String returns the configuration spelling: "none", "starttls" or "implicit".
func (m TLSMode) String() string {
	switch m {
	case TLSNone:
		return "none"
	case TLSStartTLS:
		return "starttls"
	case TLSImplicit:
		return "implicit"
	}
	return "TLSMode(" + strconv.Itoa(int(m)) + ")"
}

// ParseTLSMode parses the configuration spelling of a TLSMode.
func ParseTLSMode(s string) (TLSMode, error) {
	switch s {
	case "none":
		return TLSNone, nil
	case "starttls":
		return TLSStartTLS, nil
	case "implicit":
		return TLSImplicit, nil
	}
	return 0, fmt.Errorf("pop3: unknown tls mode %q (want none, starttls or implicit)", s)
}

// DefaultTimeout is the idle timeout when Options.Timeout is zero.
const DefaultTimeout = 60 * time.Second

// maxLine bounds a reply line other than message content. RFC 2449 section 4 allows 512
// octets; servers that exceed it a little are tolerated.
const maxLine = 8 << 10

// Options says where and how to connect.
type Options struct {
	// Addr is host:port.
	Addr string
	// TLS is the security of the connection; the zero value is TLSNone.
	TLS TLSMode
	// TLSConfig is used for TLSStartTLS and TLSImplicit; nil means the system roots. A copy
	// is used, with ServerName set to Addr's host when empty. Certificates are verified
	// unless the caller's configuration says otherwise.
	TLSConfig *tls.Config
	// Timeout aborts a dial, handshake, read or write that makes no progress for this long;
	// zero means DefaultTimeout.
	Timeout time.Duration
}

// Client is one POP3 session. Its methods fail with an *Error when the server answers
// -ERR (the session goes on), and with another error when the connection or the protocol
// broke; after such an error every method fails and only Close is left to call.
type Client struct {
	raw      net.Conn // TCP
	idle     *idleConn
	conn     net.Conn // idle (raw with deadlines), or TLS on top of that
	text     *textproto.Reader
	br       *bufio.Reader
	bw       *bufio.Writer
	tlsState *tls.ConnectionState
	greeting string
	caps     Capabilities // nil until known

	msg    *messageReader // non-nil while a message is being read
	err    error          // sticky: the connection is broken
	closed atomic.Bool
}

// Dial connects, reads the greeting and, with TLSStartTLS, upgrades the connection. ctx
// bounds all of that; the Client is independent of ctx afterwards. On error nothing stays
// open.
func Dial(ctx context.Context, opts Options) (*Client, error) {
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	host, _, err := net.SplitHostPort(opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("pop3: dial: %w", err)
	}
	var tlsConfig *tls.Config
	if opts.TLS == TLSStartTLS || opts.TLS == TLSImplicit {
		if opts.TLSConfig != nil {
			tlsConfig = opts.TLSConfig.Clone()
		} else {
			tlsConfig = &tls.Config{}
		}
		if tlsConfig.ServerName == "" {
			tlsConfig.ServerName = host
		}
	} else if opts.TLS != TLSNone {
		return nil, fmt.Errorf("pop3: dial: unknown %v", opts.TLS)
	}

	d := net.Dialer{Timeout: timeout}
	raw, err := d.DialContext(ctx, "tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("pop3: dial: %w", err)
	}
	c := &Client{raw: raw, idle: &idleConn{Conn: raw, timeout: timeout}}
	c.setConn(c.idle)
	// Cancelling ctx closes the connection, which unblocks whatever Dial is waiting for.
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	err = c.handshake(ctx, opts.TLS, tlsConfig)
	if !stop() {
		err = fmt.Errorf("pop3: dial: %w", context.Cause(ctx))
	}
	if err != nil {
		raw.Close()
		return nil, err
	}
	return c, nil
}

// handshake does what Dial does after the TCP connection.
func (c *Client) handshake(ctx context.Context, mode TLSMode, cfg *tls.Config) error {
	if mode == TLSImplicit {
		if err := c.startTLS(ctx, cfg); err != nil {
			return err
		}
	}
	line, err := c.readLine()
	if err != nil {
		return fmt.Errorf("pop3: greeting: %w", err)
	}
	ok, rest := splitStatus(line)
	switch {
	case ok == "+OK":
		c.greeting = rest
	case ok == "-ERR":
		return parseErr("greeting", rest)
	default:
		return fmt.Errorf("%w: greeting %.100q", errProtocol, line)
	}
	if mode == TLSStartTLS {
		if _, err := c.cmd("STLS"); err != nil {
			var e *Error
			if errors.As(err, &e) {
				return fmt.Errorf("%w: %w", ErrSTLSUnavailable, err)
			}
			return err
		}
		// RFC 2595 section 4 and CVE-2011-0411: anything the server sent after +OK and
		// before the handshake was not protected by TLS and must not be read as a reply.
		if c.br.Buffered() > 0 {
			return fmt.Errorf("%w: %d bytes after the STLS reply, before the TLS handshake", errProtocol, c.br.Buffered())
		}
		if err := c.startTLS(ctx, cfg); err != nil {
			return err
		}
	}
	return nil
}

// startTLS runs a TLS handshake on the connection and forgets what plaintext told us.
func (c *Client) startTLS(ctx context.Context, cfg *tls.Config) error {
	tc := tls.Client(c.conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("pop3: tls handshake: %w", err)
	}
	state := tc.ConnectionState()
	c.tlsState = &state
	c.caps = nil
	c.setConn(tc)
	return nil
}

func (c *Client) setConn(conn net.Conn) {
	c.conn = conn
	c.br = bufio.NewReaderSize(conn, 64<<10)
	c.bw = bufio.NewWriterSize(conn, 4<<10)
	c.text = textproto.NewReader(c.br)
}

// Greeting returns the text of the server's +OK greeting (it may hold an APOP timestamp).
func (c *Client) Greeting() string { return c.greeting }

// TLSConnectionState returns the state of the TLS connection, and false for plaintext.
func (c *Client) TLSConnectionState() (tls.ConnectionState, bool) {
	if c.tlsState == nil {
		return tls.ConnectionState{}, false
	}
	return *c.tlsState, true
}

// Close closes the connection without QUIT, so the server deletes nothing (RFC 1939
// section 6). It may be called from another goroutine to abort a blocked call, and more
// than once; after Quit it does nothing.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	return c.raw.Close()
}

// fail marks the connection broken with err, closes it and returns err.
func (c *Client) fail(err error) error {
	if c.err == nil {
		c.err = err
	}
	c.Close()
	return err
}

// ready returns why no command can be sent now, or nil.
func (c *Client) ready(verb string) error {
	switch {
	case c.err != nil:
		return fmt.Errorf("pop3: %s: connection unusable after an earlier error: %w", verb, c.err)
	case c.closed.Load():
		return fmt.Errorf("pop3: %s: %w", verb, net.ErrClosed)
	case c.msg != nil:
		return ErrMessageOpen
	}
	return nil
}

// send writes one command line. args must not hold line breaks.
func (c *Client) send(verb string, args ...string) error {
	if err := c.ready(verb); err != nil {
		return err
	}
	for _, a := range args {
		if strings.ContainsAny(a, "\r\n\x00") {
			return fmt.Errorf("pop3: %s: argument holds a line break or NUL", verb)
		}
	}
	c.bw.WriteString(verb)
	for _, a := range args {
		c.bw.WriteByte(' ')
		c.bw.WriteString(a)
	}
	c.bw.WriteString("\r\n")
	if err := c.bw.Flush(); err != nil {
		// The error of a network write holds no payload, so no password either.
		return c.fail(fmt.Errorf("pop3: %s: %w", verb, err))
	}
	return nil
}

// writeLine writes a raw line (an AUTH response); it holds secrets, so errors do not.
func (c *Client) writeLine(verb, line string) error {
	c.bw.WriteString(line)
	c.bw.WriteString("\r\n")
	if err := c.bw.Flush(); err != nil {
		return c.fail(fmt.Errorf("pop3: %s: %w", verb, err))
	}
	return nil
}

// readLine reads one line of at most maxLine bytes without its line break.
func (c *Client) readLine() (string, error) {
	var line []byte
	for {
		chunk, err := c.br.ReadSlice('\n')
		if len(line)+len(chunk) > maxLine {
			return "", c.fail(fmt.Errorf("%w: reply line longer than %d bytes", errProtocol, maxLine))
		}
		line = append(line, chunk...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return "", c.fail(err)
		}
		break
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return string(line), nil
}

// splitStatus splits a reply into "+OK", "-ERR" or "+" and the rest without its space.
func splitStatus(line string) (status, rest string) {
	for _, s := range []string{"+OK", "-ERR"} {
		if line == s {
			return s, ""
		}
		if strings.HasPrefix(line, s+" ") {
			return s, line[len(s)+1:]
		}
	}
	if line == "+" || strings.HasPrefix(line, "+ ") {
		return "+", strings.TrimPrefix(strings.TrimPrefix(line, "+"), " ")
	}
	return "", line
}

// readStatus reads a status line: the text after +OK, an *Error for -ERR, or a protocol
// error (which breaks the connection).
func (c *Client) readStatus(verb string) (string, error) {
	line, err := c.readLine()
	if err != nil {
		return "", fmt.Errorf("pop3: %s: %w", verb, err)
	}
	switch status, rest := splitStatus(line); status {
	case "+OK":
		return rest, nil
	case "-ERR":
		return "", parseErr(verb, rest)
	}
	return "", c.fail(fmt.Errorf("%w: %s: unexpected reply %.100q", errProtocol, verb, line))
}

// cmd sends a command and reads its single-line reply.
func (c *Client) cmd(verb string, args ...string) (string, error) {
	if err := c.send(verb, args...); err != nil {
		return "", err
	}
	return c.readStatus(verb)
}

// cmdMulti sends a command and reads its multi-line reply (RFC 1939 section 3): the lines
// up to the terminating ".", dot-unstuffed.
func (c *Client) cmdMulti(verb string, args ...string) ([]string, error) {
	if _, err := c.cmd(verb, args...); err != nil {
		return nil, err
	}
	var lines []string
	size := 0
	for {
		line, err := c.readLine()
		if err != nil {
			return nil, fmt.Errorf("pop3: %s: %w", verb, err)
		}
		if line == "." {
			return lines, nil
		}
		size += len(line)
		if len(lines) >= maxListLines || size > maxListBytes {
			// A broken or hostile server listing without end: stop before memory does.
			return nil, c.fail(fmt.Errorf("%w: %w: %s: reply longer than %d lines or %d MiB", errProtocol, ErrReplyTooLong, verb, maxListLines, maxListBytes>>20))
		}
		lines = append(lines, strings.TrimPrefix(line, "."))
	}
}

// maxListLines and maxListBytes bound a multi-line reply other than a message (UIDL,
// LIST, CAPA). A real maildrop lists far fewer messages (Gmail's POP3 offers a few
// hundred per session); a longer listing is a broken server and ends the session.
const (
	maxListLines = 1_000_000
	maxListBytes = 64 << 20
)

// Capabilities is the reply to CAPA: capability names in upper case with their arguments.
type Capabilities map[string][]string

// Has reports whether the capability name (any case) is present.
func (c Capabilities) Has(name string) bool {
	_, ok := c[strings.ToUpper(name)]
	return ok
}

// SASL returns the SASL mechanisms offered for AUTH.
func (c Capabilities) SASL() []string { return c["SASL"] }

// Capabilities returns the server's capabilities (RFC 2449). A server without CAPA yields an
// empty set and no error. The answer is cached; STLS and a successful login forget it,
// since servers announce different capabilities after each (RFC 2449 section 5).
func (c *Client) Capabilities() (Capabilities, error) {
	if c.caps != nil {
		if err := c.ready("CAPA"); err != nil {
			return nil, err
		}
		return maps.Clone(c.caps), nil
	}
	lines, err := c.cmdMulti("CAPA")
	var e *Error
	if errors.As(err, &e) {
		c.caps = Capabilities{}
		return Capabilities{}, nil
	}
	if err != nil {
		return nil, err
	}
	caps := Capabilities{}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		caps[strings.ToUpper(f[0])] = f[1:]
	}
	c.caps = caps
	return maps.Clone(caps), nil
}

// MessageSize is a line of LIST: a message number of this session and its size in octets
// as the server counts them (with CRLF line endings).
type MessageSize struct {
	Num  int
	Size int64
}

// MessageUID is a line of UIDL: a message number of this session and the message's unique
// id, which stays the same across sessions (RFC 1939 section 7).
type MessageUID struct {
	Num int
	UID string
}

// Stat returns the number of messages not marked deleted and their total size (STAT).
func (c *Client) Stat() (count int, size int64, err error) {
	rest, err := c.cmd("STAT")
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(rest)
	if len(f) < 2 {
		return 0, 0, c.fail(fmt.Errorf("%w: STAT: reply %.100q", errProtocol, rest))
	}
	count, err1 := strconv.Atoi(f[0])
	size, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil || count < 0 || size < 0 {
		return 0, 0, c.fail(fmt.Errorf("%w: STAT: reply %.100q", errProtocol, rest))
	}
	return count, size, nil
}

// parseNumPair parses "n rest..." of LIST and UIDL.
func parseNumPair(line string) (int, string, bool) {
	f := strings.Fields(line)
	if len(f) < 2 {
		return 0, "", false
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n < 1 {
		return 0, "", false
	}
	return n, f[1], true
}

func parseSize(verb, line string) (MessageSize, error) {
	n, s, ok := parseNumPair(line)
	size, err := strconv.ParseInt(s, 10, 64)
	if !ok || err != nil || size < 0 {
		return MessageSize{}, fmt.Errorf("%w: %s: line %.100q", errProtocol, verb, line)
	}
	return MessageSize{Num: n, Size: size}, nil
}

// List returns the number and size of every message not marked deleted (LIST).
func (c *Client) List() ([]MessageSize, error) {
	lines, err := c.cmdMulti("LIST")
	if err != nil {
		return nil, err
	}
	out := make([]MessageSize, 0, len(lines))
	for _, l := range lines {
		m, err := parseSize("LIST", l)
		if err != nil {
			return nil, c.fail(err)
		}
		out = append(out, m)
	}
	return out, nil
}

// ListOne returns the size of message n (LIST n); an *Error if there is no such message.
func (c *Client) ListOne(n int) (MessageSize, error) {
	if err := checkNum("LIST", n); err != nil {
		return MessageSize{}, err
	}
	rest, err := c.cmd("LIST", strconv.Itoa(n))
	if err != nil {
		return MessageSize{}, err
	}
	m, err := parseSize("LIST", rest)
	if err != nil {
		return MessageSize{}, c.fail(err)
	}
	return m, nil
}

// validUID reports whether uid is a unique-id of RFC 1939 section 7: 1 to 70 characters
// 0x21 to 0x7E. Longer ones are tolerated up to 255.
func validUID(uid string) bool {
	if uid == "" || len(uid) > 255 {
		return false
	}
	for i := 0; i < len(uid); i++ {
		if uid[i] < 0x21 || uid[i] > 0x7e {
			return false
		}
	}
	return true
}

func parseUID(line string) (MessageUID, error) {
	n, uid, ok := parseNumPair(line)
	if !ok || !validUID(uid) {
		return MessageUID{}, fmt.Errorf("%w: UIDL: line %.100q", errProtocol, line)
	}
	return MessageUID{Num: n, UID: uid}, nil
}

// UIDL returns the unique id of every message not marked deleted (UIDL). An *Error means
// the server does not implement UIDL.
func (c *Client) UIDL() ([]MessageUID, error) {
	lines, err := c.cmdMulti("UIDL")
	if err != nil {
		return nil, err
	}
	out := make([]MessageUID, 0, len(lines))
	for _, l := range lines {
		m, err := parseUID(l)
		if err != nil {
			return nil, c.fail(err)
		}
		out = append(out, m)
	}
	return out, nil
}

// UIDLOne returns the unique id of message n (UIDL n).
func (c *Client) UIDLOne(n int) (string, error) {
	if err := checkNum("UIDL", n); err != nil {
		return "", err
	}
	rest, err := c.cmd("UIDL", strconv.Itoa(n))
	if err != nil {
		return "", err
	}
	m, err := parseUID(rest)
	if err != nil {
		return "", c.fail(err)
	}
	return m.UID, nil
}

func checkNum(verb string, n int) error {
	if n < 1 {
		return fmt.Errorf("pop3: %s: message number %d (they start at 1)", verb, n)
	}
	return nil
}

// Dele marks message n deleted (DELE). The server removes it only at a successful Quit.
func (c *Client) Dele(n int) error {
	if err := checkNum("DELE", n); err != nil {
		return err
	}
	_, err := c.cmd("DELE", strconv.Itoa(n))
	return err
}

// Rset unmarks every message marked deleted in this session (RSET).
func (c *Client) Rset() error {
	_, err := c.cmd("RSET")
	return err
}

// Noop does nothing but keep the session alive (NOOP).
func (c *Client) Noop() error {
	_, err := c.cmd("NOOP")
	return err
}

// Quit ends the session with QUIT, which makes the server remove the messages marked
// deleted, and closes the connection whatever the outcome. An *Error means the server could
// not remove some of them (RFC 1939 section 6); any other error means the outcome is
// unknown, so callers must expect the messages may still be there.
func (c *Client) Quit() error {
	if c.msg != nil {
		return ErrMessageOpen
	}
	_, err := c.cmd("QUIT")
	c.Close()
	return err
}
