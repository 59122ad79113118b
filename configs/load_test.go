package configs

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func mustParse(t *testing.T, dir, text string) *Config {
	t.Helper()
	cfg, err := parseTest(t, dir, text)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return cfg
}

func TestLoadMissingFile(t *testing.T) {
	t.Parallel()
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want one wrapping fs.ErrNotExist", err)
	}
	if !strings.HasPrefix(err.Error(), "read config: ") {
		t.Errorf("err = %q, want the prefix \"read config: \"", err)
	}
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := mustParse(t, dir, poller+"  - name: imap\n    protocol: imap\n    host: h\n    tls: starttls\n    username: u\n    auth: {password: pw}\n    mode: collection\n    accepted_domains: [example.com]\n")
	check := func(name string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %#v, want %#v", name, got, want)
		}
	}
	host, _ := os.Hostname()
	check("state_dir", cfg.StateDir, filepath.Join(dir, "var/state"))
	check("workers", cfg.Workers, 16)
	check("log", cfg.Log, Log{Level: "info", Format: "json"})
	check("metrics.listen", cfg.Metrics.Listen, "")
	check("smtp.host", cfg.SMTP.Host, "")
	check("smtp.port", cfg.SMTP.Port, 25)
	check("smtp.tls", cfg.SMTP.TLS, "none")
	check("smtp.auth.method", cfg.SMTP.Auth.Method, "none")
	check("smtp.timeout", cfg.SMTP.Timeout.D(), 60*time.Second)
	check("smtp.reporting_mta", cfg.SMTP.ReportingMTA, strings.ToLower(host))
	check("bounce", cfg.Bounce, Bounce{Language: "en", RetryFor: Duration(120 * time.Hour), RateLimit: 10, RateWindow: Duration(time.Hour)})

	c := cfg.Connectors[0]
	check("connector active", c.IsActive(), true)
	check("connector bounce", c.BounceEnabled(), true)
	check("connector subdomains", c.Subdomains, []string{"."})
	check("connector settle", c.Settle.D(), 500*time.Millisecond)
	check("connector watch", c.Watch, "auto")
	check("connector poll_interval", c.PollInterval.D(), time.Second)
	check("connector claim_lease", c.ClaimLease.D(), 2*time.Minute)
	check("connector envelope_headers", c.EnvelopeHeaders, []string{"x-receiver", "envelope-to", "x-original-to", "delivered-to", "x-envelope-to", "received"})
	check("connector smtp", c.SMTP, (*SMTP)(nil))
	check("connector relay", c.Relay(cfg.SMTP), cfg.SMTP)

	p := cfg.Pollers[0]
	check("poller active", p.IsActive(), true)
	check("poller tls", p.TLS, "implicit")
	check("poller port", p.Port, 995)
	check("poller timeout", p.Timeout.D(), 60*time.Second)
	check("poller interval", p.Interval.D(), 5*time.Minute)
	check("poller keep", p.Keep, "delete")
	check("poller mode", p.Mode, "single")
	check("poller folders", p.Folders, []string{"INBOX"})
	check("poller idle", p.IDLEEnabled(), true)
	check("poller auth", p.Auth.Method, "password")
	check("poller duplicate_window", p.DuplicateWindow.D(), 336*time.Hour)
	check("imap starttls port", cfg.Pollers[1].Port, 143)

	check("spam folder", cfg.Spam.Folder, "Junk")
	check("spam spamd_timeout", cfg.Spam.SpamdTimeout.D(), 30*time.Second)
}

