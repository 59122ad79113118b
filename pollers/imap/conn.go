package imap

import (
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/mxdrop/mxdrop/pollers/pace"
)

// timeoutConn turns the connection's deadlines into an inactivity timeout, and bounds
// what the server may send for each command.
//
// Timeout: every Read and Write must make progress within timeout, except Reads while
// the client waits in IDLE, which may last as long as the server stays quiet.
// imapclient sets absolute deadlines of its own, once per response (30s, or 5 minutes
// for a literal) and none at all between responses, so a large message on a slow link
// would be cut off while a server that stalls between two FETCH responses would hang
// forever. The configured timeout means "no byte for this long", so the wrapper
// ignores the library's deadlines and sets its own before every Read and Write.
//
// Budget: imapclient's decoder has no size limit of its own (its MaxSize and
// CheckBufferedLiteralFunc are internal and unset on the client side), and it reads
// every string literal and every list whole into memory. The Client therefore gives
// each command a read budget, the bytes the server may send until the next command
// sets a new one (see setBudget). A Read past the budget fails with a *LimitError and
// closes the connection, and every later Read fails the same way: the decoder stops
// with an error, whatever it was decoding. The budget counts bytes as they come from
// the socket, below TLS.
//
// Pace: while message bodies are fetched (startPace, until the next command's budget)
// the read deadline is also bounded by a pace.Clock, so a server that sends them
// slower than pace.MinRate on average is cut off with a *pace.SlowError, which is
// sticky like a *LimitError and closes the connection, instead of holding the session
// for as long as a byte before each timeout lasts.
//
// The library's reader goroutine reads while the Client's goroutine sets budgets:
// everything here is guarded by mu.
type timeoutConn struct {
	net.Conn
	timeout time.Duration

	mu    sync.Mutex // guards everything below; orders the idle flag with its read deadline
	idle  bool
	what  string      // the command the budget is for, for the error
	set   int64       // the budget as set, for the error
	left  int64       // bytes the server may still send
	over  *LimitError // once the budget is exceeded (or trip is called): sticky
	clock *pace.Clock // non-nil while message bodies are read
	slow  *pace.SlowError
}

func newTimeoutConn(c net.Conn, timeout time.Duration, what string, budget int64) *timeoutConn {
	return &timeoutConn{Conn: c, timeout: timeout, what: what, set: budget, left: budget}
}

func (c *timeoutConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	if c.over != nil {
		c.mu.Unlock()
		return 0, c.over
	}
	if c.slow != nil {
		c.mu.Unlock()
		return 0, c.slow
	}
	clock, budget := c.clock, false
	start := time.Now()
	if c.idle {
		c.Conn.SetReadDeadline(time.Time{})
	} else {
		wait := c.timeout
		if clock != nil {
			wait, budget = clock.Wait()
		}
		c.Conn.SetReadDeadline(start.Add(wait))
	}
	// Never read more than the budget allows; with nothing left, a Read still waits
	// (for a reply to the next command, whose budget may be set meanwhile) but takes
	// one byte at most.
	if int64(len(b)) > c.left {
		b = b[:max(c.left, 1)]
	}
	c.mu.Unlock()
	n, err := c.Conn.Read(b)
	c.mu.Lock()
	defer c.mu.Unlock()
	if clock != nil && clock == c.clock {
		err = clock.Read(time.Since(start), n, budget, err)
		if se, ok := err.(*pace.SlowError); ok && c.slow == nil {
			c.slow = se
			c.Conn.Close()
		}
	}
	if c.slow != nil {
		return 0, c.slow
	}
	c.left -= int64(n)
	if c.left < 0 {
		c.tripLocked(&LimitError{What: c.what, Limit: c.set, Unit: "bytes"})
		return 0, c.over
	}
	return n, err
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

// setBudget allows the server n more bytes, for the command what, replacing what was
// left of the previous budget. Call it before sending the command. It returns the
// *LimitError if a budget was exceeded before: the connection is closed then.
func (c *timeoutConn) setBudget(what string, n int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.over != nil {
		return c.over
	}
	if c.slow != nil {
		return c.slow
	}
	c.what, c.set, c.left = what, n, n
	c.clock = nil
	return nil
}

// startPace bounds the reads of the current command's reply by a pace.Clock, until
// the next setBudget: for message bodies.
func (c *timeoutConn) startPace() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clock = pace.New(c.timeout)
}

// slowErr returns the recorded *pace.SlowError, or nil.
func (c *timeoutConn) slowErr() *pace.SlowError {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.slow
}

// grow adds n bytes to the current budget: a message body about to be streamed.
func (c *timeoutConn) grow(n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.set += n
	c.left += n
}

// trip records e as the connection's limit error, unless one is recorded already,
// and closes the connection.
func (c *timeoutConn) trip(e *LimitError) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tripLocked(e)
}

func (c *timeoutConn) tripLocked(e *LimitError) {
	if c.over == nil {
		c.over = e
		c.Conn.Close()
	}
}

// limitErr returns the recorded *LimitError, or nil.
func (c *timeoutConn) limitErr() *LimitError {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.over
}

// LimitError is a server reply larger than mxdrop accepts for its command: a literal,
// a line, or a list without end. The Client has closed the connection: every later
// call returns the same error. Nothing was deleted because of the reply; the caller
// ends the session and tries again later.
type LimitError struct {
	What  string // the command, e.g. "uid fetch sizes"
	Limit int64  // in Unit
	Unit  string // "bytes" or "messages"
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("server reply too large: %s: more than %d %s; connection closed", e.What, e.Limit, e.Unit)
}
