package oauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/rs/zerolog"
	"golang.org/x/oauth2"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer/durable"
)

// DefaultRefreshMargin is how long before its expiry an access token is replaced.
const DefaultRefreshMargin = 2 * time.Minute

// defaultHTTPTimeout bounds one request to the provider when Options.HTTPClient is nil.
const defaultHTTPTimeout = 30 * time.Second

// Options complete NewSource and NewSources with what the configuration file does
// not hold.
type Options struct {
	// HTTPClient talks to the provider; nil means a client with a 30s timeout.
	HTTPClient *http.Client
	// Clock returns the current time; nil means time.Now. It decides when an access
	// token is due for refresh, so tests can move it.
	Clock func() time.Time
	// RefreshMargin replaces an access token this long before it expires; 0 means
	// DefaultRefreshMargin.
	RefreshMargin time.Duration
	// Logger receives one event per refresh (debug), per refresh failure (warn) and per
	// token file that cannot be written (error), with component=oauth and account=NAME;
	// never a token. The zero Logger logs nothing.
	Logger zerolog.Logger
}

func (o Options) httpContext(ctx context.Context) context.Context {
	hc := o.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: defaultHTTPTimeout}
	}
	return context.WithValue(ctx, oauth2.HTTPClient, hc)
}

func (o Options) now() time.Time {
	if o.Clock != nil {
		return o.Clock()
	}
	return time.Now()
}

// Source gives the access token of one account: the stored one while it is valid for
// longer than the refresh margin, else a refreshed one, whose (possibly rotated)
// refresh token it stores before returning. Refreshes are serialised, within the
// process by the Source and across processes by a lock file beside the token, and a
// token file replaced by another process (mxdrop oauth login) is picked up at the
// next call. A Source is safe for concurrent use.
type Source struct {
	acct   Account
	store  *Store
	conf   *oauth2.Config
	opts   Options
	margin time.Duration
	log    zerolog.Logger

	sem chan struct{} // held by AccessToken: one refresh at a time

	mu      sync.Mutex // guards the fields below
	tok     *Token     // nil when none is stored
	stamp   stamp      // of the file tok came from
	refused string     // an access token a server refused: never handed out again
}

// NewSource returns the Source of account a with tokens in store. It fails when a's
// OAuth client cannot be built (unknown provider, no client_id, unreadable
// client_secret_file); a missing token is no error until AccessToken.
func NewSource(a Account, store *Store, opts Options) (*Source, error) {
	if err := checkName(a.Name); err != nil {
		return nil, err
	}
	conf, err := ClientConfig(a.OAuth, "")
	if err != nil {
		return nil, fmt.Errorf("oauth account %s: %w", a.Name, err)
	}
	margin := opts.RefreshMargin
	if margin <= 0 {
		margin = DefaultRefreshMargin
	}
	return &Source{
		acct:   a,
		store:  store,
		conf:   conf,
		opts:   opts,
		margin: margin,
		log:    opts.Logger.With().Str("component", "oauth").Str("account", a.Name).Logger(),
		sem:    make(chan struct{}, 1),
	}, nil
}

// Account is the account the Source serves.
func (s *Source) Account() Account { return s.acct }

// AccessToken returns a usable access token, refreshing it when it expires within the
// refresh margin or was refused (Invalidate). It fails with a *LoginRequiredError
// when only mxdrop oauth login can help, a *RefreshError when the provider could not
// refresh (while the current token has not actually expired, that token is returned
// instead), or ctx's error.
func (s *Source) AccessToken(ctx context.Context) (string, error) {
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	defer func() { <-s.sem }()

	if err := s.reload(false); err != nil {
		return "", err
	}
	if t, ok := s.usable(s.margin); ok {
		return t, nil
	}
	return s.refresh(ctx)
}

// Invalidate marks the current access token as refused by a server: the next
// AccessToken refreshes even though it has not expired. Call it after an
// authentication failure; the SASL clients of the Source call it themselves when
// the server answers with an error challenge.
func (s *Source) Invalidate() {
	_ = s.reload(false) // the token in use may not have been read by this Source yet
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tok != nil {
		s.refused = s.tok.AccessToken.Reveal()
	}
}

