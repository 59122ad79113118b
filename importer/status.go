package importer

import (
	"errors"
	"fmt"
)

// Status is an SMTP outcome: the basic reply code and the RFC 3463 enhanced status code.
// The zero Status means success.
type Status struct {
	Code     int    // 250, 450, 550 ...
	Enhanced string // "5.1.1"
	Text     string // safe to show to the sender: never internal error text
}

// IsZero reports whether s is the success value.
func (s Status) IsZero() bool { return s.Code == 0 }

// Temporary reports whether s is a 4xx (transient) status.
func (s Status) Temporary() bool { return s.Code >= 400 && s.Code < 500 }

func (s Status) String() string { return fmt.Sprintf("%d %s %s", s.Code, s.Enhanced, s.Text) }

// Named statuses (RFC 3463).
var (
	StatusUnknownMailbox       = Status{550, "5.1.1", "mailbox unknown"}
	StatusBadDestinationSystem = Status{550, "5.1.2", "domain not accepted here"}
	StatusBadAddressSyntax     = Status{553, "5.1.3", "bad recipient address syntax"}
	StatusMessageTooBig        = Status{552, "5.3.4", "message too big"}
	StatusBadContent           = Status{554, "5.6.0", "message content not accepted"}
	StatusMailboxFull          = Status{452, "4.2.2", "mailbox full"}
	StatusQuotaExceeded        = Status{552, "5.2.2", "mailbox full"}
	StatusSystemFull           = Status{452, "4.3.1", "mail system full"}
	StatusLocalError           = Status{451, "4.3.0", "local error in processing"}
)

// Error is a failure carrying an SMTP status. Temporary errors (4xx) mean the source
// keeps the message and retries; nothing is lost.
type Error struct {
	Status Status
	Op     string // what was being done, for the log
	Err    error  // the cause, for the log; never shown to a peer
}

func (e *Error) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("%s: %s", e.Op, e.Status.Text)
	}
	return fmt.Sprintf("%s: %v", e.Op, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Temporary reports whether the source should keep the message and retry. An Error
// without a status is temporary: when in doubt, keep the message.
func (e *Error) Temporary() bool { return e.Status.IsZero() || e.Status.Temporary() }

// IsTemporary reports whether err (or an error it wraps) is a temporary *Error. An error
// that carries no status is taken as temporary: when in doubt, keep the message.
func IsTemporary(err error) bool {
	if err == nil {
		return false
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Temporary()
	}
	return true
}
