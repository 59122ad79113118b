package oauth

import (
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/mxdrop/mxdrop/configs"
)

// Status writes to w one line per xoauth2 account of cfg (pollers and relays by
// name): its kind, username, provider, the state of its stored token, when the
// access token expires and when it was last refreshed. It reads the token files of
// store and prints no secret. After the table it names the command that fixes each
// account that needs a login, and returns an error wrapping ErrLoginRequired when
// there is one (so mxdrop oauth status exits non-zero); any other error is a failed
// write to w or a configuration whose account names collide.
func Status(w io.Writer, cfg *configs.Config, store *Store) error {
	return status(w, cfg, store, time.Now())
}

// Token states shown by Status.
const (
	stateOK        = "ok"
	stateExpired   = "ok, refresh due" // the access token expired: refreshed at the next use
	stateMissing   = "missing"
	stateRevoked   = "refused"
	stateNoRefresh = "no refresh token"
	stateOther     = "other client"
	stateBad       = "unreadable"
)

func status(w io.Writer, cfg *configs.Config, store *Store, now time.Time) error {
	accts, err := Accounts(cfg)
	if err != nil {
		return err
	}
	if len(accts) == 0 {
		_, err := fmt.Fprintln(w, "No poller or relay uses auth method xoauth2.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCOUNT\tKIND\tUSERNAME\tPROVIDER\tTOKEN\tACCESS EXPIRES\tLAST REFRESH")
	var notes []string
	need := 0
	for _, a := range accts {
		kind := a.Kind
		if !a.Active {
			kind += " (inactive)"
		}
		ts := tokenState(a, store, now)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.Name, kind, a.Username, a.OAuth.Provider, ts.state, ts.expires, ts.refreshed)
		if ts.note != "" {
			notes = append(notes, ts.note)
		}
		if ts.login {
			need++
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
	}
	for _, n := range notes {
		if _, err := fmt.Fprintln(w, n); err != nil {
			return err
		}
	}
	if need == 0 {
		return nil
	}
	return fmt.Errorf("%d of %d oauth accounts need a login: %w", need, len(accts), ErrLoginRequired)
}

// accountState is one line of Status.
type accountState struct {
	state, expires, refreshed string
	note                      string // what to do about it, "" when nothing
	login                     bool   // only mxdrop oauth login helps
}

// tokenState describes a's stored token.
func tokenState(a Account, store *Store, now time.Time) accountState {
	st := accountState{expires: "-", refreshed: "-"}
	fix := fmt.Sprintf("run \"mxdrop oauth login %s\"", a.Name)
	needLogin := func(state, why string) accountState {
		st.state, st.login = state, true
		st.note = fmt.Sprintf("%s: %s; %s", a.Name, why, fix)
		return st
	}
	t, err := store.Load(a.Name)
	switch {
	case errors.Is(err, ErrNoToken):
		return needLogin(stateMissing, "no token stored")
	case err != nil:
		return needLogin(stateBad, err.Error())
	}
	if !t.Expiry.IsZero() {
		st.expires = when(t.Expiry, now)
	}
	if !t.Refreshed.IsZero() {
		st.refreshed = when(t.Refreshed, now)
	} else if !t.Obtained.IsZero() {
		st.refreshed = "never; login " + when(t.Obtained, now)
	}
	switch {
	case t.ClientID != "" && t.ClientID != a.OAuth.ClientID:
		return needLogin(stateOther, fmt.Sprintf("the token belongs to client %s, the configuration names %s", t.ClientID, a.OAuth.ClientID))
	case t.LastError != "":
		return needLogin(stateRevoked, fmt.Sprintf("the provider refused the refresh token (%s) at %s", t.LastError, when(t.LastErrorAt, now)))
	case t.RefreshToken == "":
		return needLogin(stateNoRefresh, "the provider issued no refresh token")
	case !t.Expiry.IsZero() && !now.Before(t.Expiry):
		st.state = stateExpired
	default:
		st.state = stateOK
	}
	if fi, err := os.Stat(store.Path(a.Name)); err == nil && fi.Mode().Perm()&0o077 != 0 {
		st.note = fmt.Sprintf("%s: %s has mode %04o; make it 0600 (chmod 600 %s)", a.Name, store.Path(a.Name), fi.Mode().Perm(), store.Path(a.Name))
	}
	return st
}

// when formats t in UTC with its distance from now: "2025-01-02T15:04:05Z (in 42m)".
func when(t, now time.Time) string {
	d := t.Sub(now).Round(time.Second)
	rel := "now"
	switch {
	case d > 0:
		rel = "in " + shortDuration(d)
	case d < 0:
		rel = shortDuration(-d) + " ago"
	}
	return t.UTC().Format(time.RFC3339) + " (" + rel + ")"
}

// shortDuration is d in its two largest units, without a zero second one: "3d4h",
// "3h", "42m", "15s".
func shortDuration(d time.Duration) string {
	switch {
	case d >= 24*time.Hour:
		days, hours := d/(24*time.Hour), (d%(24*time.Hour))/time.Hour
		if hours == 0 {
			return fmt.Sprintf("%dd", days)
		}
		return fmt.Sprintf("%dd%dh", days, hours)
	case d >= time.Hour:
		hours, minutes := d/time.Hour, (d%time.Hour)/time.Minute
		if minutes == 0 {
			return fmt.Sprintf("%dh", hours)
		}
		return fmt.Sprintf("%dh%dm", hours, minutes)
	case d >= time.Minute:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return fmt.Sprintf("%ds", d/time.Second)
}
