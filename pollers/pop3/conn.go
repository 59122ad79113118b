package pop3

import (
	"net"
	"time"
)

// idleConn renews a deadline before every Read and Write, so an operation fails when it has
// made no progress for timeout, not when a long transfer as a whole takes longer. It sits
// below TLS, so handshakes and records are covered too.
type idleConn struct {
	net.Conn
	timeout time.Duration
}

func (c *idleConn) Read(p []byte) (int, error) {
	if err := c.Conn.SetReadDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}
