package oauth_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/rs/zerolog"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/pollers/oauth"
)

// newSource logs account name in and returns its Source on the shared clock.
func newSource(t testing.TB, p *provider, c *clock, cfg *configs.Config, name string, log *bytes.Buffer) *oauth.Source {
	t.Helper()
	if _, err := oauth.NewStore(cfg.StateDir).Load(name); err != nil {
		login(t, cfg, name)
	}
	opts := oauth.Options{Clock: c.Func()}
	if log != nil {
		opts.Logger = zerolog.New(log).Level(zerolog.DebugLevel)
	}
	ss, err := oauth.NewSources(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	src := ss.Get(name)
	if src == nil {
		t.Fatalf("no source %s", name)
	}
	return src
}

func mustToken(t testing.TB, src *oauth.Source) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, err := src.AccessToken(ctx)
	if err != nil {
		t.Fatalf("AccessToken: %v", err)
	}
	return tok
}

func TestRefreshBeforeExpiry(t *testing.T) {
	c := &clock{}
	p := newProvider(t, c)
	cfg := testConfig(t, p)
	var log bytes.Buffer
	src := newSource(t, p, c, cfg, "alice-imap", &log)
	store := oauth.NewStore(cfg.StateDir)
	first, _ := store.Load("alice-imap")

	// Valid for 10 minutes: no refresh while more than 2 remain.
	a1 := mustToken(t, src)
	if a1 != first.AccessToken.Reveal() || p.active(a1) == "" {
		t.Fatal("the stored access token was not used")
	}
	c.Advance(7 * time.Minute)
	if a := mustToken(t, src); a != a1 {
		t.Error("refreshed with 3 minutes left")
	}
	if _, n, _ := p.counts(); n != 0 {
		t.Errorf("%d refreshes, want 0", n)
	}

	// Within the margin: refreshed ahead of expiry, the rotated refresh token stored.
	c.Advance(90 * time.Second)
	a2 := mustToken(t, src)
	if a2 == a1 || p.active(a2) == "" {
		t.Fatal("no new access token inside the refresh margin")
	}
	if _, n, _ := p.counts(); n != 1 {
		t.Errorf("%d refreshes, want 1", n)
	}
	second, err := store.Load("alice-imap")
	if err != nil {
		t.Fatal(err)
	}
	rts := p.refreshTokens()
	if second.RefreshToken == first.RefreshToken || len(rts) != 1 || second.RefreshToken.Reveal() != rts[0] {
		t.Error("the rotated refresh token was not stored")
	}
	if second.AccessToken.Reveal() != a2 || second.Refreshed.IsZero() || !second.Obtained.Equal(first.Obtained) {
		t.Errorf("stored after refresh: %+v", second)
	}

	// Concurrent users of an expired token share one refresh.
	c.Advance(time.Hour)
	var wg sync.WaitGroup
	got := make([]string, 8)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], _ = src.AccessToken(context.Background())
		}()
	}
	wg.Wait()
	for _, g := range got {
		if g != got[0] || g == a2 || p.active(g) == "" {
			t.Fatalf("concurrent AccessToken gave %q", got)
		}
	}
	if _, n, _ := p.counts(); n != 2 {
		t.Errorf("%d refreshes after concurrent use, want 2", n)
	}
	noSecrets(t, p, "the log", log.String())
	if !strings.Contains(log.String(), `"account":"alice-imap"`) || !strings.Contains(log.String(), "access token refreshed") {
		t.Errorf("log: %s", log.String())
	}
}

func TestRefreshWithoutRotation(t *testing.T) {
	c := &clock{}
	p := newProvider(t, c)
	p.set(func(p *provider) { p.rotate = false })
	cfg := testConfig(t, p)
	src := newSource(t, p, c, cfg, "alice-imap", nil)
	before, _ := oauth.NewStore(cfg.StateDir).Load("alice-imap")
	c.Advance(time.Hour)
	mustToken(t, src)
	after, _ := oauth.NewStore(cfg.StateDir).Load("alice-imap")
	if after.RefreshToken != before.RefreshToken {
		t.Error("the refresh token changed although the provider did not rotate it")
	}
	c.Advance(time.Hour)
	mustToken(t, src)
	if _, n, _ := p.counts(); n != 2 {
		t.Errorf("%d refreshes, want 2", n)
	}
}

