package oauth_test

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/configs"
)

// clock is the tests' time: the wall clock plus an offset that only grows, shared by
// the provider and the Sources, so an access token can expire without waiting.
type clock struct{ offset atomic.Int64 }

func (c *clock) Now() time.Time            { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) Advance(d time.Duration)   { c.offset.Add(int64(d)) }
func (c *clock) Func() func() time.Time    { return c.Now }
func (c *clock) Since(t time.Time) float64 { return c.Now().Sub(t).Seconds() }

// provider is an OAuth 2.0 authorization server for the tests: authorization endpoint
// (PKCE S256 required, redirects straight back with a code, as a browser whose user
// agreed), token endpoint (authorization_code, refresh_token, device_code grants),
// device authorization endpoint (RFC 8628) and introspection endpoint (RFC 7662), with
// short-lived access tokens, optional refresh token rotation and switches to revoke
// the consent, expire access tokens early, refuse the consent and fail with 503.
type provider struct {
	t     testing.TB
	srv   *httptest.Server
	clock *clock

	clientID, clientSecret string

	mu        sync.Mutex
	user      string        // who signs in at the authorization endpoint and devices
	lifetime  time.Duration // of access tokens
	rotate    bool          // a refresh returns a new refresh token and voids the old one
	deny      bool          // the user refuses the consent
	down      bool          // the token endpoint answers 503
	codes     map[string]codeGrant
	devices   map[string]*deviceGrant // by device code
	refreshes map[string]*grant       // by refresh token
	access    map[string]accessToken
	pkceOK    int // authorization codes redeemed with a correct verifier
	refreshN  int // successful refresh grants
	introN    int // introspection requests
}

type grant struct {
	user    string
	revoked bool
}

type codeGrant struct {
	challenge, redirect string
	g                   *grant
}

type deviceGrant struct {
	userCode string
	approved bool
	g        *grant
}

type accessToken struct {
	g      *grant
	expiry time.Time
}

func newProvider(t testing.TB, c *clock) *provider {
	p := &provider{
		t: t, clock: c,
		clientID: "mxdrop-test-client", clientSecret: "client-secret-" + random(),
		user: "alice@example.com", lifetime: 10 * time.Minute, rotate: true,
		codes: map[string]codeGrant{}, devices: map[string]*deviceGrant{},
		refreshes: map[string]*grant{}, access: map[string]accessToken{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /authorize", p.authorize)
	mux.HandleFunc("POST /token", p.token)
	mux.HandleFunc("POST /device", p.device)
	mux.HandleFunc("POST /introspect", p.introspect)
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	return p
}

// oauth returns the client configuration of the provider (provider custom).
func (p *provider) oauth() configs.OAuth {
	return configs.OAuth{
		Provider: "custom", ClientID: p.clientID, ClientSecret: configs.Secret(p.clientSecret),
		AuthURL: p.srv.URL + "/authorize", TokenURL: p.srv.URL + "/token",
		Scopes: []string{"mail"},
	}
}

func (p *provider) set(f func(p *provider)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(p)
}

func (p *provider) counts() (pkce, refreshes, introspections int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pkceOK, p.refreshN, p.introN
}

// revoke withdraws every consent: refresh tokens fail with invalid_grant and access
// tokens are inactive.
func (p *provider) revoke() {
	p.set(func(p *provider) {
		for _, g := range p.refreshes {
			g.revoked = true
		}
		for _, a := range p.access {
			a.g.revoked = true
		}
	})
}

// expireAccess ends every access token issued so far now, before its announced expiry.
func (p *provider) expireAccess() {
	p.set(func(p *provider) {
		for k, a := range p.access {
			a.expiry = p.clock.Now().Add(-time.Second)
			p.access[k] = a
		}
	})
}

// approve lets the device flow with userCode complete.
func (p *provider) approve(userCode string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, d := range p.devices {
		if d.userCode == userCode {
			d.approved = true
			return true
		}
	}
	return false
}

// refreshTokens returns the refresh tokens the provider accepts.
func (p *provider) refreshTokens() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for rt, g := range p.refreshes {
		if !g.revoked {
			out = append(out, rt)
		}
	}
	return out
}

// active reports the user of an access token, or "" when it is not active.
func (p *provider) active(token string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	a, ok := p.access[token]
	if !ok || a.g.revoked || !p.clock.Now().Before(a.expiry) {
		return ""
	}
	return a.g.user
}

func (p *provider) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p.mu.Lock()
	defer p.mu.Unlock()
	redirect, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || redirect.Scheme != "http" || (redirect.Hostname() != "127.0.0.1" && redirect.Hostname() != "localhost") {
		http.Error(w, "bad redirect_uri", http.StatusBadRequest)
		return
	}
	if q.Get("client_id") != p.clientID || q.Get("response_type") != "code" ||
		q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("state") == "" {
		http.Error(w, "bad authorization request", http.StatusBadRequest)
		return
	}
	back := redirect.Query()
	back.Set("state", q.Get("state"))
	if p.deny {
		back.Set("error", "access_denied")
		back.Set("error_description", "The user said no.")
	} else {
		code := "code-" + random()
		p.codes[code] = codeGrant{challenge: q.Get("code_challenge"), redirect: q.Get("redirect_uri"), g: &grant{user: p.user}}
		back.Set("code", code)
	}
	redirect.RawQuery = back.Encode()
	http.Redirect(w, r, redirect.String(), http.StatusFound)
}