// invalidate marks token as refused; a token already replaced stays untouched.
func (s *Source) invalidate(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refused = token
}

// usable returns the current access token when it is valid for at least margin more
// and was not refused.
func (s *Source) usable(margin time.Duration) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tok
	if t == nil || t.AccessToken == "" || t.AccessToken.Reveal() == s.refused || !s.sameClient(t) {
		return "", false
	}
	if !t.Expiry.IsZero() && !s.opts.now().Add(margin).Before(t.Expiry) {
		return "", false
	}
	return t.AccessToken.Reveal(), true
}

// sameClient reports whether t was issued to the configured client: a refresh token
// is bound to its client, and a changed client_id needs a new login.
func (s *Source) sameClient(t *Token) bool {
	return t.ClientID == "" || t.ClientID == s.conf.ClientID
}

// reload reads the token file when it changed since it was read (or always, with
// force). A missing file leaves no token.
func (s *Source) reload(force bool) error {
	st := s.store.stamp(s.acct.Name)
	s.mu.Lock()
	prev := s.stamp
	same := s.tok != nil && st == prev
	s.mu.Unlock()
	if same && !force {
		return nil
	}
	t, err := s.store.Load(s.acct.Name)
	switch {
	case errors.Is(err, ErrNoToken):
		t = nil
	case errors.Is(err, errDamaged):
		return s.loginRequired(strings.TrimPrefix(err.Error(), "load token of "+s.acct.Name+": "), "")
	case err != nil:
		return fmt.Errorf("oauth account %s: %w", s.acct.Name, err)
	}
	s.mu.Lock()
	// A refresh that stored its token meanwhile has the newer one.
	if s.stamp == prev {
		s.tok, s.stamp = t, st
	}
	s.mu.Unlock()
	return nil
}

func (s *Source) loginRequired(reason, code string) error {
	return &LoginRequiredError{Account: s.acct.Name, Reason: reason, Code: code}
}

// refresh runs with s.sem held.
func (s *Source) refresh(ctx context.Context) (string, error) {
	if err := durable.MkdirAll(s.store.Dir(), 0o700); err != nil {
		return "", fmt.Errorf("oauth account %s: %w", s.acct.Name, err)
	}
	unlock, err := lockAccount(ctx, filepath.Join(s.store.Dir(), s.acct.Name+".lock"))
	if err != nil {
		return "", fmt.Errorf("oauth account %s: %w", s.acct.Name, err)
	}
	defer unlock()
	// Another process may have refreshed, or logged in, while this one waited.
	if err := s.reload(true); err != nil {
		return "", err
	}
	if t, ok := s.usable(s.margin); ok {
		return t, nil
	}
	s.mu.Lock()
	var cur Token
	if s.tok != nil {
		cur = *s.tok
	}
	s.mu.Unlock()
	switch {
	case s.tokMissing():
		return "", s.loginRequired("no token stored", "")
	case !s.sameClient(&cur):
		return "", s.loginRequired(fmt.Sprintf("the stored token belongs to client %s, the configuration names %s", cur.ClientID, s.conf.ClientID), "")
	case cur.RefreshToken == "":
		return "", s.loginRequired("the provider issued no refresh token", "")
	}

	started := s.opts.now()
	nt, err := s.conf.TokenSource(s.opts.httpContext(ctx), &oauth2.Token{RefreshToken: cur.RefreshToken.Reveal()}).Token()
	if err != nil {
		err = classify(s.acct.Name, err, cur.RefreshToken.Reveal(), cur.AccessToken.Reveal(), s.conf.ClientSecret)
		var lr *LoginRequiredError
		if errors.As(err, &lr) {
			s.log.Error().Str("reason", lr.Code).Msg("refresh refused: login required")
			cur.LastError, cur.LastErrorAt = lr.Code, s.opts.now()
			s.save(&cur)
			return "", err
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		// The provider may be down for a while: a token that has not yet expired
		// still serves.
		if t, ok := s.usable(0); ok {
			s.log.Warn().Err(err).Time("expiry", cur.Expiry).Msg("refresh failed; the current access token serves until it expires")
			return t, nil
		}
		s.log.Warn().Err(err).Msg("refresh failed")
		return "", err
	}
	cur.AccessToken = configs.Secret(nt.AccessToken)
	cur.TokenType = nt.TokenType
	if nt.RefreshToken != "" {
		cur.RefreshToken = configs.Secret(nt.RefreshToken)
	}
	cur.Expiry = expiryOf(nt, started)
	cur.Refreshed = s.opts.now()
	cur.LastError, cur.LastErrorAt = "", time.Time{}
	if cur.Account == "" {
		cur.Account = s.acct.Name
	}
	s.save(&cur)
	s.log.Debug().Time("expiry", cur.Expiry).Msg("access token refreshed")
	return nt.AccessToken, nil
}

func (s *Source) tokMissing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tok == nil
}

