package pop3

import (
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/emersion/go-sasl"
)

// Login authenticates with USER and PASS (RFC 1939 section 7). A refusal is an *Error whose
// AuthFailed or Temporary says why; the password never appears in the error.
func (c *Client) Login(username, password string) error {
	if err := c.User(username); err != nil {
		return err
	}
	return c.Pass(password)
}

// User sends USER, the first half of Login.
func (c *Client) User(username string) error {
	_, err := c.cmd("USER", username)
	return err
}

// Pass sends PASS, the second half of Login. The password may hold spaces (RFC 1939 allows
// them), not line breaks.
func (c *Client) Pass(password string) error {
	_, err := c.cmd("PASS", password)
	if err == nil {
		c.caps = nil
	}
	return redact(err, password)
}

// AuthPlain authenticates with AUTH PLAIN (RFC 4616) as username, with no separate
// authorization identity.
func (c *Client) AuthPlain(username, password string) error {
	return redact(c.Auth(sasl.NewPlainClient("", username, password)), password)
}

// maxAuthLine is where an initial response moves from the AUTH line to the first
// continuation: RFC 5034 section 4 keeps the AUTH command within the 255 octets of RFC 2449
// section 4.
const maxAuthLine = 255

// Auth authenticates with a SASL mechanism (RFC 5034), for example an XOAUTH2 or
// OAUTHBEARER client for OAuth2 tokens. When the mechanism fails a challenge, the exchange
// is cancelled with "*" and the error returned wraps both the mechanism's error and the
// server's *Error. SASL responses never appear in errors.
func (c *Client) Auth(mech sasl.Client) error {
	name, ir, err := mech.Start()
	if err != nil {
		return fmt.Errorf("pop3: AUTH: %w", err)
	}
	args := []string{name}
	var pending []byte // initial response too long for the AUTH line
	if ir != nil {
		enc := "="
		if len(ir) > 0 {
			enc = base64.StdEncoding.EncodeToString(ir)
		}
		if len("AUTH ")+len(name)+1+len(enc)+2 <= maxAuthLine {
			args = append(args, enc)
		} else {
			pending = ir
		}
	}
	if err := c.send("AUTH", args...); err != nil {
		return err
	}
	for {
		line, err := c.readLine()
		if err != nil {
			return fmt.Errorf("pop3: AUTH: %w", err)
		}
		status, rest := splitStatus(line)
		switch status {
		case "+OK":
			c.caps = nil
			return nil
		case "-ERR":
			return parseErr("AUTH", rest)
		case "+":
		default:
			return c.fail(fmt.Errorf("%w: AUTH: unexpected reply %.100q", errProtocol, line))
		}
		var resp []byte
		if pending != nil {
			resp, pending = pending, nil
		} else {
			challenge, err := base64.StdEncoding.DecodeString(rest)
			if err != nil {
				return c.cancelAuth(fmt.Errorf("%w: AUTH: challenge is not base64", errProtocol))
			}
			if resp, err = mech.Next(challenge); err != nil {
				return c.cancelAuth(fmt.Errorf("pop3: AUTH %s: %w", name, err))
			}
		}
		if err := c.writeLine("AUTH", base64.StdEncoding.EncodeToString(resp)); err != nil {
			return err
		}
	}
}

// cancelAuth sends "*" (RFC 5034 section 4) and returns cause with the server's reply.
func (c *Client) cancelAuth(cause error) error {
	if err := c.writeLine("AUTH", "*"); err != nil {
		return errors.Join(cause, err)
	}
	_, err := c.readStatus("AUTH")
	if err == nil {
		// +OK after a cancel: we do not know who we are logged in as.
		return c.fail(fmt.Errorf("%w: server accepted a cancelled AUTH", errProtocol))
	}
	return fmt.Errorf("%w (%w)", cause, err)
}
