package oauth_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	goimap "github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/internal/dovecottest"
	"github.com/mxdrop/mxdrop/pollers"
	"github.com/mxdrop/mxdrop/pollers/oauth"
	"github.com/mxdrop/mxdrop/pollers/pop3"
)

// dovecotOAuth2 is the Dovecot 2.3 configuration that checks XOAUTH2 and OAUTHBEARER
// logins with the provider's RFC 7662 introspection endpoint. The oauth2 passdb
// follows the passwd-file passdb of the harness, which fails the token as a password
// and lets the next passdb try.
const dovecotOAuth2 = `
auth_mechanisms = plain login xoauth2 oauthbearer
passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = %s
}
`

// dovecotOAuth2Ext is dovecot-oauth2.conf.ext: POST token=<token> to the introspection
// endpoint; the answer must say active: true and name the login user as username.
const dovecotOAuth2Ext = `introspection_mode = post
introspection_url = %s/introspect
username_attribute = username
active_attribute = active
active_value = true
timeout_msecs = 5000
`

// startDovecot starts Dovecot with the oauth2 passdb of p and the user alice@example.com.
func startDovecot(t *testing.T, p *provider) *dovecottest.Server {
	t.Helper()
	dovecottest.Require(t)
	// Dovecot's auth process runs unprivileged: the file must be readable by others.
	dir, err := os.MkdirTemp("/tmp", "oauthtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ext := filepath.Join(dir, "dovecot-oauth2.conf.ext")
	if err := os.WriteFile(ext, fmt.Appendf(nil, dovecotOAuth2Ext, p.srv.URL), 0o644); err != nil {
		t.Fatal(err)
	}
	return dovecottest.Start(t, dovecottest.Options{
		// The password is never used: the login is by token.
		Users:       map[string]string{"alice@example.com": "unused-" + random()},
		ExtraConfig: fmt.Sprintf(dovecotOAuth2, ext),
	})
}

// TestDovecot checks XOAUTH2 and OAUTHBEARER logins end to end against a real Dovecot
// whose oauth2 passdb asks the test provider: IMAP (go-imap v2) and POP3
// (pollers/pop3), a refresh after expiry, the refresh once more after a refused
// token, a clear failure after revocation, and a poller cycle wired through
// Sources.Poller. Under CI=true a missing Dovecot fails the test.
func TestDovecot(t *testing.T) {
	c := &clock{}
	p := newProvider(t, c)
	s := startDovecot(t, p)
	cfg := testConfig(t, p)
	imapPort, imapsPort, pop3Port, _ := s.Ports()
	cfg.Pollers[0].Port, cfg.Pollers[1].Port = imapPort, pop3Port
	login(t, cfg, "alice-imap")
	login(t, cfg, "alice-pop3")
	ss, err := oauth.NewSources(cfg, oauth.Options{Clock: c.Func()})
	if err != nil {
		t.Fatal(err)
	}
	imapSrc, pop3Src := ss.Get("alice-imap"), ss.Get("alice-pop3")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	imapLogin := func(t *testing.T, auth func(cl *imapclient.Client) error) error {
		t.Helper()
		cl, err := imapclient.DialInsecure(s.IMAPAddr(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		if err := auth(cl); err != nil {
			return err
		}
		if _, err := cl.Select("INBOX", nil).Wait(); err != nil {
			t.Fatalf("SELECT after login: %v", err)
		}
		return nil
	}
	imapAuth := func(offered []string) func(cl *imapclient.Client) error {
		return func(cl *imapclient.Client) error {
			sc, err := imapSrc.SASLClientFor(ctx, offered)
			if err != nil {
				return err
			}
			return cl.Authenticate(sc)
		}
	}
	// imapRefused is a refused AUTHENTICATE. QUIRK: after XOAUTH2's error challenge
	// go-imap v2 (beta.8) sends the empty response as "=", which Dovecot rejects with
	// BAD and a disconnect (emersion/go-imap#760) instead of answering NO
	// [AUTHENTICATIONFAILED]; OAUTHBEARER's response (0x01) is not empty and gets NO.
	imapRefused := func(err error) bool {
		var ie *goimap.Error
		return errors.As(err, &ie) && (ie.Code == goimap.ResponseCodeAuthenticationFailed ||
			ie.Type == goimap.StatusResponseTypeBad && strings.Contains(ie.Text, "Invalid base64"))
	}
	pop3Login := func(t *testing.T, auth func(c *pop3.Client) error) error {
		t.Helper()
		cl, err := pop3.Dial(ctx, pop3.Options{Addr: s.POP3Addr(), TLS: pop3.TLSNone, Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		if err := auth(cl); err != nil {
			return err
		}
		if _, _, err := cl.Stat(); err != nil {
			t.Fatalf("STAT after login: %v", err)
		}
		return cl.Quit()
	}
	pop3Refused := func(err error) bool {
		var pe *pop3.Error
		return errors.As(err, &pe) && pe.AuthFailed()
	}

	t.Run("imap-xoauth2", func(t *testing.T) {
		if err := imapLogin(t, imapAuth(nil)); err != nil {
			t.Fatalf("XOAUTH2: %v", err)
		}
	})
	t.Run("imap-oauthbearer", func(t *testing.T) {
		err := imapLogin(t, func(cl *imapclient.Client) error {
			offered := cl.Caps().AuthMechanisms()
			if !slices.Contains(offered, oauth.OAuthBearer) || !slices.Contains(offered, oauth.XOAuth2) {
				t.Fatalf("Dovecot offers %v", offered)
			}
			sc, err := imapSrc.SASLClientFor(ctx, offered)
			if err != nil {
				return err
			}
			if mech, _, _ := sc.Start(); mech != oauth.OAuthBearer {
				t.Errorf("chose %s", mech)
			}
			return cl.Authenticate(sc)
		})
		if err != nil {
			t.Fatalf("OAUTHBEARER: %v", err)
		}
	})
	t.Run("pop3", func(t *testing.T) {
		for _, mech := range []string{oauth.XOAuth2, oauth.OAuthBearer} {
			err := pop3Login(t, func(cl *pop3.Client) error {
				caps, err := cl.Capabilities()
				if err != nil {
					return err
				}
				if !slices.Contains(caps.SASL(), mech) {
					t.Fatalf("Dovecot's POP3 offers %v", caps.SASL())
				}
				sc, err := pop3Src.SASLClientFor(ctx, []string{mech})
				if err != nil {
					return err
				}
				return cl.Auth(sc)
			})
			if err != nil {
				t.Errorf("POP3 AUTH %s: %v", mech, err)
			}
		}
	})
	t.Run("wrong-user", func(t *testing.T) {
		// A valid token of alice does not log in bob: Dovecot compares the username.
		tok, err := imapSrc.AccessToken(ctx)
		if err != nil {
			t.Fatal(err)
		}
		err = imapLogin(t, func(cl *imapclient.Client) error {
			return cl.Authenticate(oauth.NewXOAuth2Client("bob@example.com", tok, nil))
		})
		if !imapRefused(err) {
			t.Fatalf("alice's token for bob = %v, want AUTHENTICATIONFAILED", err)
		}
	})
	t.Run("refresh-after-expiry", func(t *testing.T) {
		old, err := imapSrc.AccessToken(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, before, _ := p.counts()
		c.Advance(11 * time.Minute)
		// Dovecot now refuses the old token ...
		err = imapLogin(t, func(cl *imapclient.Client) error {
			return cl.Authenticate(oauth.NewXOAuth2Client("alice@example.com", old, nil))
		})
		if !imapRefused(err) {
			t.Fatalf("an expired token = %v, want AUTHENTICATIONFAILED", err)
		}
		// ... and the Sources log in with refreshed ones.
		if err := imapLogin(t, imapAuth(nil)); err != nil {
			t.Fatalf("IMAP after expiry: %v", err)
		}
		if err := pop3Login(t, func(cl *pop3.Client) error {
			sc, err := pop3Src.SASLClient(ctx)
			if err != nil {
				return err
			}
			return cl.Auth(sc)
		}); err != nil {
			t.Fatalf("POP3 after expiry: %v", err)
		}
		if _, after, _ := p.counts(); after != before+2 {
			t.Errorf("%d refreshes, want 2 (one per account)", after-before)
		}
	})
	t.Run("refused-then-refreshed", func(t *testing.T) {
		// The provider ends the access tokens early; the Source learns it from the
		// server's refusal and refreshes once.
		p.expireAccess()
		_, before, _ := p.counts()
		tries := 0
		err := imapLogin(t, func(cl *imapclient.Client) error {
			return imapSrc.Authenticate(ctx, cl.Caps().AuthMechanisms(), func(sc sasl.Client) error {
				tries++
				return cl.Authenticate(sc)
			}, imapRefused)
		})
		if err != nil || tries != 2 {
			t.Fatalf("IMAP OAUTHBEARER Authenticate = %v after %d tries, want success on the 2nd", err, tries)
		}
		// XOAUTH2 on IMAP: the refusal closes the connection (see imapRefused), so
		// the second try needs a new one.
		p.expireAccess()
		tries = 0
		err = imapSrc.Authenticate(ctx, nil, func(sc sasl.Client) error {
			tries++
			return imapLogin(t, func(cl *imapclient.Client) error { return cl.Authenticate(sc) })
		}, imapRefused)
		if err != nil || tries != 2 {
			t.Fatalf("IMAP XOAUTH2 Authenticate = %v after %d tries, want success on the 2nd", err, tries)
		}
		tries = 0
		err = pop3Login(t, func(cl *pop3.Client) error {
			return pop3Src.Authenticate(ctx, []string{oauth.XOAuth2}, func(sc sasl.Client) error {
				tries++
				return cl.Auth(sc)
			}, pop3Refused)
		})
		if err != nil || tries != 2 {
			t.Fatalf("POP3 Authenticate = %v after %d tries, want success on the 2nd", err, tries)
		}
		if _, after, _ := p.counts(); after != before+3 {
			t.Errorf("%d refreshes, want 3", after-before)
		}
	})
	t.Run("poller-cycle", func(t *testing.T) {
		// The wiring of cmd: pollers.Deps{XOAUTH2: sources.Poller}, over TLS.
		maildir := filepath.Join(t.TempDir(), "alice")
		pcfg := *cfg
		pcfg.Accounts = []configs.Account{{Address: "alice@example.com", Maildir: maildir}}
		pc := pcfg.Pollers[0]
		pc.Port, pc.TLS, pc.CAFile = imapsPort, "implicit", s.CAFile()
		pc.Mode, pc.DeliverTo, pc.Keep = "single", "alice@example.com", "delete"
		pc.Timeout, pc.Interval, pc.IDLE = configs.Duration(10*time.Second), configs.Duration(time.Hour), new(bool)
		s.Append(t, "alice@example.com", "INBOX", []byte("From: bob@example.org\r\nTo: alice@example.com\r\nMessage-ID: <oauth-1@example.org>\r\nSubject: token\r\n\r\nhello\r\n"))
		pl, err := pollers.New(&pcfg, pc, pollers.Deps{XOAUTH2: ss.Poller})
		if err != nil {
			t.Fatal(err)
		}
		st, err := pl.Cycle(ctx)
		if err != nil || st.Delivered != 1 {
			t.Fatalf("Cycle = %+v, %v", st, err)
		}
		if ids := dovecottest.MessageIDs(t, maildir, "INBOX"); len(ids) != 1 || ids[0] != "<oauth-1@example.org>" {
			t.Errorf("Maildir holds %v", ids)
		}
	})
	t.Run("revoked", func(t *testing.T) {
		p.revoke()
		cur, err := imapSrc.AccessToken(ctx)
		if err != nil {
			t.Fatal(err)
		}
		err = imapLogin(t, func(cl *imapclient.Client) error {
			return imapSrc.Authenticate(ctx, nil, cl.Authenticate, imapRefused)
		})
		var lr *oauth.LoginRequiredError
		if !errors.As(err, &lr) || !strings.Contains(err.Error(), `run "mxdrop oauth login alice-imap"`) {
			t.Fatalf("IMAP after revocation = %v, want the login-required error", err)
		}
		noSecrets(t, p, "the error", err.Error())
		err = imapLogin(t, func(cl *imapclient.Client) error {
			return cl.Authenticate(oauth.NewXOAuth2Client("alice@example.com", cur, nil))
		})
		if !imapRefused(err) {
			t.Errorf("a revoked token = %v, want AUTHENTICATIONFAILED", err)
		}
		// The poller's cycle fails with the same clear error.
		pc := cfg.Pollers[1]
		pc.TLS, pc.Mode, pc.DeliverTo = "none", "single", "alice@example.com"
		pc.Timeout, pc.Interval = configs.Duration(10*time.Second), configs.Duration(time.Hour)
		pcfg := *cfg
		pcfg.Accounts = []configs.Account{{Address: "alice@example.com", Maildir: filepath.Join(t.TempDir(), "alice")}}
		pl, err := pollers.New(&pcfg, pc, pollers.Deps{XOAUTH2: ss.Poller})
		if err != nil {
			t.Fatal(err)
		}
		// The first cycle's login is refused by the server (pollers.login tries once),
		// which invalidates the token; the next cycle's refresh is refused for good.
		_, err = pl.Cycle(ctx)
		t.Logf("first poller cycle after revocation: %v", err)
		_, err = pl.Cycle(ctx)
		t.Logf("second poller cycle after revocation: %v", err)
		if !errors.Is(err, oauth.ErrLoginRequired) || !strings.Contains(err.Error(), "mxdrop oauth login alice-pop3") {
			t.Errorf("poller cycle after revocation = %v", err)
		}
	})
	if _, _, n := p.counts(); n == 0 {
		t.Error("Dovecot never asked the provider: the logins were not checked by introspection")
	}
}