// save stores t and makes it current. A failed write is logged, not returned: the new
// access token works, and a rotated refresh token that did not reach the disk is only
// needed after a restart (which then asks for a login).
func (s *Source) save(t *Token) {
	err := s.store.Save(s.acct.Name, t)
	st := s.store.stamp(s.acct.Name)
	s.mu.Lock()
	s.tok = t
	if err == nil {
		s.stamp = st
	}
	s.mu.Unlock()
	if err != nil {
		s.log.Error().Err(err).Msg("cannot store the refreshed token; after a restart this account may need mxdrop oauth login")
	}
}

// expiryOf computes the expiry of a fresh token on the Source's clock from
// expires_in, counted from when the request started; x/oauth2's own Expiry (wall
// clock) serves when the provider sent no expires_in.
func expiryOf(t *oauth2.Token, started time.Time) time.Time {
	if t.ExpiresIn > 0 {
		return started.Add(time.Duration(t.ExpiresIn) * time.Second)
	}
	return t.Expiry
}

// SASLClient returns an XOAUTH2 client with a fresh access token: the hook of
// bounce.RelayOptions.SASL (bounce.SASLSource) for auth method xoauth2. A refusal by the
// server invalidates the token, so the next attempt refreshes. Errors are those of
// AccessToken.
func (s *Source) SASLClient(ctx context.Context) (sasl.Client, error) {
	return s.SASLClientFor(ctx, nil)
}

// SASLClientFor returns a client of the mechanism ChooseMechanism picks from the
// server's offered mechanisms (nil: XOAUTH2), with a fresh access token. A refusal
// by the server invalidates the token. Errors are those of AccessToken.
func (s *Source) SASLClientFor(ctx context.Context, offered []string) (sasl.Client, error) {
	sc, _, err := s.client(ctx, offered)
	return sc, err
}

func (s *Source) client(ctx context.Context, offered []string) (sasl.Client, string, error) {
	tok, err := s.AccessToken(ctx)
	if err != nil {
		return nil, "", err
	}
	refused := func() { s.invalidate(tok) }
	if ChooseMechanism(offered) == OAuthBearer {
		return NewOAuthBearerClient(s.acct.Username, tok, s.acct.Host, s.acct.Port, refused), tok, nil
	}
	return NewXOAuth2Client(s.acct.Username, tok, refused), tok, nil
}

// Authenticate logs in through auth (a protocol client's SASL authentication) with a
// client for offered, and when refused(err) says the server refused the credentials,
// invalidates the token and tries once more with a refreshed one: the "refresh once
// after an authentication failure" rule, for servers that revoke a token before its
// expiry. It returns auth's last error, or the Source's (a *LoginRequiredError when
// the refresh was refused for good).
func (s *Source) Authenticate(ctx context.Context, offered []string, auth func(sasl.Client) error, refused func(error) bool) error {
	sc, tok, err := s.client(ctx, offered)
	if err != nil {
		return err
	}
	err = auth(sc)
	if err == nil || refused == nil || !refused(err) {
		return err
	}
	s.invalidate(tok)
	if sc, _, err = s.client(ctx, offered); err != nil {
		return err
	}
	return auth(sc)
}
