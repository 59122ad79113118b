package imap

import (
	"net"
	"sync"
	"time"
)

// timeoutConn turns the connection's deadlines into an inactivity timeout: every Read
// and Write must make progress within timeout, except Reads while the client waits in
// IDLE, which may last as long as the server stays quiet.
//
// imapclient sets absolute deadlines of its own, once per response (30s, or 5 minutes
// for a literal) and none at all between responses, so a large message on a slow link
// would be cut off while a server that stalls between two FETCH responses would hang
// forever. The configured timeout means "no byte for this long", so the wrapper
// ignores the library's deadlines and sets its own before every Read and Write.
type timeoutConn struct {
	net.Conn
	timeout time.Duration

	mu   sync.Mutex // orders the idle flag with the read deadline it implies
	idle bool
}

func newTimeoutConn(c net.Conn, timeout time.Duration) *timeoutConn {
	return &timeoutConn{Conn: c, timeout: timeout}
}

func (c *timeoutConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	if c.idle {
		c.Conn.SetReadDeadline(time.Time{})
	} else {
		c.Conn.SetReadDeadline(time.Now().Add(c.timeout))
	}
	c.mu.Unlock()
	return c.Conn.Read(b)
}

func (c *timeoutConn) Write(b []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	return c.Conn.Write(b)
}

// SetDeadline, SetReadDeadline and SetWriteDeadline ignore the library's deadlines: see
// the type's comment.
func (c *timeoutConn) SetDeadline(time.Time) error      { return nil }
func (c *timeoutConn) SetReadDeadline(time.Time) error  { return nil }
func (c *timeoutConn) SetWriteDeadline(time.Time) error { return nil }

// setIdle switches between the IDLE wait (no read deadline) and normal operation. It
// also moves the deadline of a Read that is blocked right now, so leaving IDLE bounds
// the wait for the server's answer to DONE.
func (c *timeoutConn) setIdle(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.idle = on
	if on {
		c.Conn.SetReadDeadline(time.Time{})
	} else {
		c.Conn.SetReadDeadline(time.Now().Add(c.timeout))
	}
}
