package oauth_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/rs/zerolog"

	"github.com/mxdrop/mxdrop/bounce"
	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/pollers/oauth"
)

// smtpServer is a go-smtp relay that accepts XOAUTH2 and OAUTHBEARER logins only
// with a token the provider's introspection endpoint calls active for that user:
// the check Dovecot's oauth2 passdb makes, over HTTP as there.
type smtpServer struct {
	introspectURL string
	mu            sync.Mutex
	mechs         []string // mechanisms offered
	logins        []string // mechanism of each successful login
	failures      int
	rcpts         []string
}

func (s *smtpServer) NewSession(*smtp.Conn) (smtp.Session, error) { return &smtpSession{s: s}, nil }

type smtpSession struct {
	s    *smtpServer
	user string
}

// introspect returns the user an active token belongs to, "" otherwise.
func (s *smtpServer) introspect(token string) string {
	resp, err := http.PostForm(s.introspectURL, url.Values{"token": {token}})
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var r struct {
		Active   bool   `json:"active"`
		Username string `json:"username"`
	}
	if json.NewDecoder(resp.Body).Decode(&r) != nil || !r.Active {
		return ""
	}
	return r.Username
}

var errAuthFailed = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}

func (ss *smtpSession) AuthMechanisms() []string {
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	return ss.s.mechs
}

func (ss *smtpSession) Auth(mech string) (sasl.Server, error) {
	ok := func(user, token string) bool {
		if u := ss.s.introspect(token); u == "" || !strings.EqualFold(u, user) {
			ss.s.mu.Lock()
			ss.s.failures++
			ss.s.mu.Unlock()
			return false
		}
		ss.user = user
		ss.s.mu.Lock()
		ss.s.logins = append(ss.s.logins, mech)
		ss.s.mu.Unlock()
		return true
	}
	switch mech {
	case oauth.XOAuth2:
		return &xoauth2Server{check: ok}, nil
	case oauth.OAuthBearer:
		return sasl.NewOAuthBearerServer(func(o sasl.OAuthBearerOptions) *sasl.OAuthBearerError {
			if !ok(o.Username, o.Token) {
				return &sasl.OAuthBearerError{Status: "invalid_token", Schemes: "bearer"}
			}
			return nil
		}), nil
	}
	return nil, errors.New("unsupported mechanism")
}

// xoauth2Server is the server side of XOAUTH2: the initial response, then on failure
// a JSON error challenge whose (empty) answer ends the exchange with 535.
type xoauth2Server struct {
	check  func(user, token string) bool
	failed bool
}

func (x *xoauth2Server) Next(resp []byte) ([]byte, bool, error) {
	if x.failed {
		if len(resp) != 0 {
			return nil, true, errors.New("xoauth2: the answer to the error challenge must be empty")
		}
		return nil, true, errAuthFailed
	}
	if resp == nil {
		return []byte{}, false, nil
	}
	var user, token string
	for _, f := range strings.Split(string(resp), "\x01") {
		switch {
		case strings.HasPrefix(f, "user="):
			user = f[len("user="):]
		case strings.HasPrefix(f, "auth=Bearer "):
			token = f[len("auth=Bearer "):]
		}
	}
	if user != "" && token != "" && x.check(user, token) {
		return nil, true, nil
	}
	x.failed = true
	return []byte(`{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`), false, nil
}

func (ss *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	if ss.user == "" {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	}
	return nil
}

func (ss *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	ss.s.rcpts = append(ss.s.rcpts, to)
	return nil
}

func (ss *smtpSession) Data(r io.Reader) error { _, err := io.Copy(io.Discard, r); return err }
func (ss *smtpSession) Reset()                 {}
func (ss *smtpSession) Logout() error          { return nil }

