package oauth_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/pollers/oauth"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestEndpoints(t *testing.T) {
	tests := []struct {
		o                   configs.OAuth
		auth, token, device string
		scopes              []string
		err                 string
	}{
		{o: configs.OAuth{Provider: "google", ClientID: "id"},
			auth: "https://accounts.google.com/o/oauth2/auth", token: "https://oauth2.googleapis.com/token",
			device: "https://oauth2.googleapis.com/device/code", scopes: []string{"https://mail.google.com/"}},
		{o: configs.OAuth{Provider: "microsoft", ClientID: "id"},
			auth:   "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
			token:  "https://login.microsoftonline.com/common/oauth2/v2.0/token",
			device: "https://login.microsoftonline.com/common/oauth2/v2.0/devicecode",
			scopes: oauth.MicrosoftScopes},
		{o: configs.OAuth{Provider: "microsoft", ClientID: "id", Tenant: "contoso.onmicrosoft.com", Scopes: []string{"x"}},
			auth:   "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize",
			token:  "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token",
			device: "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/devicecode",
			scopes: []string{"x"}},
		{o: configs.OAuth{Provider: "custom", ClientID: "id", AuthURL: "https://a/auth", TokenURL: "https://a/token", Scopes: []string{"mail"}},
			auth: "https://a/auth", token: "https://a/token", scopes: []string{"mail"}},
		{o: configs.OAuth{Provider: "custom", ClientID: "id"}, err: "token_url"},
		{o: configs.OAuth{Provider: "microsoft", ClientID: "id", Tenant: "../x"}, err: "tenant"},
		{o: configs.OAuth{Provider: "yahoo", ClientID: "id"}, err: "not google, microsoft or custom"},
		{o: configs.OAuth{Provider: "google"}, err: "client_id"},
	}
	for _, tt := range tests {
		c, err := oauth.ClientConfig(tt.o, "")
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%+v: error %v, want %q", tt.o, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%+v: %v", tt.o, err)
			continue
		}
		if c.Endpoint.AuthURL != tt.auth || c.Endpoint.TokenURL != tt.token || c.Endpoint.DeviceAuthURL != tt.device {
			t.Errorf("%s: endpoint %+v", tt.o.Provider, c.Endpoint)
		}
		if fmt.Sprint(c.Scopes) != fmt.Sprint(tt.scopes) {
			t.Errorf("%s: scopes %v, want %v", tt.o.Provider, c.Scopes, tt.scopes)
		}
	}

	// A secret left in its file by the loader (an inactive poller) is read.
	f := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(f, []byte("s3cret\n"), 0o600)
	c, err := oauth.ClientConfig(configs.OAuth{Provider: "google", ClientID: "id", ClientSecretFile: f}, "")
	if err != nil || c.ClientSecret != "s3cret" {
		t.Errorf("secret from file: %v", err)
	}
}

func TestChooseMechanism(t *testing.T) {
	for _, tt := range []struct {
		offered []string
		want    string
	}{
		{nil, "XOAUTH2"},
		{[]string{"PLAIN", "XOAUTH2"}, "XOAUTH2"},
		{[]string{"PLAIN", "XOAUTH2", "oauthbearer"}, "OAUTHBEARER"},
		{[]string{"OAUTHBEARER"}, "OAUTHBEARER"},
	} {
		if got := oauth.ChooseMechanism(tt.offered); got != tt.want {
			t.Errorf("ChooseMechanism(%v) = %s, want %s", tt.offered, got, tt.want)
		}
	}
}

func TestSASLClients(t *testing.T) {
	refused := 0
	x := oauth.NewXOAuth2Client("alice@example.com", "tok", func() { refused++ })
	mech, ir, err := x.Start()
	if mech != "XOAUTH2" || string(ir) != "user=alice@example.com\x01auth=Bearer tok\x01\x01" || err != nil {
		t.Errorf("XOAUTH2 Start = %s %q %v", mech, ir, err)
	}
	resp, err := x.Next([]byte(`{"status":"400"}`))
	if resp == nil || len(resp) != 0 || err != nil || refused != 1 {
		t.Errorf("XOAUTH2 Next = %q (nil %v), %v, refused %d; want a non-nil empty response", resp, resp == nil, err, refused)
	}

	b := oauth.NewOAuthBearerClient("alice@example.com", "tok", "imap.example.com", 993, func() { refused++ })
	mech, ir, _ = b.Start()
	if mech != "OAUTHBEARER" || string(ir) != "n,a=alice@example.com,\x01host=imap.example.com\x01port=993\x01auth=Bearer tok\x01\x01" {
		t.Errorf("OAUTHBEARER Start = %s %q", mech, ir)
	}
	resp, err = b.Next([]byte(`{"status":"invalid_token"}`))
	if string(resp) != "\x01" || err != nil || refused != 2 {
		t.Errorf("OAUTHBEARER Next = %q, %v", resp, err)
	}
}

