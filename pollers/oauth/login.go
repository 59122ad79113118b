package oauth

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer/durable"
)

// LoginOptions complete Login and DeviceLogin.
type LoginOptions struct {
	// HTTPClient talks to the provider; nil means a client with a 30s timeout.
	HTTPClient *http.Client
	// Listen is host:port of Login's redirect listener on the loopback; default
	// "localhost:0" for Microsoft (the redirect its app registrations accept from the
	// portal) and "127.0.0.1:0" otherwise, port 0 meaning any free port. The redirect
	// address is http://<Listen>/, so a client registered with a fixed redirect
	// (http://localhost:8080/) gets exactly that; "localhost" listens on 127.0.0.1 and,
	// where it can, on ::1. A fixed port also lets an SSH tunnel
	// (ssh -L 8080:127.0.0.1:8080) carry the redirect from a browser on another machine.
	Listen string
	// In, when set, is read by Login for the address a browser on another machine ended
	// at (its address bar after the failed redirect): pasting it there completes the
	// login as the redirect would. Login returns without waiting for In to end.
	In io.Reader
	// DeviceAuthURL is the device authorization endpoint for provider custom, which the
	// configuration does not name; Google's and Microsoft's are built in.
	DeviceAuthURL string
	// Clock returns the current time; nil means time.Now.
	Clock func() time.Time
}

func (o LoginOptions) options() Options { return Options{HTTPClient: o.HTTPClient, Clock: o.Clock} }

// Login runs the one-time consent of account name of cfg: the authorization code
// flow with PKCE (RFC 7636, S256) and a loopback redirect (RFC 8252). It prints to out
// the address to open in a browser, waits for the provider's redirect to the loopback
// listener (checking the state parameter), exchanges the code, and stores the token
// (Store, mode 0600) under cfg.StateDir before it returns it. It prints no secret.
// It fails when the user refuses the consent, the provider returns no refresh token,
// or ctx ends first (bound the wait with a timeout).
func Login(ctx context.Context, cfg *configs.Config, name string, out io.Writer, opts LoginOptions) (*Token, error) {
	acct, err := FindAccount(cfg, name)
	if err != nil {
		return nil, err
	}
	listen := opts.Listen
	if listen == "" {
		listen = "127.0.0.1:0"
		if acct.OAuth.Provider == ProviderMicrosoft {
			listen = "localhost:0"
		}
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("oauth login %s: listen address %q: %w", name, listen, err)
	}
	bind := listen
	if strings.EqualFold(host, "localhost") {
		bind = net.JoinHostPort("127.0.0.1", listen[len(host)+1:])
	}
	if ip := net.ParseIP(strings.Trim(host, "[]")); !strings.EqualFold(host, "localhost") && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("oauth login %s: listen address %q is not on the loopback", name, listen)
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("oauth login %s: listen for the redirect: %w", name, err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	redirect := "http://" + net.JoinHostPort(host, port) + "/"
	listeners := []net.Listener{ln}
	if strings.EqualFold(host, "localhost") {
		// A browser may resolve localhost to ::1 first.
		if ln6, err := net.Listen("tcp", net.JoinHostPort("::1", port)); err == nil {
			defer ln6.Close()
			listeners = append(listeners, ln6)
		}
	}

	conf, err := ClientConfig(acct.OAuth, redirect)
	if err != nil {
		return nil, fmt.Errorf("oauth login %s: %w", name, err)
	}
	if conf.Endpoint.AuthURL == "" {
		return nil, fmt.Errorf("oauth login %s: provider custom needs oauth.auth_url for a login in the browser", name)
	}
	state := randomString()
	verifier := oauth2.GenerateVerifier()
	authOpts := append(authCodeOptions(acct.OAuth, acct.Username), oauth2.S256ChallengeOption(verifier))
	authURL := conf.AuthCodeURL(state, authOpts...)

	fmt.Fprintf(out, "Open this address in a browser and sign in as %s:\n\n  %s\n\n", acct.Username, authURL)
	fmt.Fprintf(out, "Waiting for the provider to redirect the browser to %s ...\n", redirect)
	if opts.In != nil {
		fmt.Fprintf(out, "If the browser runs on another machine, paste here the address it ends at.\n")
	}

	results := make(chan redirectResult, 1)
	deliver := func(r redirectResult) {
		select {
		case results <- r:
		default: // a result is already waiting: the first one counts
		}
	}
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/" {
				http.NotFound(w, r)
				return
			}
			res := checkRedirect(r.URL.Query(), state)
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			if !res.final {
				w.WriteHeader(http.StatusBadRequest)
				fmt.Fprintf(w, "<!doctype html><title>mxdrop</title><p>%s</p>\n", html.EscapeString(res.problem))
				return
			}
			if res.err != nil {
				fmt.Fprintf(w, "<!doctype html><title>mxdrop</title><p>Sign-in failed: %s. See the terminal.</p>\n", html.EscapeString(res.err.Error()))
			} else {
				fmt.Fprintf(w, "<!doctype html><title>mxdrop</title><p>mxdrop received the sign-in for %s. You can close this window.</p>\n", html.EscapeString(name))
			}
			// The page reaches the browser before Login returns and stops the server.
			_ = http.NewResponseController(w).Flush()
			deliver(res)
		}),
	}
	for _, l := range listeners {
		go srv.Serve(l)
	}
	defer func() {
		// Let the handler that delivered the result finish its page.
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close()
		}
	}()
	if opts.In != nil {
		go readPasted(opts.In, state, out, deliver)
	}

	var res redirectResult
	select {
	case <-ctx.Done():
		return nil, fmt.Errorf("oauth login %s: no redirect arrived: %w", name, ctx.Err())
	case res = <-results:
	}
	if res.err != nil {
		return nil, fmt.Errorf("oauth login %s: %w", name, res.err)
	}
	started := opts.options().now()
	tok, err := conf.Exchange(opts.options().httpContext(ctx), res.code, oauth2.VerifierOption(verifier))
	if err != nil {
		return nil, fmt.Errorf("oauth login %s: exchange the code: %w", name, exchangeError(err, res.code, conf.ClientSecret, verifier))
	}
	return finishLogin(ctx, cfg, acct, tok, started, out, opts)
}