func TestPollerPorts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		protocol, tls string
		want          int
	}{
		{"pop3", "implicit", 995}, {"pop3", "starttls", 110}, {"pop3", "none", 110},
		{"imap", "implicit", 993}, {"imap", "starttls", 143}, {"imap", "none", 143},
		{"imap", "", 993},
	} {
		text := strings.Replace(poller, "protocol: pop3", "protocol: "+tc.protocol, 1)
		if tc.tls != "" {
			text += "    tls: " + tc.tls + "\n"
		}
		if got := mustParse(t, t.TempDir(), text).Pollers[0].Port; got != tc.want {
			t.Errorf("%s with tls %q: port %d, want %d", tc.protocol, tc.tls, got, tc.want)
		}
	}
	// An explicit port wins; implicit TLS moves the relay's default to 465.
	cfg := mustParse(t, t.TempDir(), poller+"    port: 1995\nsmtp:\n  host: relay\n  tls: implicit\n")
	if cfg.Pollers[0].Port != 1995 || cfg.SMTP.Port != 465 {
		t.Errorf("ports %d and %d, want 1995 and 465", cfg.Pollers[0].Port, cfg.SMTP.Port)
	}
}

func TestConnectorRelayOverride(t *testing.T) {
	t.Parallel()
	cfg := mustParse(t, t.TempDir(), base+"    smtp: {host: other.example.net, tls: implicit}\n  - name: mx2\n    drop_folder: drop2\n    smtp: {}\nsmtp:\n  host: relay\n  reporting_mta: mx.example.com\n  auth: {method: plain, username: u, password: pw}\n")
	o := cfg.Connectors[0].Relay(cfg.SMTP)
	want := SMTP{Host: "other.example.net", Port: 465, TLS: "implicit", Auth: SMTPAuth{Method: "none"}, ReportingMTA: "mx.example.com", Timeout: Duration(time.Minute)}
	if !reflect.DeepEqual(o, want) {
		t.Errorf("override relay = %+v, want %+v (no credentials inherited)", o, want)
	}
	if cfg.Connectors[1].SMTP != nil {
		t.Errorf("an empty smtp block is an override: %+v", cfg.Connectors[1].SMTP)
	}
	if got := cfg.Connectors[1].Relay(cfg.SMTP); got.Host != "relay" {
		t.Errorf("relay of connector without override = %q, want the top-level one", got.Host)
	}
}

func TestEnvExpansion(t *testing.T) {
	t.Parallel()
	text := strings.Replace(poller, "{password: pw}", "{password: \"${PW}\"}", 1) +
		"    port: ${PORT}\n" + // a number
		"    interval: ${SETTLE}\n" + // a duration
		"    active: ${YES}\n" + // a bool
		"    username: \"pre-${PORT}-$${PORT}-$x-${EMPTY}\"\n" // text, escape, lone $, empty
	text = strings.Replace(text, "    username: alice\n", "", 1)
	cfg := mustParse(t, t.TempDir(), text+"metrics:\n  listen: \"127.0.0.1:${PORT}\"\n")
	p := cfg.Pollers[0]
	if p.Auth.Password.Reveal() != testEnv["PW"] {
		t.Errorf("password not expanded")
	}
	if p.Port != 2525 || p.Interval.D() != 2*time.Second || !p.IsActive() {
		t.Errorf("port %d, interval %s, active %v; want 2525, 2s, true", p.Port, p.Interval, p.IsActive())
	}
	if want := "pre-2525-${PORT}-$x-"; p.Username != want {
		t.Errorf("username = %q, want %q", p.Username, want)
	}
	if cfg.Metrics.Listen != "127.0.0.1:2525" {
		t.Errorf("metrics.listen = %q", cfg.Metrics.Listen)
	}

	// A value that reads as another type stays text in a text field.
	testNumericPW := strings.Replace(poller, "{password: pw}", "\n      password: ${PORT}", 1)
	if got := mustParse(t, t.TempDir(), testNumericPW).Pollers[0].Auth.Password.Reveal(); got != "2525" {
		t.Errorf("password = %q, want \"2525\"", got)
	}
	// Comments are not expanded.
	mustParse(t, t.TempDir(), base+"# ${NOT_SET}\nworkers: 4 # ${NOT_SET}\n")
}

func TestSecretFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "secrets/relay"), "relay-pw\n\n")
	writeFile(t, filepath.Join(dir, "secrets/pop"), "pop-pw\r\n")
	writeFile(t, filepath.Join(dir, "secrets/client"), "client-secret")
	cfg := mustParse(t, dir, base+
		"  - name: mx2\n    drop_folder: drop2\n    smtp:\n      host: relay2\n      auth: {method: plain, username: u, password_file: secrets/relay}\n"+
		strings.Replace(pollerBlock, "{password: pw}", "{password_file: secrets/pop}", 1)+
		"  - name: staged\n    active: false\n    protocol: imap\n    host: h\n    username: u\n    auth: {password_file: secrets/missing}\n    deliver_to: bob@example.com\n"+
		"smtp:\n  host: relay\n  auth:\n    method: xoauth2\n    username: u\n    oauth: {provider: google, client_id: id, client_secret_file: secrets/client}\n")
	for _, tc := range []struct {
		name string
		got  Secret
		want string
	}{
		{"trailing newline trimmed once", cfg.Connectors[1].SMTP.Auth.Password, "relay-pw\n"},
		{"CRLF trimmed", cfg.Pollers[0].Auth.Password, "pop-pw"},
		{"client secret", cfg.SMTP.Auth.OAuth.ClientSecret, "client-secret"},
		{"inactive poller not read", cfg.Pollers[1].Auth.Password, ""},
	} {
		if tc.got.Reveal() != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, tc.got.Reveal(), tc.want)
		}
	}
	if want := filepath.Join(dir, "secrets/missing"); cfg.Pollers[1].Auth.PasswordFile != want {
		t.Errorf("password_file = %q, want %q", cfg.Pollers[1].Auth.PasswordFile, want)
	}
}

func TestRelativePaths(t *testing.T) {
	// Not parallel: it changes the working directory.
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "etc/mx/pw"), "pw")
	writeFile(t, filepath.Join(root, "etc/mx/ca.pem"), "")
	writeFile(t, filepath.Join(root, "etc/mx/words"), "")
	writeFile(t, filepath.Join(root, "etc/blocked"), "")
	writeFile(t, filepath.Join(root, "etc/mx/mx.yaml"), `state_dir: state
accounts:
  - address: a@example.com
    maildir: ../../mail/a
  - address: b@example.com
    maildir: /srv/mail/./b/
connectors:
  - name: mx
    drop_folder: ./drop
    smtp:
      host: relay
      ca_file: ca.pem
      auth: {method: plain, username: u, password_file: pw}
pollers:
  - name: p
    protocol: imap
    host: h
    ca_file: ca.pem
    username: u
    auth: {password_file: pw}
    deliver_to: a@example.com
spam:
  words_file: words
  blocked_senders_file: ../blocked
`)
	t.Chdir(root)
	cfg, err := Load("etc/mx/mx.yaml")
	if err != nil {
		t.Fatal(err)
	}
	etc := filepath.Join(root, "etc/mx")
	for _, tc := range []struct{ name, got, want string }{
		{"file", cfg.File, filepath.Join(etc, "mx.yaml")},
		{"state_dir", cfg.StateDir, filepath.Join(etc, "state")},
		{"maildir", cfg.Accounts[0].Maildir, filepath.Join(root, "mail/a")},
		{"absolute maildir", cfg.Accounts[1].Maildir, "/srv/mail/b"},
		{"drop_folder", cfg.Connectors[0].DropFolder, filepath.Join(etc, "drop")},
		{"connector ca_file", cfg.Connectors[0].SMTP.CAFile, filepath.Join(etc, "ca.pem")},
		{"connector password_file", cfg.Connectors[0].SMTP.Auth.PasswordFile, filepath.Join(etc, "pw")},
		{"poller ca_file", cfg.Pollers[0].CAFile, filepath.Join(etc, "ca.pem")},
		{"poller password_file", cfg.Pollers[0].Auth.PasswordFile, filepath.Join(etc, "pw")},
		{"words_file", cfg.Spam.WordsFile, filepath.Join(etc, "words")},
		{"blocked_senders_file", cfg.Spam.BlockedSendersFile, filepath.Join(root, "etc/blocked")},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %q, want %q", tc.name, tc.got, tc.want)
		}
	}
	// Problems name the file as it was given.
	writeFile(t, filepath.Join(root, "bad.yaml"), "workers: x\n")
	if _, err := Load("bad.yaml"); err == nil || !strings.HasPrefix(err.Error(), "bad.yaml:1: workers: ") {
		t.Errorf("err = %v, want it to start with bad.yaml:1: workers:", err)
	}
}