// TestSMTPRelay sends DSNs through bounce.Relay with the oauth Sources as its
// SASLSource, to a go-smtp relay that checks every token with the provider: XOAUTH2
// (what bounce uses), a refresh after expiry, a refused token that the next attempt
// refreshes, and revoked consent as a relay error that names the fix.
func TestSMTPRelay(t *testing.T) {
	c := &clock{}
	p := newProvider(t, c)
	srv := &smtpServer{introspectURL: p.srv.URL + "/introspect", mechs: []string{"XOAUTH2", "OAUTHBEARER"}}
	s := smtp.NewServer(srv)
	s.Domain, s.AllowInsecureAuth = "relay.test", true
	s.ReadTimeout, s.WriteTimeout = 10*time.Second, 10*time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })

	cfg := testConfig(t, p)
	cfg.SMTP.Port = ln.Addr().(*net.TCPAddr).Port
	cfg.SMTP.ReportingMTA = "mx.example.com"
	login(t, cfg, oauth.RelayName)
	var logBuf bytes.Buffer
	ss, err := oauth.NewSources(cfg, oauth.Options{Clock: c.Func(), Logger: zerolog.New(&logBuf).Level(zerolog.DebugLevel)})
	if err != nil {
		t.Fatal(err)
	}
	// The wiring of cmd: bounce.OpenOptions.OAuth returns the relay's Source.
	openOAuth := func(relay string, _ configs.SMTP) (bounce.SASLSource, error) {
		src, err := ss.Relay(relay)
		if err != nil {
			return nil, err
		}
		return src, nil
	}
	src, err := openOAuth("", cfg.SMTP)
	if err != nil {
		t.Fatal(err)
	}
	relay, err := bounce.NewRelay(cfg.SMTP, bounce.RelayOptions{SASL: src, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dsn := []byte("From: MAILER-DAEMON@mx.example.com\r\nTo: bob@example.org\r\nSubject: undeliverable\r\n\r\nsorry\r\n")
	send := func() error { return relay.Send(ctx, "bob@example.org", dsn) }

	if err := send(); err != nil {
		t.Fatalf("Send: %v", err)
	}
	c.Advance(9 * time.Minute) // inside the refresh margin
	if err := send(); err != nil {
		t.Fatalf("Send after expiry: %v", err)
	}
	if _, n, _ := p.counts(); n != 1 {
		t.Errorf("%d refreshes, want 1", n)
	}

	// The provider ends the token early: the relay refuses, the XOAUTH2 client
	// invalidates it on the error challenge, and the next attempt refreshes.
	p.expireAccess()
	err = send()
	var se *bounce.SendError
	if !errors.As(err, &se) || se.Stage != bounce.StageAuth || se.Code != 535 || !se.Temporary() {
		t.Fatalf("Send with an ended token = %v, want a temporary 535 at auth", err)
	}
	if err := send(); err != nil {
		t.Fatalf("Send after the refused token: %v", err)
	}

	// Revoked: refused once by the relay, then the refresh fails with the fix.
	p.revoke()
	if err := send(); err == nil {
		t.Fatal("Send with a revoked token succeeded")
	}
	err = send()
	if !errors.As(err, &se) || se.Stage != bounce.StageAuth || !errors.Is(err, oauth.ErrLoginRequired) ||
		!strings.Contains(err.Error(), `run "mxdrop oauth login smtp"`) {
		t.Fatalf("Send after revocation = %v, want the login-required error at auth", err)
	}
	t.Logf("relay error after revocation: %v", err)
	noSecrets(t, p, "the relay error", err.Error())
	noSecrets(t, p, "the log", logBuf.String())

	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.logins) != 3 || srv.failures != 2 || len(srv.rcpts) != 3 {
		t.Errorf("relay saw %d logins (%v), %d failures, %d recipients; want 3, 2, 3", len(srv.logins), srv.logins, srv.failures, len(srv.rcpts))
	}
	for _, m := range srv.logins {
		if m != oauth.XOAuth2 {
			t.Errorf("relay login with %s, want XOAUTH2", m)
		}
	}
}

// TestSMTPOAuthBearer logs in to the relay with OAUTHBEARER, chosen from the EHLO
// AUTH list, and checks a refusal is answered as RFC 7628 section 3.2.3 asks.
func TestSMTPOAuthBearer(t *testing.T) {
	c := &clock{}
	p := newProvider(t, c)
	srv := &smtpServer{introspectURL: p.srv.URL + "/introspect", mechs: []string{"PLAIN", "OAUTHBEARER", "XOAUTH2"}}
	s := smtp.NewServer(srv)
	s.Domain, s.AllowInsecureAuth = "relay.test", true
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	cfg := testConfig(t, p)
	login(t, cfg, oauth.RelayName)
	ss, _ := oauth.NewSources(cfg, oauth.Options{Clock: c.Func()})
	src := ss.Get(oauth.RelayName)

	dial := func() *smtp.Client {
		cl, err := smtp.Dial(ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.Hello("mx.example.com"); err != nil {
			t.Fatal(err)
		}
		return cl
	}
	cl := dial()
	defer cl.Close()
	_, auth := cl.Extension("AUTH")
	sc, err := src.SASLClientFor(context.Background(), strings.Fields(auth))
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Auth(sc); err != nil {
		t.Fatalf("AUTH OAUTHBEARER: %v", err)
	}
	p.expireAccess()
	cl2 := dial()
	defer cl2.Close()
	sc, _ = src.SASLClientFor(context.Background(), strings.Fields(auth))
	if err := cl2.Auth(sc); err == nil {
		t.Fatal("AUTH with an ended token succeeded")
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.logins) != 1 || srv.logins[0] != oauth.OAuthBearer || srv.failures != 1 {
		t.Errorf("logins %v, failures %d", srv.logins, srv.failures)
	}
}