// redirectResult is what one redirect (or pasted address) said.
type redirectResult struct {
	final   bool   // the login ends with it: a code, or an error from the provider
	code    string // with final and no err
	err     error  // the provider's refusal
	problem string // why a request that is not final was ignored
}

// checkRedirect reads the query of a redirect (RFC 6749 section 4.1.2). One with
// another state is ignored (it is not the answer to this login, perhaps a forgery:
// section 10.12), as is one without a code or an error.
func checkRedirect(q url.Values, state string) redirectResult {
	if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(state)) != 1 {
		return redirectResult{problem: "This address does not belong to the running mxdrop oauth login (state mismatch); start it from the address it printed."}
	}
	if e := q.Get("error"); e != "" {
		msg := "the provider refused the sign-in: " + cleanText(e)
		if d := cleanText(q.Get("error_description")); d != "" {
			msg += " (" + d + ")"
		}
		return redirectResult{final: true, err: errors.New(msg)}
	}
	code := q.Get("code")
	if code == "" {
		return redirectResult{problem: "The redirect holds no authorization code."}
	}
	return redirectResult{final: true, code: code}
}

// readPasted reads lines from in, each the address a browser ended at, until one
// completes the login.
func readPasted(in io.Reader, state string, out io.Writer, deliver func(redirectResult)) {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		u, err := url.Parse(line)
		if err != nil {
			fmt.Fprintln(out, "That is not an address; paste the whole address from the browser's address bar.")
			continue
		}
		res := checkRedirect(u.Query(), state)
		if !res.final {
			fmt.Fprintln(out, res.problem)
			continue
		}
		deliver(res)
		return
	}
}

// DeviceLogin runs the consent of account name of cfg with the device authorization
// grant (RFC 8628), for a server without a browser: it prints to out the address to
// open on any device and the code to enter there, polls the token endpoint until the
// user has agreed, and stores the token as Login does. Microsoft supports it; Google
// does not allow the Gmail scope in this flow (it answers invalid_scope), so use Login
// there, with LoginOptions.In or an SSH tunnel for a browser on another machine.
// Provider custom needs LoginOptions.DeviceAuthURL.
func DeviceLogin(ctx context.Context, cfg *configs.Config, name string, out io.Writer, opts LoginOptions) (*Token, error) {
	acct, err := FindAccount(cfg, name)
	if err != nil {
		return nil, err
	}
	conf, err := ClientConfig(acct.OAuth, "")
	if err != nil {
		return nil, fmt.Errorf("oauth device login %s: %w", name, err)
	}
	if opts.DeviceAuthURL != "" {
		conf.Endpoint.DeviceAuthURL = opts.DeviceAuthURL
	}
	if conf.Endpoint.DeviceAuthURL == "" {
		return nil, fmt.Errorf("oauth device login %s: provider %s has no device authorization endpoint configured; use mxdrop oauth login %s", name, acct.OAuth.Provider, name)
	}
	hctx := opts.options().httpContext(ctx)
	da, err := conf.DeviceAuth(hctx)
	if err != nil {
		err = exchangeError(err, conf.ClientSecret)
		if acct.OAuth.Provider == ProviderGoogle {
			err = fmt.Errorf("%w (Google allows no Gmail scope in the device flow: use mxdrop oauth login %s, and paste the address the browser ends at)", err, name)
		}
		return nil, fmt.Errorf("oauth device login %s: %w", name, err)
	}
	fmt.Fprintf(out, "On any device, open\n\n  %s\n\nand enter the code\n\n  %s\n\n", da.VerificationURI, da.UserCode)
	if da.VerificationURIComplete != "" {
		fmt.Fprintf(out, "(or open %s, which holds the code)\n", da.VerificationURIComplete)
	}
	fmt.Fprintf(out, "Then sign in as %s. Waiting", acct.Username)
	if !da.Expiry.IsZero() {
		fmt.Fprintf(out, " until %s", da.Expiry.UTC().Format(time.RFC3339))
	}
	fmt.Fprintln(out, " ...")
	started := opts.options().now()
	tok, err := conf.DeviceAccessToken(hctx, da)
	if err != nil {
		return nil, fmt.Errorf("oauth device login %s: %w", name, exchangeError(err, da.DeviceCode, conf.ClientSecret))
	}
	return finishLogin(ctx, cfg, acct, tok, started, out, opts)
}

