package oauth_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/pollers/oauth"
)

// output collects what Login prints and hands out its lines as they come.
type output struct {
	mu    sync.Mutex
	all   bytes.Buffer
	part  []byte
	lines chan string
}

func newOutput() *output { return &output{lines: make(chan string, 100)} }

func (o *output) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.all.Write(b)
	o.part = append(o.part, b...)
	for {
		i := bytes.IndexByte(o.part, '\n')
		if i < 0 {
			break
		}
		o.lines <- string(o.part[:i])
		o.part = o.part[i+1:]
	}
	return len(b), nil
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.all.String()
}

// waitLine returns the first line printed that has prefix (after trimming spaces).
func (o *output) waitLine(t testing.TB, prefix string) string {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case l := <-o.lines:
			if l = strings.TrimSpace(l); strings.HasPrefix(l, prefix) {
				return l
			}
		case <-timeout:
			t.Fatalf("no line starting with %q in the output:\n%s", prefix, o.String())
		}
	}
}

// testConfig is a configuration with an IMAP poller "alice-imap", a POP3 poller
// "alice-pop3" and the top-level relay, all with auth method xoauth2 at the provider.
func testConfig(t testing.TB, p *provider) *configs.Config {
	xo := configs.PollerAuth{Method: "xoauth2", OAuth: p.oauth()}
	return &configs.Config{
		StateDir: t.TempDir(),
		SMTP: configs.SMTP{Host: "127.0.0.1", Port: 25, Auth: configs.SMTPAuth{
			Method: "xoauth2", Username: "alice@example.com", OAuth: p.oauth()}},
		Pollers: []configs.Poller{
			{Name: "alice-imap", Protocol: "imap", Host: "127.0.0.1", Port: 143, Username: "alice@example.com", Auth: xo},
			{Name: "alice-pop3", Protocol: "pop3", Host: "127.0.0.1", Port: 110, Username: "alice@example.com", Auth: xo},
		},
	}
}

type loginResult struct {
	tok *oauth.Token
	err error
}

// startLogin runs Login for name in the background.
func startLogin(t testing.TB, cfg *configs.Config, name string, opts oauth.LoginOptions) (*output, <-chan loginResult) {
	out := newOutput()
	done := make(chan loginResult, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	go func() {
		tok, err := oauth.Login(ctx, cfg, name, out, opts)
		done <- loginResult{tok, err}
	}()
	return out, done
}

func wait(t testing.TB, done <-chan loginResult) loginResult {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("login did not return")
	}
	return loginResult{}
}

// browse plays the browser: it opens url and follows the redirects, to the loopback
// listener of Login in the end, and returns the final status and page.
func browse(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// login completes Login for name and returns the stored token.
func login(t testing.TB, cfg *configs.Config, name string) *oauth.Token {
	t.Helper()
	out, done := startLogin(t, cfg, name, oauth.LoginOptions{})
	if code, page := browse(t, out.waitLine(t, "http")); code != http.StatusOK {
		t.Fatalf("browser got %d: %s", code, page)
	}
	r := wait(t, done)
	if r.err != nil {
		t.Fatalf("Login: %v\n%s", r.err, out.String())
	}
	return r.tok
}

// noSecrets fails t when text holds a token of the provider or the client secret.
func noSecrets(t testing.TB, p *provider, what, text string) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	secrets := []string{p.clientSecret}
	for s := range p.refreshes {
		secrets = append(secrets, s)
	}
	for s := range p.access {
		secrets = append(secrets, s)
	}
	for _, s := range secrets {
		if strings.Contains(text, s) {
			t.Errorf("%s shows a secret %.6s...:\n%s", what, s, text)
			continue
		}
		// A secret cut short is a leak too: its kind and six characters of its random
		// part. The kind alone ("rt-") is not looked for: a random state or code
		// challenge in the authorization address contains it now and then.
		for _, kind := range []string{"at-", "rt-", "client-secret-"} {
			if head := s[:min(len(s), len(kind)+6)]; strings.HasPrefix(s, kind) && strings.Contains(text, head) {
				t.Errorf("%s shows the beginning of a secret (%q):\n%s", what, head, text)
			}
		}
	}
}

