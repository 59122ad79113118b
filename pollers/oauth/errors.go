package oauth

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/oauth2"
)

// ErrLoginRequired matches (errors.Is) every *LoginRequiredError.
var ErrLoginRequired = errors.New("oauth login required")

// LoginRequiredError says that an account has no usable grant and only a new consent
// fixes it: no token stored, a token of another client, no refresh token, or a
// refresh the provider refused for good (invalid_grant: consent revoked, password
// changed, refresh token expired). Its text names the account and the command that
// fixes it, and holds no token material. It is not temporary.
type LoginRequiredError struct {
	Account string
	Reason  string // what is wrong, safe to show
	Code    string // the provider's error code ("invalid_grant"), "" when none
}

func (e *LoginRequiredError) Error() string {
	return fmt.Sprintf("oauth account %s: %s; run \"mxdrop oauth login %s\"", e.Account, e.Reason, e.Account)
}

// Is makes errors.Is(err, ErrLoginRequired) true.
func (e *LoginRequiredError) Is(target error) bool { return target == ErrLoginRequired }

// Temporary reports false: retrying does not help until someone logs in.
func (e *LoginRequiredError) Temporary() bool { return false }

// RefreshError is a refresh that failed for another reason than a lost grant: the
// provider unreachable or answering 5xx (temporary), or refusing the client itself
// (invalid_client, unauthorized_client, invalid_scope: a configuration problem). Its
// text holds no token material.
type RefreshError struct {
	Account     string
	Code        string // the provider's error code, "" when it gave none
	Description string // the provider's error_description, secrets removed and shortened
	Status      int    // the HTTP status, 0 when no answer came
	Err         error  // the cause when no answer came (network, timeout); nil otherwise
}

func (e *RefreshError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "oauth account %s: refresh access token: ", e.Account)
	switch {
	case e.Code != "":
		fmt.Fprintf(&b, "provider answered %s", e.Code)
		if e.Description != "" {
			fmt.Fprintf(&b, " (%s)", e.Description)
		}
		if !e.Temporary() {
			b.WriteString("; check oauth.client_id, client_secret and scopes")
		}
	case e.Status != 0:
		fmt.Fprintf(&b, "provider answered HTTP %d", e.Status)
	default:
		fmt.Fprintf(&b, "%v", e.Err)
	}
	return b.String()
}

// Unwrap returns the cause of a refresh that got no answer.
func (e *RefreshError) Unwrap() error { return e.Err }

// Temporary reports whether a later refresh may succeed without a change of the
// configuration.
func (e *RefreshError) Temporary() bool {
	switch e.Code {
	case "invalid_client", "unauthorized_client", "invalid_scope", "unsupported_grant_type":
		return false
	}
	return true
}

// classify turns an error of the token endpoint into a *LoginRequiredError or a
// *RefreshError, with every string of secrets removed from the provider's text.
func classify(account string, err error, secrets ...string) error {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		return &RefreshError{Account: account, Err: redactErr(err, secrets...)}
	}
	desc := cleanText(re.ErrorDescription, secrets...)
	status := 0
	if re.Response != nil {
		status = re.Response.StatusCode
	}
	if re.ErrorCode == "invalid_grant" {
		reason := "the consent was revoked or has expired (the provider refused the refresh token: invalid_grant"
		if desc != "" {
			reason += ", " + strconvQuote(desc)
		}
		reason += ")"
		return &LoginRequiredError{Account: account, Reason: reason, Code: re.ErrorCode}
	}
	return &RefreshError{Account: account, Code: cleanText(re.ErrorCode), Description: desc, Status: status}
}

// strconvQuote quotes provider text so that it reads as a quotation.
func strconvQuote(s string) string { return "\"" + strings.ReplaceAll(s, "\"", "'") + "\"" }

// cleanText makes provider text safe to show: secrets replaced, control characters
// removed, at most 200 bytes.
func cleanText(s string, secrets ...string) string {
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, "***")
		}
	}
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// redactedError is an error whose text had secrets removed. It answers errors.Is
// for the original (context.DeadlineExceeded, ...) but does not unwrap to it, so the
// original text cannot be reached.
type redactedError struct {
	text string
	err  error
}

func (e *redactedError) Error() string        { return e.text }
func (e *redactedError) Is(target error) bool { return errors.Is(e.err, target) }

// redactErr returns err with every secret replaced in its text.
func redactErr(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	text := err.Error()
	clean := text
	for _, sec := range secrets {
		if sec != "" {
			clean = strings.ReplaceAll(clean, sec, "***")
		}
	}
	if clean == text {
		return err
	}
	return &redactedError{text: clean, err: err}
}
