// Package pace bounds how slowly a mail server may send a message.
//
// An idle timeout alone ("no byte for this long") lets a broken or hostile server hold
// a poller for as long as it likes: a byte just before each timeout keeps the
// connection alive, and a message of max_message_size would then take years. While a
// message is read, a Clock gives the server a time budget that starts at the idle
// timeout, shrinks by the time each read waits and grows by the bytes the read brings,
// at MinRate, never past the idle timeout. A server that keeps up MinRate on average
// never meets the budget (a stall still gets the whole idle timeout, as before); one
// that does not is cut off within about timeout / (1 - rate/MinRate).
//
// This is Postfix's smtpd_min_data_rate (500 bytes/s by default, with
// smtpd_per_request_deadline), applied to what mxdrop reads. Nothing here is written
// by hand for want of a library: it is a few lines of arithmetic on the deadlines the
// connection wrappers of package pop3 and imap already set.
package pace

import (
	"errors"
	"fmt"
	"os"
	"time"
)

// MinRate is the slowest average, in bytes per second, at which a message may arrive.
const MinRate = 500

// Clock is the time budget of one message transfer. It is not safe for concurrent use.
type Clock struct {
	timeout time.Duration
	left    time.Duration
}

// New returns the Clock of a transfer on a connection whose idle timeout is timeout.
func New(timeout time.Duration) *Clock {
	return &Clock{timeout: timeout, left: timeout}
}

// Wait returns how long the next read may wait, and whether the budget, not the idle
// timeout, sets that limit.
func (c *Clock) Wait() (d time.Duration, budget bool) {
	if c.left < c.timeout {
		return max(c.left, 0), true
	}
	return c.timeout, false
}

// Read accounts for a read that waited elapsed and brought n bytes, and returns its
// error err; a timeout of a read whose wait the budget limited (Wait's budget) is
// returned as a *SlowError wrapping err.
func (c *Clock) Read(elapsed time.Duration, n int, budget bool, err error) error {
	c.left -= elapsed
	c.left += time.Duration(int64(n) * int64(time.Second) / MinRate)
	c.left = min(c.left, c.timeout)
	if budget && errors.Is(err, os.ErrDeadlineExceeded) {
		return &SlowError{Timeout: c.timeout, Err: err}
	}
	return err
}

// SlowError is a message transfer cut off because the server sent it slower than
// MinRate on average. It wraps the read's timeout error, so it is also a net.Error
// whose Timeout is true.
type SlowError struct {
	Timeout time.Duration // the connection's idle timeout
	Err     error
}

func (e *SlowError) Error() string {
	return fmt.Sprintf("server sent the message slower than %d bytes/s on average (idle timeout %v): connection closed: %v", MinRate, e.Timeout, e.Err)
}

func (e *SlowError) Unwrap() error { return e.Err }
