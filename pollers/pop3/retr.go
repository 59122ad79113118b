package pop3

import (
	"fmt"
	"io"
	"os"
	"strconv"
)

// Retr starts retrieving message n (RETR) and returns a reader of its content: the dot-
// stuffing of RFC 1939 section 3 undone and CRLF line endings turned into LF, the Maildir
// convention (a bare CR is kept). Read returns io.EOF only after the terminating line; a
// connection lost or idle before it gives io.ErrUnexpectedEOF or a timeout error instead.
// The caller must read to io.EOF or Close the reader before the next command; Close reads
// and discards the rest. An *Error means there is no such message and the session goes on.
func (c *Client) Retr(n int) (io.ReadCloser, error) {
	if err := checkNum("RETR", n); err != nil {
		return nil, err
	}
	return c.openMessage("RETR", strconv.Itoa(n))
}

// Top is Retr for the header and the first lines lines of the body of message n (TOP,
// RFC 1939 section 7).
func (c *Client) Top(n, lines int) (io.ReadCloser, error) {
	if err := checkNum("TOP", n); err != nil {
		return nil, err
	}
	if lines < 0 {
		return nil, fmt.Errorf("pop3: TOP: %d lines", lines)
	}
	return c.openMessage("TOP", strconv.Itoa(n), strconv.Itoa(lines))
}

func (c *Client) openMessage(verb string, args ...string) (io.ReadCloser, error) {
	if _, err := c.cmd(verb, args...); err != nil {
		return nil, err
	}
	return c.newMessage(verb), nil
}

// newMessage starts reading a message reply whose status line has been read: the
// connection is paced until the reply ends (release).
func (c *Client) newMessage(verb string) *messageReader {
	m := &messageReader{c: c, verb: verb, dot: c.text.DotReader()}
	c.msg = m
	c.idle.startPace()
	return m
}

// messageReader reads one multi-line message reply.
type messageReader struct {
	c      *Client
	verb   string
	dot    io.Reader
	err    error // io.EOF at the end, or the error that broke the connection
	closed bool
}

func (m *messageReader) Read(p []byte) (int, error) {
	if m.closed {
		return 0, os.ErrClosed
	}
	return m.read(p)
}

func (m *messageReader) read(p []byte) (int, error) {
	if m.err != nil {
		return 0, m.err
	}
	n, err := m.dot.Read(p)
	switch {
	case err == io.EOF:
		m.err = io.EOF
		m.release()
	case err != nil:
		// textproto's dot reader turns an early EOF into io.ErrUnexpectedEOF.
		m.err = m.c.fail(fmt.Errorf("pop3: %s: message cut short: %w", m.verb, err))
		m.release()
	}
	return n, m.err
}

// release hands the connection back to the Client.
func (m *messageReader) release() {
	if m.c.msg == m {
		m.c.msg = nil
		m.c.idle.stopPace()
	}
}

// Close reads and discards the rest of the message, so the session can go on, and returns
// the error that kept the message from being read to its end, if any. Reads after Close
// fail with os.ErrClosed; a second Close returns nil.
func (m *messageReader) Close() error {
	if m.closed {
		return nil
	}
	m.closed = true
	buf := make([]byte, 32<<10)
	for m.err == nil {
		m.read(buf)
	}
	m.release()
	if m.err == io.EOF {
		return nil
	}
	return m.err
}
