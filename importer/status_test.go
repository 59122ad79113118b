package importer

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"testing"
)

// Every named status is self-consistent: the basic code's class is the enhanced code's
// class, and only 4xx is temporary.
func TestNamedStatuses(t *testing.T) {
	for name, st := range map[string]Status{
		"UnknownMailbox": StatusUnknownMailbox, "BadDestinationSystem": StatusBadDestinationSystem,
		"BadAddressSyntax": StatusBadAddressSyntax, "MessageTooBig": StatusMessageTooBig,
		"BadContent": StatusBadContent, "MailboxFull": StatusMailboxFull,
		"SystemFull": StatusSystemFull, "LocalError": StatusLocalError,
	} {
		class := st.Code / 100
		if class != 4 && class != 5 {
			t.Errorf("%s: code %d is neither 4xx nor 5xx", name, st.Code)
		}
		if !strings.HasPrefix(st.Enhanced, fmt.Sprintf("%d.", class)) || strings.Count(st.Enhanced, ".") != 2 {
			t.Errorf("%s: %d with enhanced %q: classes differ", name, st.Code, st.Enhanced)
		}
		if st.Temporary() != (class == 4) {
			t.Errorf("%s: Temporary() = %v for %d", name, st.Temporary(), st.Code)
		}
		if st.Text == "" || st.IsZero() {
			t.Errorf("%s: no text or zero", name)
		}
		if s := st.String(); !strings.Contains(s, st.Enhanced) {
			t.Errorf("%s: String() = %q", name, s)
		}
	}
	if !(Status{}).IsZero() || (Status{}).Temporary() {
		t.Error("the zero Status is success")
	}
}

// Whatever the cause of a delivery error, it is temporary and never comes out as 5.x.x:
// the source keeps the message.
func TestClassifyIsAlwaysTemporary(t *testing.T) {
	tests := []struct {
		cause    error
		enhanced string
	}{
		{&fs.PathError{Op: "write", Path: "/m/tmp/x", Err: syscall.ENOSPC}, "4.3.1"},
		{fmt.Errorf("write: %w", &fs.PathError{Op: "write", Path: "/m/tmp/x", Err: syscall.EDQUOT}), "4.2.2"},
		{&fs.PathError{Op: "open", Path: "/m/tmp/x", Err: syscall.EACCES}, "4.3.0"},
		{&fs.PathError{Op: "open", Path: "/m/tmp/x", Err: syscall.EROFS}, "4.3.0"},
		{&fs.PathError{Op: "read", Path: "/drop/x", Err: syscall.EIO}, "4.3.0"},
		{&os.LinkError{Op: "rename", Old: "a", New: "b", Err: syscall.EXDEV}, "4.3.0"},
		{context.Canceled, "4.3.0"},
		{errors.New("anything at all"), "4.3.0"},
		// Even a permanent-looking cause is retried, not bounced.
		{&Error{Status: StatusUnknownMailbox, Op: "inner"}, "4.3.0"},
	}
	for _, tc := range tests {
		err := classify("deliver to a@example.com", tc.cause)
		assertTemporary(t, err, tc.enhanced)
		if !errors.Is(err, tc.cause) {
			t.Errorf("classify(%v) does not wrap its cause", tc.cause)
		}
	}
}

func TestIsTemporary(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"plain error: keep the message", errors.New("x"), true},
		{"temporary Error", &Error{Status: StatusLocalError, Op: "x"}, true},
		{"permanent Error", &Error{Status: StatusUnknownMailbox, Op: "x"}, false},
		{"wrapped temporary Error", fmt.Errorf("import: %w", &Error{Status: StatusSystemFull}), true},
		{"wrapped permanent Error", fmt.Errorf("import: %w", &Error{Status: StatusBadContent}), false},
		{"Error without a status: keep the message", &Error{Op: "x", Err: errors.New("y")}, true},
	}
	for _, tc := range tests {
		if got := IsTemporary(tc.err); got != tc.want {
			t.Errorf("%s: IsTemporary = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestErrorText(t *testing.T) {
	cause := &fs.PathError{Op: "open", Path: "/var/mail/secret/path", Err: syscall.EACCES}
	e := &Error{Status: StatusLocalError, Op: "deliver to a@example.com", Err: cause}
	if got := e.Error(); !strings.Contains(got, "deliver to a@example.com") || !strings.Contains(got, "permission denied") {
		t.Errorf("Error() = %q", got)
	}
	if errors.Unwrap(e) != cause {
		t.Error("Unwrap")
	}
	// The text a peer may see carries no internal detail.
	if strings.Contains(e.Status.Text, "/var/mail") || strings.Contains(e.Status.String(), "/var/mail") {
		t.Error("internal detail in the status text")
	}
	if got := (&Error{Status: StatusSystemFull, Op: "x"}).Error(); got != "x: mail system full" {
		t.Errorf("Error() without cause = %q", got)
	}
}
