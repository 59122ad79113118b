package pop3

import (
	"net"
	"time"

	"github.com/mxdrop/mxdrop/pollers/pace"
)

// idleConn renews a deadline before every Read and Write, so an operation fails when it has
// made no progress for timeout, not when a long transfer as a whole takes longer. It sits
// below TLS, so handshakes and records are covered too.
//
// While a message is read (startPace to stopPace) the deadline is also bounded by a
// pace.Clock: a server that sends the message slower than pace.MinRate on average is
// cut off with a *pace.SlowError, instead of holding the session for as long as a byte
// before each timeout lasts.
type idleConn struct {
	net.Conn
	timeout time.Duration
	clock   *pace.Clock // non-nil while a message is read
}

func (c *idleConn) Read(p []byte) (int, error) {
	wait, budget := c.timeout, false
	if c.clock != nil {
		wait, budget = c.clock.Wait()
	}
	start := time.Now()
	if err := c.Conn.SetReadDeadline(start.Add(wait)); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	if c.clock != nil {
		err = c.clock.Read(time.Since(start), n, budget, err)
	}
	return n, err
}

func (c *idleConn) Write(p []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// startPace starts the clock of a message transfer; stopPace ends it.
func (c *idleConn) startPace() { c.clock = pace.New(c.timeout) }
func (c *idleConn) stopPace()  { c.clock = nil }
