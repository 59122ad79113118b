// Package testenv holds what the integration test harnesses share: how a test reacts to
// a machine that lacks a server or a privilege it needs.
package testenv

import (
	"fmt"
	"os"
	"testing"
)

// CI reports whether the tests run under CI (the environment variable CI is "true"):
// there a missing server or privilege is a failure, never a silent skip.
func CI() bool { return os.Getenv("CI") == "true" }

// Unavailable ends t because something it needs is missing here: t.Fatal under CI,
// t.Skip otherwise, with the message and a word on which of the two it is.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if CI() {
		t.Fatal(msg + " (CI=true: a missing server or privilege is a failure, not a skip)")
		return
	}
	t.Skip(msg + "; skipping (under CI=true this fails)")
}