func TestInvalidateRefreshes(t *testing.T) {
	c := &clock{}
	p := newProvider(t, c)
	cfg := testConfig(t, p)
	src := newSource(t, p, c, cfg, "alice-imap", nil)
	a1 := mustToken(t, src)
	p.expireAccess() // the server stops accepting it before its announced expiry
	src.Invalidate()
	a2 := mustToken(t, src)
	if a2 == a1 || p.active(a2) == "" {
		t.Fatal("Invalidate did not lead to a refresh")
	}
	if a := mustToken(t, src); a != a2 {
		t.Error("a second call refreshed again")
	}

	// The SASL clients invalidate on the server's error challenge themselves.
	sc, err := src.SASLClientFor(context.Background(), []string{"PLAIN", "OAUTHBEARER"})
	if err != nil {
		t.Fatal(err)
	}
	if mech, _, _ := sc.Start(); mech != "OAUTHBEARER" {
		t.Errorf("mechanism %s, want OAUTHBEARER", mech)
	}
	if resp, err := sc.Next([]byte(`{"status":"invalid_token"}`)); err != nil || !bytes.Equal(resp, []byte{1}) {
		t.Errorf("OAUTHBEARER Next = %q, %v; want 0x01", resp, err)
	}
	if a := mustToken(t, src); a == a2 {
		t.Error("an error challenge did not invalidate the token")
	}
}

func TestAuthenticateRetriesOnce(t *testing.T) {
	c := &clock{}
	p := newProvider(t, c)
	cfg := testConfig(t, p)
	src := newSource(t, p, c, cfg, "alice-imap", nil)
	errRefused := errors.New("NO [AUTHENTICATIONFAILED]")
	var tokens []string
	// A server that checks with the provider, as Dovecot does.
	check := func(sc sasl.Client) error {
		_, ir, _ := sc.Start()
		tok := string(ir[strings.Index(string(ir), "Bearer ")+7 : len(ir)-2])
		tokens = append(tokens, tok)
		if p.active(tok) == "" {
			return errRefused
		}
		return nil
	}
	refused := func(err error) bool { return errors.Is(err, errRefused) }

	p.expireAccess()
	err := src.Authenticate(context.Background(), nil, check, refused)
	if err != nil || len(tokens) != 2 || tokens[0] == tokens[1] {
		t.Fatalf("Authenticate = %v with tokens %d, want success on the second, refreshed try", err, len(tokens))
	}

	// Revoked: the retry's refresh fails with the error that names the fix.
	p.revoke()
	tokens = nil
	err = src.Authenticate(context.Background(), nil, check, refused)
	if !errors.Is(err, oauth.ErrLoginRequired) || len(tokens) != 1 {
		t.Fatalf("Authenticate after revocation = %v (%d tries), want ErrLoginRequired after one", err, len(tokens))
	}
}

func TestRevokedConsent(t *testing.T) {
	c := &clock{}
	p := newProvider(t, c)
	cfg := testConfig(t, p)
	var log bytes.Buffer
	src := newSource(t, p, c, cfg, "alice-pop3", &log)
	p.revoke()
	c.Advance(time.Hour)
	_, err := src.AccessToken(context.Background())
	var lr *oauth.LoginRequiredError
	if !errors.As(err, &lr) || !errors.Is(err, oauth.ErrLoginRequired) {
		t.Fatalf("AccessToken after revocation = %v, want a *LoginRequiredError", err)
	}
	msg := err.Error()
	for _, want := range []string{"alice-pop3", `mxdrop oauth login alice-pop3`, "invalid_grant", "revoked"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not say %q", msg, want)
		}
	}
	if lr.Code != "invalid_grant" || lr.Temporary() {
		t.Errorf("error %+v", lr)
	}
	noSecrets(t, p, "the error", fmt.Sprintf("%v %+v %#v", err, err, err))
	noSecrets(t, p, "the log", log.String())

	// Status reports it without trying, and the state survives a restart.
	var st bytes.Buffer
	if err := oauth.Status(&st, cfg, oauth.NewStore(cfg.StateDir)); !errors.Is(err, oauth.ErrLoginRequired) {
		t.Errorf("Status = %v, want ErrLoginRequired", err)
	}
	if !strings.Contains(st.String(), `alice-pop3: the provider refused the refresh token (invalid_grant)`) {
		t.Errorf("Status:\n%s", st.String())
	}

	// A new login fixes it, and a running Source picks the new file up.
	p.set(func(p *provider) {}) // new grants are not revoked
	login(t, cfg, "alice-pop3")
	if tok := mustToken(t, src); p.active(tok) == "" {
		t.Error("the Source did not pick up the new login")
	}
}