func TestExampleLoads(t *testing.T) {
	t.Parallel()
	cfg, err := Load("example.yaml")
	if err != nil {
		t.Fatalf("example.yaml: %v", err)
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(repo, "var/drop"); cfg.Connectors[0].DropFolder != want {
		t.Errorf("drop folder %q, want %q: example.yaml must use ./var at the repository root", cfg.Connectors[0].DropFolder, want)
	}
	if cfg.StateDir != filepath.Join(repo, "var/state") {
		t.Errorf("state_dir %q", cfg.StateDir)
	}
	if len(cfg.Accounts) < 2 || !cfg.Connectors[0].IsActive() || cfg.SMTP.Host != "" {
		t.Errorf("example: want two or more accounts, an active connector and no relay")
	}
	var catchAll bool
	for _, a := range cfg.Accounts {
		catchAll = catchAll || a.CatchAll
	}
	if !catchAll || len(cfg.Pollers) == 0 || cfg.Pollers[0].IsActive() {
		t.Errorf("example: want a catch-all account and an inactive poller")
	}
}

func TestDefaultLoads(t *testing.T) {
	t.Parallel()
	cfg, err := Default()
	if err != nil {
		t.Fatalf("Default: %v", err)
	}
	wd, _ := os.Getwd()
	if cfg.File != "" || cfg.Log.Format != "console" {
		t.Errorf("File %q, log format %q; want \"\" and console", cfg.File, cfg.Log.Format)
	}
	c := cfg.Connectors[0]
	if c.DropFolder != filepath.Join(wd, "var/drop") || !reflect.DeepEqual(c.Subdomains, []string{"."}) {
		t.Errorf("connector: drop %q, subdomains %q", c.DropFolder, c.Subdomains)
	}
	if len(cfg.Accounts) != 1 || cfg.Accounts[0].Maildir != filepath.Join(wd, "var/mail/catchall") {
		t.Fatalf("accounts: %+v", cfg.Accounts)
	}
	if c.UnknownRecipients != cfg.Accounts[0].Address {
		t.Errorf("unknown_recipients %q, want the catch-all account %q", c.UnknownRecipients, cfg.Accounts[0].Address)
	}
}

// TestStrictDecoding checks that the files this package ships carry no key yaml.v3's
// own strict decoder rejects, and that the loader rejects what that decoder rejects.
func TestStrictDecoding(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"example.yaml", "default.yaml", "testdata/describe.yaml"} {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(strings.NewReader(string(data)))
		dec.KnownFields(true)
		var cfg Config
		if err := dec.Decode(&cfg); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for _, text := range []string{
		base + "bogus: 1\n",
		base + "    smtp: {auth: {oauth: {scope: [x]}}}\n",
		base + "spam: {word: [x]}\n",
	} {
		dec := yaml.NewDecoder(strings.NewReader(text))
		dec.KnownFields(true)
		var cfg Config
		if dec.Decode(&cfg) == nil {
			t.Fatalf("yaml.v3 accepts %q", text)
		}
		if _, err := parseTest(t, t.TempDir(), text); err == nil {
			t.Errorf("the loader accepts what yaml.v3 rejects: %q", text)
		}
	}
}

func TestAnchorsAndMerges(t *testing.T) {
	t.Parallel()
	text := `accounts:
  - address: a@example.com
    maildir: mail/a
connectors:
  - &common
    name: one
    drop_folder: drop1
    settle: 2s
    subdomains: [example.com]
  - <<: *common
    name: two
    drop_folder: drop2
`
	cfg := mustParse(t, t.TempDir(), text)
	two := cfg.Connectors[1]
	if two.Name != "two" || two.Settle.D() != 2*time.Second || !reflect.DeepEqual(two.Subdomains, []string{"example.com"}) {
		t.Errorf("merged connector = %+v", two)
	}
	_, err := parseTest(t, t.TempDir(), strings.Replace(text, "    settle: 2s\n", "    setle: 2s\n", 1))
	ps := problemsOf(t, err)
	if len(ps) != 1 || ps[0].Line != 8 {
		t.Errorf("want one problem at line 8, got %v", err)
	}
}

func TestAllProblemsAtOnce(t *testing.T) {
	t.Parallel()
	text := `workers: -1
log:
  level: loud
accounts:
  - address: nobody
    maildir: m
connectors:
  - name: mx
    settle: soon
    mailboxes: [ghost@example.com]
pollers:
  - name: p
    protocol: pop3
    host: h
    username: u
    auth: {password: pw}
    keep: days
    bogus: true
`
	_, err := parseTest(t, t.TempDir(), text)
	ps := problemsOf(t, err)
	var got []string
	for _, p := range ps {
		got = append(got, fmt.Sprintf("%d %s", p.Line, p.Path))
	}
	want := []string{
		"1 workers",
		"3 log.level",
		"5 accounts[0].address",
		"8 connectors[0].drop_folder",
		"9 connectors[0].settle",
		"10 connectors[0].mailboxes[0]",
		"12 pollers[0].deliver_to",
		"17 pollers[0].keep_days",
		"18 pollers[0].bogus",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("problems:\n%s\nwant:\n%s\nerror:\n%v", strings.Join(got, "\n"), strings.Join(want, "\n"), err)
	}
}

func TestSecretsNeverShown(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const fileSecret = "file-secret-Hx7"
	writeFile(t, filepath.Join(dir, "pw"), fileSecret+"\n")
	text := base +
		"  - name: mx2\n    drop_folder: d2\n    smtp: {host: r, auth: {method: login, username: u, password: inline-secret-Qw3}}\n" +
		strings.Replace(pollerBlock, "{password: pw}", "{password: \"${PW}\"}", 1) +
		"smtp:\n  host: relay\n  auth: {method: plain, username: u, password_file: pw}\n"
	cfg := mustParse(t, dir, text)
	secrets := []string{testEnv["PW"], fileSecret, "inline-secret-Qw3"}

	var out strings.Builder
	if err := Describe(&out, cfg); err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(cfg)
	y, _ := yaml.Marshal(cfg)
	shown := map[string]string{
		"Describe": out.String(),
		"%v":       fmt.Sprintf("%v", cfg),
		"%+v":      fmt.Sprintf("%+v", *cfg),
		"%#v":      fmt.Sprintf("%#v", *cfg),
		"json":     string(js),
		"yaml":     string(y),
	}
	// Errors around secrets: a bad value next to one, and a secret where a block belongs.
	for i, bad := range []string{
		text + "workers: x\n",
		strings.Replace(text, "password: inline-secret-Qw3", "password: [inline-secret-Qw3]", 1),
		strings.Replace(text, "auth: {method: login, username: u, password: inline-secret-Qw3}", "auth: inline-secret-Qw3", 1),
	} {
		_, err := parseTest(t, dir, bad)
		if err == nil {
			t.Fatalf("bad config %d loaded", i)
		}
		shown[fmt.Sprintf("error %d", i)] = err.Error()
	}
	for where, text := range shown {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s shows a secret:\n%s", where, text)
			}
		}
	}
	if !strings.Contains(out.String(), "password set") {
		t.Errorf("Describe does not say the password is set:\n%s", out.String())
	}
}