func TestAccounts(t *testing.T) {
	p := configs.PollerAuth{Method: "xoauth2", OAuth: configs.OAuth{Provider: "google", ClientID: "id"}}
	off := false
	cfg := &configs.Config{
		SMTP: configs.SMTP{Host: "smtp.gmail.com", Auth: configs.SMTPAuth{Method: "xoauth2", Username: "b@gmail.com", OAuth: p.OAuth}},
		Pollers: []configs.Poller{
			{Name: "a", Protocol: "imap", Host: "imap.gmail.com", Port: 993, Username: "a@gmail.com", Auth: p},
			{Name: "pw", Protocol: "pop3", Username: "x", Auth: configs.PollerAuth{Method: "password"}},
			{Name: "off", Protocol: "pop3", Username: "o", Auth: p, Active: &off},
		},
		Connectors: []configs.Connector{
			{Name: "mx"},
			{Name: "mx2", SMTP: &configs.SMTP{Host: "smtp.office365.com", Auth: configs.SMTPAuth{Method: "xoauth2", Username: "c@x.com", OAuth: configs.OAuth{Provider: "microsoft", ClientID: "mid"}}}},
			{Name: "mx3", SMTP: &configs.SMTP{Host: "relay", Auth: configs.SMTPAuth{Method: "plain"}}},
		},
	}
	accts, err := oauth.Accounts(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range accts {
		got = append(got, fmt.Sprintf("%s/%s/%s/%v", a.Name, a.Kind, a.Username, a.Active))
	}
	want := "[a/poller/a@gmail.com/true off/poller/o/false smtp/relay/b@gmail.com/true mx2/relay/c@x.com/true]"
	if fmt.Sprint(got) != want {
		t.Errorf("Accounts = %v, want %s", got, want)
	}
	ss, err := oauth.NewSources(cfg, oauth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if src, err := ss.Relay(""); err != nil || src.Account().Name != "smtp" {
		t.Errorf("Relay(\"\") = %v, %v", src, err)
	}
	if src, err := ss.Relay("mx2"); err != nil || src.Account().Username != "c@x.com" {
		t.Errorf("Relay(mx2) = %v, %v", src, err)
	}
	if _, err := ss.Relay("mx3"); err == nil {
		t.Error("Relay of a plain relay succeeded")
	}
	if _, err := ss.Relay("a"); err == nil {
		t.Error("Relay of a poller succeeded")
	}
	if _, err := oauth.FindAccount(cfg, "pw"); err == nil || !strings.Contains(err.Error(), "a, off, smtp, mx2") {
		t.Errorf("FindAccount(pw) = %v", err)
	}
	cfg.Pollers[1] = configs.Poller{Name: "smtp", Username: "s", Auth: p}
	if _, err := oauth.Accounts(cfg); err == nil || !strings.Contains(err.Error(), `"smtp" is used twice`) {
		t.Errorf("colliding names: %v", err)
	}
}

func TestTokenNeverPrints(t *testing.T) {
	tok := &oauth.Token{Account: "a", AccessToken: "at-SECRET", RefreshToken: "rt-SECRET", Expiry: time.Unix(0, 0)}
	var log bytes.Buffer
	zl := zerolog.New(&log)
	zl.Info().Interface("token", tok).Msg("x")
	js, _ := json.Marshal(tok)
	for _, s := range []string{fmt.Sprint(tok), fmt.Sprintf("%+v", tok), fmt.Sprintf("%#v", tok), log.String(), string(js)} {
		if strings.Contains(s, "SECRET") {
			t.Errorf("a token prints its secret: %s", s)
		}
	}
}

func TestStore(t *testing.T) {
	dir := t.TempDir()
	st := oauth.NewStore(dir)
	if _, err := st.Load("a"); !errors.Is(err, oauth.ErrNoToken) {
		t.Errorf("Load of nothing = %v", err)
	}
	for _, bad := range []string{"", "../x", ".hidden", "a/b"} {
		if err := st.Save(bad, &oauth.Token{}); err == nil {
			t.Errorf("Save(%q) succeeded", bad)
		}
	}
	when := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	in := &oauth.Token{Provider: "google", ClientID: "cid", Username: "a@x", Subject: "a@x", Scopes: []string{"s"},
		TokenType: "Bearer", AccessToken: "at-1", RefreshToken: "rt-1", Expiry: when, Obtained: when, Refreshed: when}
	if err := st.Save("a", in); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(st.Path("a"))
	if !bytes.HasPrefix(raw, []byte("{\n  \"version\": 1,\n  \"account\": \"a\",")) || !bytes.Contains(raw, []byte(`"refresh_token": "rt-1"`)) {
		t.Errorf("file:\n%s", raw)
	}
	out, err := st.Load("a")
	if err != nil {
		t.Fatal(err)
	}
	in.Account = "a"
	if fmt.Sprintf("%#v", *in) != fmt.Sprintf("%#v", *out) || out.AccessToken.Reveal() != "at-1" || out.RefreshToken.Reveal() != "rt-1" {
		t.Errorf("round trip:\n%#v\n%#v", *in, *out)
	}
	if m, _ := filepath.Glob(filepath.Join(st.Dir(), ".*")); len(m) != 0 {
		t.Errorf("temporary files left: %v", m)
	}

	// A damaged file is reported without its content.
	os.WriteFile(st.Path("b"), []byte(`{"version":1,"refresh_token":"rt-LEAK`), 0o600)
	if _, err := st.Load("b"); err == nil || strings.Contains(err.Error(), "LEAK") || !strings.Contains(err.Error(), "is not a token file") {
		t.Errorf("Load of a damaged file = %v", err)
	}
	os.WriteFile(st.Path("c"), []byte(`{"version":9}`), 0o600)
	if _, err := st.Load("c"); err == nil || !strings.Contains(err.Error(), "version 9") {
		t.Errorf("Load of a future file = %v", err)
	}
}

func TestStatusGolden(t *testing.T) {
	now := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	g := configs.OAuth{Provider: "google", ClientID: "gid"}
	m := configs.OAuth{Provider: "microsoft", ClientID: "mid"}
	off := false
	cfg := &configs.Config{
		StateDir: t.TempDir(),
		SMTP:     configs.SMTP{Host: "smtp.gmail.com", Auth: configs.SMTPAuth{Method: "xoauth2", Username: "bounces@gmail.com", OAuth: g}},
		Pollers: []configs.Poller{
			{Name: "alice-gmail", Username: "alice@gmail.com", Auth: configs.PollerAuth{Method: "xoauth2", OAuth: g}},
			{Name: "bob-m365", Username: "bob@contoso.com", Auth: configs.PollerAuth{Method: "xoauth2", OAuth: m}},
			{Name: "carol-m365", Username: "carol@contoso.com", Auth: configs.PollerAuth{Method: "xoauth2", OAuth: m}, Active: &off},
			{Name: "dave", Username: "dave@gmail.com", Auth: configs.PollerAuth{Method: "xoauth2", OAuth: g}},
			{Name: "erin", Username: "erin@gmail.com", Auth: configs.PollerAuth{Method: "xoauth2", OAuth: g}},
		},
		Connectors: []configs.Connector{{Name: "mx-m365", SMTP: &configs.SMTP{Host: "smtp.office365.com",
			Auth: configs.SMTPAuth{Method: "xoauth2", Username: "mx@contoso.com", OAuth: m}}}},
	}
	st := oauth.NewStore(cfg.StateDir)
	save := func(name string, t0 oauth.Token) {
		t.Helper()
		if err := st.Save(name, &t0); err != nil {
			t.Fatal(err)
		}
	}
	base := oauth.Token{TokenType: "Bearer", AccessToken: "at-x", RefreshToken: "rt-x", Obtained: now.Add(-72 * time.Hour)}
	ok := base
	ok.ClientID, ok.Expiry, ok.Refreshed = "gid", now.Add(42*time.Minute), now.Add(-18*time.Minute)
	save("alice-gmail", ok)
	expired := base
	expired.ClientID, expired.Expiry = "mid", now.Add(-3*time.Hour)
	save("carol-m365", expired)
	revoked := ok
	revoked.LastError, revoked.LastErrorAt = "invalid_grant", now.Add(-5*time.Minute)
	save("smtp", revoked)
	other := ok
	other.ClientID = "old-client"
	save("dave", other)
	loose := ok
	save("erin", loose)
	os.Chmod(st.Path("erin"), 0o644)
	norefresh := base
	norefresh.ClientID, norefresh.RefreshToken, norefresh.Expiry = "mid", "", now.Add(time.Hour)
	save("mx-m365", norefresh)
	// bob-m365 has no token.

	var out bytes.Buffer
	err := oauth.StatusAt(&out, cfg, st, now)
	if !errors.Is(err, oauth.ErrLoginRequired) || !strings.Contains(err.Error(), "4 of 7") {
		t.Errorf("Status = %v, want 4 of 7 accounts needing a login", err)
	}
	got := strings.ReplaceAll(out.String(), cfg.StateDir, "STATE")
	if strings.Contains(got, "at-x") || strings.Contains(got, "rt-x") {
		t.Errorf("Status shows a token:\n%s", got)
	}
	golden := filepath.Join("testdata", "status.golden")
	if *update {
		os.WriteFile(golden, []byte(got), 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update)", err)
	}
	if got != string(want) {
		t.Errorf("Status differs from %s (run with -update to accept):\n%s", golden, got)
	}

	var none bytes.Buffer
	if err := oauth.Status(&none, &configs.Config{}, st); err != nil || !strings.Contains(none.String(), "No poller or relay uses auth method xoauth2") {
		t.Errorf("Status without accounts = %v: %s", err, none.String())
	}
}
