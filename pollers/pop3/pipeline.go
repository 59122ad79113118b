package pop3

import (
	"errors"
	"fmt"
	"io"
	"strconv"
)

// pipelineWindow bounds the commands sent ahead of their replies. The commands are a
// few bytes each, so writing a window never blocks on a full socket buffer while the
// server is blocked writing replies the client has not read yet.
const pipelineWindow = 64

// Pipelining reports whether the server announced PIPELINING (RFC 2449 section 6.6):
// RetrAll and DeleAll then send their commands in groups, saving a round trip per
// message. It asks CAPA once per login, like Capabilities.
func (c *Client) Pipelining() bool {
	caps, err := c.Capabilities()
	return err == nil && caps.Has("PIPELINING")
}

// RetrAll retrieves the messages nums in order, pipelined where the server allows it.
// For each it calls fn with the index in nums and a reader of the content as Retr gives
// it, or with a nil reader and the *Error of a message the server refused (no such
// message); what fn leaves unread is discarded. An error of fn stops the retrieval: the
// replies already asked for are read and discarded, so the session goes on, and the
// error is returned. Any other error broke the connection.
func (c *Client) RetrAll(nums []int, fn func(i int, r io.Reader, refused *Error) error) error {
	for _, n := range nums {
		if err := checkNum("RETR", n); err != nil {
			return err
		}
	}
	var fnErr error
	err := c.pipeline("RETR", nums, func(i int, refused *Error) error {
		if refused != nil {
			if fnErr == nil {
				fnErr = fn(i, nil, refused)
			}
			return nil
		}
		m := c.newMessage("RETR")
		if fnErr == nil {
			fnErr = fn(i, m, nil)
		}
		// The rest of the message, or all of it after fn failed.
		return m.Close()
	}, func() bool { return fnErr == nil })
	if err != nil {
		return err
	}
	return fnErr
}

// DeleAll marks the messages nums deleted (DELE), pipelined where the server allows it.
// refused holds, for each index of nums, the *Error of a message the server refused
// (no such message, already deleted), nil for the others. err means the connection
// broke: the messages from the first one without a reply on may or may not be marked.
func (c *Client) DeleAll(nums []int) (refused []error, err error) {
	for _, n := range nums {
		if err := checkNum("DELE", n); err != nil {
			return nil, err
		}
	}
	refused = make([]error, len(nums))
	err = c.pipeline("DELE", nums, func(i int, e *Error) error {
		if e != nil {
			refused[i] = e
		}
		return nil
	}, nil)
	return refused, err
}

// pipeline sends verb for each of nums, up to pipelineWindow ahead of the replies (one
// at a time without PIPELINING), and calls reply with each reply's index and its
// *Error, if it was -ERR; on +OK reply must consume whatever the reply carries. more,
// when not nil, says whether to send further commands; when it turns false, only the
// replies to the commands sent are read. An error of reply or of the connection is returned at once.
func (c *Client) pipeline(verb string, nums []int, reply func(i int, refused *Error) error, more func() bool) error {
	window := 1
	if len(nums) > 1 && c.Pipelining() {
		window = pipelineWindow
	}
	if err := c.ready(verb); err != nil {
		return err
	}
	sent, done := 0, 0
	for done < len(nums) {
		if sent < len(nums) && (sent == done || sent-done <= window/2) && (more == nil || more()) {
			for sent < len(nums) && sent-done < window {
				c.bw.WriteString(verb)
				c.bw.WriteByte(' ')
				c.bw.WriteString(strconv.Itoa(nums[sent]))
				c.bw.WriteString("\r\n")
				sent++
			}
			if err := c.bw.Flush(); err != nil {
				return c.fail(fmt.Errorf("pop3: %s: %w", verb, err))
			}
		}
		if done == sent {
			return nil // more said stop, and every reply is read
		}
		_, err := c.readStatus(verb)
		var refused *Error
		if err != nil && !errors.As(err, &refused) {
			return err
		}
		if err := reply(done, refused); err != nil {
			return err
		}
		done++
	}
	return nil
}