// finishLogin checks and stores a token from a consent, and says so on out.
func finishLogin(ctx context.Context, cfg *configs.Config, acct Account, tok *oauth2.Token, started time.Time, out io.Writer, opts LoginOptions) (*Token, error) {
	if tok.RefreshToken == "" {
		hint := ""
		switch acct.OAuth.Provider {
		case ProviderMicrosoft:
			hint = " (the scopes must include offline_access)"
		case ProviderGoogle:
			hint = " (remove mxdrop's access at https://myaccount.google.com/permissions and log in again)"
		}
		return nil, fmt.Errorf("oauth login %s: the provider returned no refresh token%s; nothing stored", acct.Name, hint)
	}
	now := opts.options().now()
	t := &Token{
		Account:      acct.Name,
		Provider:     acct.OAuth.Provider,
		ClientID:     acct.OAuth.ClientID,
		Username:     acct.Username,
		Subject:      idTokenSubject(tok),
		Scopes:       Scopes(acct.OAuth),
		TokenType:    tok.TokenType,
		AccessToken:  configs.Secret(tok.AccessToken),
		RefreshToken: configs.Secret(tok.RefreshToken),
		Expiry:       expiryOf(tok, started),
		Obtained:     now,
	}
	store := NewStore(cfg.StateDir)
	if err := durable.MkdirAll(store.Dir(), 0o700); err != nil {
		return nil, fmt.Errorf("oauth login %s: %w", acct.Name, err)
	}
	// A daemon refreshing this account at this moment would otherwise overwrite the
	// new grant with the old one.
	unlock, err := lockAccount(ctx, filepath.Join(store.Dir(), acct.Name+".lock"))
	if err != nil {
		return nil, fmt.Errorf("oauth login %s: %w", acct.Name, err)
	}
	defer unlock()
	if err := store.Save(acct.Name, t); err != nil {
		return nil, fmt.Errorf("oauth login %s: %w", acct.Name, err)
	}
	if t.Subject != "" && strings.Contains(t.Subject, "@") && !strings.EqualFold(t.Subject, acct.Username) {
		fmt.Fprintf(out, "Warning: signed in as %s, but the configuration's username is %s; the server will refuse the token unless they are the same mailbox.\n", t.Subject, acct.Username)
	}
	fmt.Fprintf(out, "Signed in. The token of %s is stored in %s", acct.Name, store.Path(acct.Name))
	if !t.Expiry.IsZero() {
		fmt.Fprintf(out, "; its access token is valid until %s and is refreshed automatically", t.Expiry.UTC().Format(time.RFC3339))
	}
	fmt.Fprintln(out, ".")
	return t, nil
}

// exchangeError makes an error of the token or device endpoint safe to show: the
// provider's code and description with secrets removed, never its raw body.
func exchangeError(err error, secrets ...string) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		msg := "provider answered"
		if re.ErrorCode != "" {
			msg += " " + cleanText(re.ErrorCode, secrets...)
			if d := cleanText(re.ErrorDescription, secrets...); d != "" {
				msg += " (" + d + ")"
			}
		} else if re.Response != nil {
			msg += fmt.Sprintf(" HTTP %d", re.Response.StatusCode)
		}
		return errors.New(msg)
	}
	return redactErr(err, secrets...)
}

// idTokenSubject returns who signed in according to the id_token the provider sent
// along (OpenID Connect): its email, else preferred_username, else sub; "" without
// one. The token came straight from the token endpoint over TLS, and the value is
// only shown and stored, never trusted for access, so its signature is not checked.
func idTokenSubject(tok *oauth2.Token) string {
	raw, _ := tok.Extra("id_token").(string)
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var claims struct {
		Email             string `json:"email"`
		PreferredUsername string `json:"preferred_username"`
		Sub               string `json:"sub"`
	}
	if json.Unmarshal(b, &claims) != nil {
		return ""
	}
	for _, s := range []string{claims.Email, claims.PreferredUsername, claims.Sub} {
		if s != "" {
			return cleanText(s)
		}
	}
	return ""
}

// randomString returns 32 random bytes, base64url: an unguessable state parameter.
func randomString() string {
	b := make([]byte, 32)
	rand.Read(b) // crypto/rand.Read never fails (Go 1.24)
	return base64.RawURLEncoding.EncodeToString(b)
}