func TestDuration(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{500 * time.Millisecond, "500ms"}, {30 * time.Second, "30s"}, {5 * time.Minute, "5m"},
		{time.Hour, "1h"}, {90 * time.Minute, "1h30m"}, {120 * time.Hour, "120h"},
		{time.Hour + time.Second, "1h0m1s"}, {0, "0s"},
	} {
		if got := Duration(tc.d).String(); got != tc.want {
			t.Errorf("Duration(%v).String() = %q, want %q", tc.d, got, tc.want)
		}
		var back Duration
		if err := yaml.Unmarshal([]byte("d: "+tc.want), &struct {
			D *Duration `yaml:"d"`
		}{&back}); err != nil || back.D() != tc.d {
			t.Errorf("%q reads back as %v, %v", tc.want, back.D(), err)
		}
	}
}

func TestExpandEnv(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want, err string }{
		{"plain", "plain", ""},
		{"${PORT}", "2525", ""},
		{"a${PORT}b${PORT}", "a2525b2525", ""},
		{"$${PORT}", "${PORT}", ""},
		{"$$PORT $ x$", "$$PORT $ x$", ""},
		{"${EMPTY}", "", ""},
		{"${NOPE}", "", "environment variable NOPE is not set"},
		{"${}", "", "${} is not an environment variable reference"},
		{"${A-B}", "", "${A-B} is not an environment variable reference"},
		{"${OPEN", "", "${ without a closing }"},
	} {
		got, err := expandEnv(tc.in, lookupTest)
		switch {
		case err != nil && err.msg != tc.err:
			t.Errorf("expandEnv(%q) error %q, want %q", tc.in, err.msg, tc.err)
		case err == nil && (tc.err != "" || got != tc.want):
			t.Errorf("expandEnv(%q) = %q, want %q (error %q)", tc.in, got, tc.want, tc.err)
		}
	}
}