func (p *provider) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "bad form")
		return
	}
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		return
	}
	if id != p.clientID || secret != p.clientSecret {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "unknown client")
		return
	}
	f := r.PostForm
	switch f.Get("grant_type") {
	case "authorization_code":
		c, ok := p.codes[f.Get("code")]
		delete(p.codes, f.Get("code")) // single use
		if !ok || c.redirect != f.Get("redirect_uri") {
			oauthError(w, http.StatusBadRequest, "invalid_grant", "unknown code")
			return
		}
		sum := sha256.Sum256([]byte(f.Get("code_verifier")))
		if f.Get("code_verifier") == "" || base64.RawURLEncoding.EncodeToString(sum[:]) != c.challenge {
			oauthError(w, http.StatusBadRequest, "invalid_grant", "PKCE verification failed")
			return
		}
		p.pkceOK++
		p.issue(w, c.g, "")
	case "refresh_token":
		rt := f.Get("refresh_token")
		g, ok := p.refreshes[rt]
		if !ok || g.revoked {
			oauthError(w, http.StatusBadRequest, "invalid_grant", "Token has been expired or revoked.")
			return
		}
		p.refreshN++
		if p.rotate {
			delete(p.refreshes, rt)
			p.issue(w, g, "")
		} else {
			p.issue(w, g, rt)
		}
	case "urn:ietf:params:oauth:grant-type:device_code":
		d, ok := p.devices[f.Get("device_code")]
		switch {
		case !ok:
			oauthError(w, http.StatusBadRequest, "invalid_grant", "unknown device code")
		case !d.approved:
			oauthError(w, http.StatusBadRequest, "authorization_pending", "")
		default:
			delete(p.devices, f.Get("device_code"))
			p.issue(w, d.g, "")
		}
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "")
	}
}

// issue answers with a new access token and, unless keepRT is set (no rotation), a new
// refresh token. p.mu is held.
func (p *provider) issue(w http.ResponseWriter, g *grant, keepRT string) {
	at := "at-" + random()
	p.access[at] = accessToken{g: g, expiry: p.clock.Now().Add(p.lifetime)}
	resp := map[string]any{"access_token": at, "token_type": "Bearer", "expires_in": int(p.lifetime / time.Second)}
	if keepRT == "" {
		rt := "rt-" + random()
		p.refreshes[rt] = g
		resp["refresh_token"] = rt
	}
	resp["id_token"] = fakeIDToken(g.user)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(resp)
}

func (p *provider) device(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil || r.PostForm.Get("client_id") != p.clientID {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "")
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	dc, uc := "dc-"+random(), "UC-"+random()[:8]
	p.devices[dc] = &deviceGrant{userCode: uc, g: &grant{user: p.user}}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"device_code": dc, "user_code": uc, "verification_uri": p.srv.URL + "/verify",
		"expires_in": 600, "interval": 1,
	})
}

// introspect is RFC 7662 token introspection, as Dovecot's oauth2 passdb calls it with
// introspection_mode = post.
func (p *provider) introspect(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	p.introN++
	p.mu.Unlock()
	user := p.active(r.PostForm.Get("token"))
	w.Header().Set("Content-Type", "application/json")
	if user == "" {
		json.NewEncoder(w).Encode(map[string]any{"active": false})
		return
	}
	json.NewEncoder(w).Encode(map[string]any{"active": true, "username": user, "client_id": p.clientID, "scope": "mail"})
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

// fakeIDToken is an unsigned JWT naming user, enough for the subject shown by Login.
func fakeIDToken(user string) string {
	enc := base64.RawURLEncoding
	claims, _ := json.Marshal(map[string]string{"sub": "0123", "email": user})
	return enc.EncodeToString([]byte(`{"alg":"none"}`)) + "." + enc.EncodeToString(claims) + ".sig"
}

func random() string {
	b := make([]byte, 16)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