func TestLoginPKCELoopback(t *testing.T) {
	c := &clock{}
	p := newProvider(t, c)
	cfg := testConfig(t, p)

	out, done := startLogin(t, cfg, "alice-imap", oauth.LoginOptions{Clock: c.Func()})
	authURL := out.waitLine(t, "http")
	if !strings.HasPrefix(authURL, p.srv.URL+"/authorize?") {
		t.Fatalf("printed URL %q is not the provider's authorization endpoint", authURL)
	}
	redirect := strings.TrimSuffix(strings.TrimPrefix(out.waitLine(t, "Waiting for the provider"), "Waiting for the provider to redirect the browser to "), " ...")
	if !strings.HasPrefix(redirect, "http://127.0.0.1:") {
		t.Fatalf("redirect %q is not on 127.0.0.1", redirect)
	}
	// A redirect that is not the answer to this login is refused, and the login
	// keeps waiting.
	if code, _ := browse(t, redirect+"?code=forged&state=forged"); code != http.StatusBadRequest {
		t.Errorf("a redirect with the wrong state got %d, want 400", code)
	}
	if code, page := browse(t, authURL); code != http.StatusOK || !strings.Contains(page, "You can close this window") {
		t.Fatalf("browser got %d: %s", code, page)
	}
	r := wait(t, done)
	if r.err != nil {
		t.Fatalf("Login: %v\n%s", r.err, out.String())
	}
	if pkce, _, _ := p.counts(); pkce != 1 {
		t.Errorf("PKCE-verified exchanges = %d, want 1", pkce)
	}
	tok := r.tok
	if tok.RefreshToken == "" || tok.AccessToken == "" || tok.Username != "alice@example.com" ||
		tok.Subject != "alice@example.com" || tok.ClientID != p.clientID || tok.Obtained.IsZero() {
		t.Errorf("token = %+v", tok)
	}
	if d := tok.Expiry.Sub(c.Now()); d < 9*time.Minute || d > 10*time.Minute {
		t.Errorf("access token expires in %v, want about 10m", d)
	}

	store := oauth.NewStore(cfg.StateDir)
	path := store.Path("alice-imap")
	if path != filepath.Join(cfg.StateDir, "oauth", "alice-imap.json") {
		t.Errorf("token file %s", path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %04o, want 0600", fi.Mode().Perm())
	}
	if di, _ := os.Stat(store.Dir()); di.Mode().Perm() != 0o700 {
		t.Errorf("token folder mode %04o, want 0700", di.Mode().Perm())
	}
	got, err := store.Load("alice-imap")
	if err != nil {
		t.Fatal(err)
	}
	if got.RefreshToken != tok.RefreshToken || got.AccessToken != tok.AccessToken || !got.Expiry.Equal(tok.Expiry) {
		t.Errorf("stored %+v, returned %+v", got, tok)
	}
	if rts := p.refreshTokens(); len(rts) != 1 || rts[0] != tok.RefreshToken.Reveal() {
		t.Errorf("stored refresh token is not the one the provider issued")
	}
	noSecrets(t, p, "Login's output", out.String())
	if !strings.Contains(out.String(), path) {
		t.Errorf("Login's output does not name the token file:\n%s", out.String())
	}
}

func TestLoginPastedAddress(t *testing.T) {
	c := &clock{}
	p := newProvider(t, c)
	cfg := testConfig(t, p)
	pr, pw := io.Pipe()
	defer pw.Close()
	out, done := startLogin(t, cfg, "smtp", oauth.LoginOptions{In: pr})
	authURL := out.waitLine(t, "http")

	// The browser on another machine cannot reach the loopback listener: the user
	// copies the address it ended at.
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if loc == "" {
		t.Fatalf("authorization endpoint answered %d without a redirect", resp.StatusCode)
	}
	io.WriteString(pw, "not an answer\n")
	io.WriteString(pw, loc+"\n")
	r := wait(t, done)
	if r.err != nil {
		t.Fatalf("Login: %v\n%s", r.err, out.String())
	}
	if _, err := oauth.NewStore(cfg.StateDir).Load("smtp"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "state mismatch") {
		t.Errorf("a wrong paste was not answered:\n%s", out.String())
	}
}

func TestLoginRefused(t *testing.T) {
	p := newProvider(t, &clock{})
	p.set(func(p *provider) { p.deny = true })
	cfg := testConfig(t, p)
	out, done := startLogin(t, cfg, "alice-pop3", oauth.LoginOptions{})
	browse(t, out.waitLine(t, "http"))
	r := wait(t, done)
	if r.err == nil || !strings.Contains(r.err.Error(), "access_denied") {
		t.Fatalf("Login = %v, want the provider's access_denied", r.err)
	}
	if _, err := oauth.NewStore(cfg.StateDir).Load("alice-pop3"); !errors.Is(err, oauth.ErrNoToken) {
		t.Errorf("a refused login stored a token (%v)", err)
	}
}

func TestLoginUnknownAccount(t *testing.T) {
	p := newProvider(t, &clock{})
	cfg := testConfig(t, p)
	_, err := oauth.Login(context.Background(), cfg, "bob", io.Discard, oauth.LoginOptions{})
	if err == nil || !strings.Contains(err.Error(), "alice-imap, alice-pop3, smtp") {
		t.Errorf("Login of an unknown account = %v, want the list of accounts", err)
	}
}

func TestLoginTimeout(t *testing.T) {
	p := newProvider(t, &clock{})
	cfg := testConfig(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := oauth.Login(ctx, cfg, "alice-imap", io.Discard, oauth.LoginOptions{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Login without a redirect = %v, want the deadline", err)
	}
}

func TestDeviceLogin(t *testing.T) {
	c := &clock{}
	p := newProvider(t, c)
	cfg := testConfig(t, p)
	out := newOutput()
	done := make(chan loginResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		tok, err := oauth.DeviceLogin(ctx, cfg, "alice-imap", out, oauth.LoginOptions{DeviceAuthURL: p.srv.URL + "/device", Clock: c.Func()})
		done <- loginResult{tok, err}
	}()
	if l := out.waitLine(t, "http"); l != p.srv.URL+"/verify" {
		t.Errorf("verification address %q", l)
	}
	code := out.waitLine(t, "UC-")
	// The user takes a moment: the first polls find the authorization pending.
	time.Sleep(1500 * time.Millisecond)
	if !p.approve(code) {
		t.Fatalf("the provider knows no user code %q", code)
	}
	r := wait(t, done)
	if r.err != nil {
		t.Fatalf("DeviceLogin: %v\n%s", r.err, out.String())
	}
	got, err := oauth.NewStore(cfg.StateDir).Load("alice-imap")
	if err != nil || got.RefreshToken != r.tok.RefreshToken || got.RefreshToken == "" {
		t.Fatalf("stored %+v, %v", got, err)
	}
	noSecrets(t, p, "DeviceLogin's output", out.String())

	// Without a device endpoint (provider custom, none given) it says so.
	_, err = oauth.DeviceLogin(context.Background(), cfg, "alice-imap", io.Discard, oauth.LoginOptions{})
	if err == nil || !strings.Contains(err.Error(), "device authorization endpoint") {
		t.Errorf("DeviceLogin without endpoint = %v", err)
	}
}

func TestLoginLocalhost(t *testing.T) {
	p := newProvider(t, &clock{})
	cfg := testConfig(t, p)
	out, done := startLogin(t, cfg, "alice-imap", oauth.LoginOptions{Listen: "localhost:0"})
	authURL := out.waitLine(t, "http")
	if w := out.waitLine(t, "Waiting"); !strings.Contains(w, "http://localhost:") {
		t.Errorf("redirect line %q", w)
	}
	if code, page := browse(t, authURL); code != http.StatusOK {
		t.Fatalf("browser got %d: %s", code, page)
	}
	if r := wait(t, done); r.err != nil {
		t.Fatal(r.err)
	}
	_, err := oauth.Login(context.Background(), cfg, "alice-imap", io.Discard, oauth.LoginOptions{Listen: "0.0.0.0:0"})
	if err == nil || !strings.Contains(err.Error(), "not on the loopback") {
		t.Errorf("Login listening on all interfaces = %v", err)
	}
}