func TestPollersAlwaysDelete(t *testing.T) {
	t.Parallel()
	cfg := mustParse(t, t.TempDir(), poller+"    keep: days\n    keep_days: 7\npollers_always_delete: true\n")
	if p := cfg.Pollers[0]; p.Keep != "delete" || p.KeepDays != 0 {
		t.Errorf("keep %q, keep_days %d; want delete, 0", p.Keep, p.KeepDays)
	}
}

// yamlLines counts the lines of text as YAML 1.1 (yaml.v3) breaks them: at \n, \r\n,
// a lone \r, and the Unicode breaks NEL (U+0085), LS (U+2028) and PS (U+2029).
func yamlLines(text string) int {
	n := 1
	prevCR := false
	for _, r := range text {
		switch r {
		case '\n':
			if !prevCR {
				n++
			}
		case '\r', '\u0085', '\u2028', '\u2029':
			n++
		}
		prevCR = r == '\r'
	}
	return n
}

// FuzzParse checks that no input panics the loader and that every failure is an
// *Error whose problems have a line within the file.
func FuzzParse(f *testing.F) {
	for _, s := range []string{base, poller, "", "a: [", "accounts: &a [*a]", "connectors:\n  - <<: [*x]\n"} {
		f.Add(s)
	}
	if data, err := os.ReadFile("example.yaml"); err == nil {
		f.Add(string(data))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, text string) {
		_, err := parse([]byte(text), "f.yaml", dir, lookupTest)
		if err == nil {
			return
		}
		var ce *Error
		if !errors.As(err, &ce) {
			t.Fatalf("error %T: %v", err, err)
		}
		lines := yamlLines(text)
		for _, p := range ce.Problems {
			if p.Line < 0 || p.Line > lines {
				t.Errorf("problem at line %d of %d: %s", p.Line, lines, p)
			}
		}
	})
}