func TestNoToken(t *testing.T) {
	p := newProvider(t, &clock{})
	cfg := testConfig(t, p)
	ss, err := oauth.NewSources(cfg, oauth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = ss.Poller(context.Background(), cfg.Pollers[0])
	if !errors.Is(err, oauth.ErrLoginRequired) || !strings.Contains(err.Error(), `no token stored; run "mxdrop oauth login alice-imap"`) {
		t.Errorf("Poller without a token = %v", err)
	}
	if src, err := ss.Relay(""); err != nil || src == nil {
		t.Errorf("no SASL source for the xoauth2 relay: %v", err)
	}
	cfg.SMTP.Auth.Method = "plain"
	ss, _ = oauth.NewSources(cfg, oauth.Options{})
	if src, err := ss.Relay(""); err == nil {
		t.Errorf("Relay of a plain relay = %v, want an error", src)
	}
}

func TestClientChanged(t *testing.T) {
	c := &clock{}
	p := newProvider(t, c)
	cfg := testConfig(t, p)
	login(t, cfg, "alice-imap")
	cfg.Pollers[0].Auth.OAuth.ClientID = "another-client"
	ss, _ := oauth.NewSources(cfg, oauth.Options{Clock: c.Func()})
	_, err := ss.Get("alice-imap").AccessToken(context.Background())
	if !errors.Is(err, oauth.ErrLoginRequired) || !strings.Contains(err.Error(), "belongs to client mxdrop-test-client, the configuration names another-client") {
		t.Errorf("AccessToken with another client_id = %v", err)
	}
}

func TestProviderDown(t *testing.T) {
	c := &clock{}
	p := newProvider(t, c)
	cfg := testConfig(t, p)
	src := newSource(t, p, c, cfg, "alice-imap", nil)
	a1 := mustToken(t, src)
	p.set(func(p *provider) { p.down = true })

	// Inside the margin the current token still serves.
	c.Advance(9 * time.Minute)
	if a := mustToken(t, src); a != a1 {
		t.Error("a token that has not expired was not served while the provider is down")
	}
	// Expired: a temporary error.
	c.Advance(2 * time.Minute)
	_, err := src.AccessToken(context.Background())
	var re *oauth.RefreshError
	if !errors.As(err, &re) || !re.Temporary() || re.Status != 503 || errors.Is(err, oauth.ErrLoginRequired) {
		t.Fatalf("AccessToken with the provider down = %v, want a temporary *RefreshError", err)
	}
	if !strings.Contains(err.Error(), "alice-imap") || !strings.Contains(err.Error(), "HTTP 503") {
		t.Errorf("error %q", err)
	}
	p.set(func(p *provider) { p.down = false })
	if a := mustToken(t, src); a == a1 {
		t.Error("no refresh once the provider is back")
	}

	// A wrong client secret is a configuration problem, not temporary.
	cfg.Pollers[0].Auth.OAuth.ClientSecret = "wrong"
	ss, _ := oauth.NewSources(cfg, oauth.Options{Clock: c.Func()})
	c.Advance(time.Hour)
	_, err = ss.Get("alice-imap").AccessToken(context.Background())
	if !errors.As(err, &re) || re.Temporary() || !strings.Contains(err.Error(), "invalid_client") {
		t.Errorf("AccessToken with a wrong secret = %v", err)
	}
	noSecrets(t, p, "the error", err.Error())
}

// Two processes (two Sources over one state_dir) refresh one account once, and the
// second uses the first one's rotated token instead of its voided one.
func TestSharedStateDir(t *testing.T) {
	c := &clock{}
	p := newProvider(t, c)
	cfg := testConfig(t, p)
	login(t, cfg, "alice-imap")
	ss1, _ := oauth.NewSources(cfg, oauth.Options{Clock: c.Func()})
	ss2, _ := oauth.NewSources(cfg, oauth.Options{Clock: c.Func()})
	a1, a2 := mustToken(t, ss1.Get("alice-imap")), mustToken(t, ss2.Get("alice-imap"))
	if a1 != a2 {
		t.Fatal("two Sources read different tokens")
	}
	c.Advance(time.Hour)
	b1 := mustToken(t, ss1.Get("alice-imap"))
	b2 := mustToken(t, ss2.Get("alice-imap"))
	if b1 != b2 || p.active(b2) == "" {
		t.Error("the second Source did not take the first one's refreshed token")
	}
	if _, n, _ := p.counts(); n != 1 {
		t.Errorf("%d refreshes, want 1", n)
	}
}

func TestDamagedTokenFile(t *testing.T) {
	p := newProvider(t, &clock{})
	cfg := testConfig(t, p)
	st := oauth.NewStore(cfg.StateDir)
	os.MkdirAll(st.Dir(), 0o700)
	os.WriteFile(st.Path("alice-imap"), []byte("{not json"), 0o600)
	ss, _ := oauth.NewSources(cfg, oauth.Options{})
	_, err := ss.Get("alice-imap").AccessToken(context.Background())
	if !errors.Is(err, oauth.ErrLoginRequired) || !strings.Contains(err.Error(), "is not a token file") {
		t.Errorf("AccessToken with a damaged file = %v", err)
	}
}
