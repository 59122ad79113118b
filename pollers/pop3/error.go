package pop3

import (
	"errors"
	"fmt"
	"strings"
)

// Response codes (RFC 2449 section 8, RFC 3206) as they appear in Error.Code.
const (
	// CodeInUse: the maildrop is locked by another session (RFC 2449 section 8.1.1).
	CodeInUse = "IN-USE"
	// CodeLoginDelay: the user logs in too often (RFC 2449 section 8.1.2).
	CodeLoginDelay = "LOGIN-DELAY"
	// CodeSysTemp: a temporary problem on the server (RFC 3206 section 4).
	CodeSysTemp = "SYS/TEMP"
	// CodeSysPerm: a permanent problem on the server, not the credentials (RFC 3206).
	CodeSysPerm = "SYS/PERM"
	// CodeAuth: the credentials were refused (RFC 3206 section 5).
	CodeAuth = "AUTH"
)

// Error is a -ERR reply of the server.
type Error struct {
	// Command is the verb that was refused ("PASS", "RETR", "AUTH", ...) or "greeting";
	// never its arguments.
	Command string
	// Code is the response code without its brackets, in upper case ("AUTH", "SYS/TEMP"),
	// or "" when the reply has none.
	Code string
	// Text is the rest of the reply line, as the server sent it (a password the server
	// echoed is replaced by "***").
	Text string
}

func (e *Error) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("pop3: %s: server said -ERR [%s] %s", e.Command, e.Code, e.Text)
	}
	return fmt.Sprintf("pop3: %s: server said -ERR %s", e.Command, e.Text)
}

// hasCode reports whether e's code is code or one of its hierarchical sub-codes
// (RFC 2449 section 8: "SYS/TEMP/SOMETHING" is a kind of "SYS/TEMP").
func (e *Error) hasCode(code string) bool {
	return e.Code == code || strings.HasPrefix(e.Code, code+"/")
}

// Temporary reports whether the server said the condition will pass without any change by
// the client: [IN-USE], [LOGIN-DELAY] or [SYS/TEMP]. A poller retries later.
func (e *Error) Temporary() bool {
	return e.hasCode(CodeInUse) || e.hasCode(CodeLoginDelay) || e.hasCode(CodeSysTemp)
}

// AuthFailed reports whether the credentials were refused: the code [AUTH], or a -ERR
// without a code to USER, PASS or AUTH (servers without RFC 3206 say nothing more). A
// poller should not retry with the same credentials.
func (e *Error) AuthFailed() bool {
	if e.hasCode(CodeAuth) {
		return true
	}
	if e.Code != "" {
		return false
	}
	switch e.Command {
	case "USER", "PASS", "AUTH":
		return true
	}
	return false
}

// parseErr builds the *Error of a -ERR reply to verb; rest is the line after "-ERR".
func parseErr(verb, rest string) *Error {
	rest = strings.TrimLeft(rest, " ")
	e := &Error{Command: verb, Text: rest}
	if strings.HasPrefix(rest, "[") {
		if end := strings.IndexByte(rest, ']'); end > 1 && !strings.ContainsAny(rest[1:end], " \t") {
			e.Code = strings.ToUpper(rest[1:end])
			e.Text = strings.TrimLeft(rest[end+1:], " ")
		}
	}
	return e
}

// redact replaces secret in the text of a server error, for servers that echo credentials.
func redact(err error, secret string) error {
	var e *Error
	if secret != "" && errors.As(err, &e) && strings.Contains(e.Text, secret) {
		e.Text = strings.ReplaceAll(e.Text, secret, "***")
	}
	return err
}

// ErrMessageOpen is returned by a command while the reader of Retr or Top has neither
// reached the end of the message nor been closed.
var ErrMessageOpen = errors.New("pop3: the previous message is still being read; read it to the end or close it")

// ErrSTLSUnavailable is returned by Dial with TLSStartTLS when the server refuses STLS; it
// wraps the server's *Error. The client never continues in plaintext.
var ErrSTLSUnavailable = errors.New("pop3: server refused STLS; not continuing without TLS")

// errProtocol marks replies that break the protocol; the connection is then closed.
var errProtocol = errors.New("pop3: protocol error")

// ErrReplyTooLong is in the chain of the error of a reply longer than the client reads
// of it (a listing without end, a TOP that goes on past the header). The session has
// ended; nothing was deleted on the strength of the reply.
var ErrReplyTooLong = errors.New("server reply too long")
