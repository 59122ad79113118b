package configs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// base is a valid configuration the validation cases start from; its lines:
//
//	1 accounts:
//	2   - address: alice@example.com
//	3     aliases: [a.smith@example.com]
//	4     maildir: mail/alice
//	5   - address: bob@example.com
//	6     maildir: mail/bob
//	7 connectors:
//	8   - name: mx
//	9     drop_folder: drop
const base = `accounts:
  - address: alice@example.com
    aliases: [a.smith@example.com]
    maildir: mail/alice
  - address: bob@example.com
    maildir: mail/bob
connectors:
  - name: mx
    drop_folder: drop
`

// poller is base with a valid poller from line 10:
//
//	10 pollers:
//	11   - name: pop
//	12     protocol: pop3
//	13     host: pop.example.net
//	14     username: alice
//	15     auth: {password: pw}
//	16     deliver_to: alice@example.com
const poller = base + pollerBlock

// pollerBlock is the pollers block of poller.
const pollerBlock = `pollers:
  - name: pop
    protocol: pop3
    host: pop.example.net
    username: alice
    auth: {password: pw}
    deliver_to: alice@example.com
`

// testEnv is the environment the tests load with.
var testEnv = map[string]string{"EMPTY": "", "PORT": "2525", "PW": "env-secret-Zq9", "SETTLE": "2s", "YES": "true"}

func lookupTest(k string) (string, bool) { v, ok := testEnv[k]; return v, ok }

// parseTest loads text as mx.yaml in dir.
func parseTest(t *testing.T, dir, text string) (*Config, error) {
	t.Helper()
	return parse([]byte(text), "mx.yaml", dir, lookupTest)
}

// problemsOf returns the problems of an *Error, failing the test for another error.
func problemsOf(t *testing.T, err error) []Problem {
	t.Helper()
	if err == nil {
		return nil
	}
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("error is %T, not *configs.Error: %v", err, err)
	}
	return ce.Problems
}

// TestLMTPDelivery: with every source delivering over LMTP, accounts are optional and
// need no maildir, deliver_to names any address, and sizes read with 1024-based suffixes.
func TestLMTPDelivery(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg, err := parseTest(t, dir, `lmtp:
  address: unix:run/lmtp
connectors:
  - name: mx
    drop_folder: drop
    delivery: lmtp
pollers:
  - name: pop
    protocol: pop3
    host: pop.example.net
    username: alice
    auth: {password: pw}
    deliver_to: carol@example.com
    delivery: lmtp
`)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.LMTP.Address, "unix:"+filepath.Join(dir, "run/lmtp"); got != want {
		t.Errorf("lmtp.address = %q, want %q", got, want)
	}
	if n, a := cfg.LMTP.Network(); n != "unix" || a != filepath.Join(dir, "run/lmtp") {
		t.Errorf("Network() = %s %s", n, a)
	}
	if cfg.LMTP.Connections != 8 || cfg.LMTP.TLS != "none" || cfg.LMTP.Timeout.D().Seconds() != 60 {
		t.Errorf("lmtp defaults: %+v", cfg.LMTP)
	}
	if cfg.Connectors[0].Delivery != DeliveryLMTP || cfg.Pollers[0].Delivery != DeliveryLMTP {
		t.Errorf("delivery not lmtp: %q %q", cfg.Connectors[0].Delivery, cfg.Pollers[0].Delivery)
	}
	cfg, err = parseTest(t, dir, strings.Replace(base, "    maildir: mail/bob\n", "    maildir: mail/bob\n    quota: 2G\n    quota_messages: 1000\n", 1))
	if err != nil {
		t.Fatal(err)
	}
	if a := cfg.Accounts[1]; a.Quota != 2<<30 || a.QuotaMessages != 1000 {
		t.Errorf("quota = %d, %d", a.Quota, a.QuotaMessages)
	}
	if cfg.Connectors[0].Delivery != DeliveryMaildir {
		t.Errorf("default delivery = %q", cfg.Connectors[0].Delivery)
	}
	for in, want := range map[string]Size{"0": 0, "1024": 1024, "10K": 10 << 10, "5m": 5 << 20, "2G": 2 << 30} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}

func TestValidationRules(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, name := range []string{"secret-empty"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name string
		yaml string
		want string // a line of the error starts with this
	}{
		// Reading the file.
		{"syntax error", "accounts:\n  - address: a@b\n   maildir: x\n", `mx.yaml:3: did not find expected '-' indicator (the file must be YAML`},
		{"syntax error tab", base + "\tsettle: 1s\n", `mx.yaml:10: found a tab character that violates indentation`},
		{"syntax error quote", base + "    name: \"mx\n", `mx.yaml:10: `},
		{"more documents", base + "---\nworkers: 2\n", `mx.yaml:10: the file holds more than one YAML document`},
		{"not a mapping", "- a\n- b\n", `mx.yaml:1: the file must be a block of keys, not a list`},
		{"unknown top key", base + "worker: 2\n", `mx.yaml:10: worker: unknown key "worker" (did you mean workers? valid keys here: state_dir, workers, log,`},
		{"unknown nested key", base + "    setle: 5s\n", `mx.yaml:10: connectors[0].setle: unknown key "setle" (did you mean settle? valid keys in connectors[0]: name, active, drop_folder,`},
		{"unknown deep key", base + "smtp:\n  auth:\n    pasword_file: x\n", `mx.yaml:12: smtp.auth.pasword_file: unknown key "pasword_file" (did you mean password_file?`},
		{"repeated key", base + "    drop_folder: drop2\n", `mx.yaml:10: connectors[0].drop_folder: is set twice (first at line 9)`},
		{"bad duration", base + "    settle: 5 seconds\n", `mx.yaml:10: connectors[0].settle: "5 seconds" is not a duration (use Go syntax such as 500ms, 30s, 5m)`},
		{"bare number duration", base + "    settle: 30\n", `mx.yaml:10: connectors[0].settle: "30" is not a duration`},
		{"bad bool", base + "    active: maybe\n", `mx.yaml:10: connectors[0].active: "maybe" is not true or false (write true or false)`},
		{"bad number", base + "workers: many\n", `mx.yaml:10: workers: "many" is not a whole number`},
		{"list expected", base + "    subdomains: example.com\n", `mx.yaml:10: connectors[0].subdomains: must be a list, not a single value`},
		{"block expected", base + "log: debug\n", `mx.yaml:10: log: must be a block of keys, not a single value`},
		{"value expected", strings.Replace(base, "name: mx", "name: [a, b]", 1), `mx.yaml:8: connectors[0].name: must be a single value, not a list`},
		{"undefined env", base + "    settle: ${NOPE}\n", `mx.yaml:10: connectors[0].settle: environment variable NOPE is not set (set it in mxdrop's environment`},
		{"bad env reference", base + "    settle: ${1X}\n", `mx.yaml:10: connectors[0].settle: ${1X} is not an environment variable reference`},
		{"unterminated env", base + "    settle: ${X\n", `mx.yaml:10: connectors[0].settle: ${ without a closing }`},

		// Watching a drop folder.
		{"watch mode", base + "    watch: inotify\n", `mx.yaml:10: connectors[0].watch: unknown value "inotify" (use one of auto, events, poll)`},
		{"poll interval tiny", base + "    poll_interval: 1ms\n", `mx.yaml:10: connectors[0].poll_interval: 1ms lists the folder too often (write 10ms or more`},
		{"poll interval negative", base + "    poll_interval: -1s\n", `mx.yaml:10: connectors[0].poll_interval: -1s is negative`},
		{"claim lease short", base + "    claim_lease: 100ms\n", `mx.yaml:10: connectors[0].claim_lease: 100ms leaves a live host no time to renew its lease (write 1s or more`},

		// Top level.
		{"nothing to do", "accounts: []\n", `mx.yaml: nothing to do: no connectors and no pollers (add a connector`},
		{"no accounts", "connectors:\n  - name: mx\n    drop_folder: d\n", `mx.yaml: accounts: no accounts: every message would fail`},
		{"negative workers", base + "workers: -1\n", `mx.yaml:10: workers: -1 is negative`},
		{"log level", base + "log:\n  level: verbose\n", `mx.yaml:11: log.level: unknown value "verbose" (use one of debug, info, warn, error)`},
		{"log format", base + "log: {format: text}\n", `mx.yaml:10: log.format: unknown value "text" (use one of json, console)`},
		{"metrics listen", base + "metrics:\n  listen: localhost\n", `mx.yaml:11: metrics.listen: "localhost" is not host:port: missing port in address (write host:port such as 127.0.0.1:9464`},
		{"metrics port", base + "metrics:\n  listen: :http\n", `mx.yaml:11: metrics.listen: ":http" is not host:port: the port must be a number from 1 to 65535`},
		{"bounce language", base + "bounce:\n  language: fr\n", `mx.yaml:11: bounce.language: unknown value "fr" (use one of en, de)`},
		{"bounce rate limit", base + "bounce:\n  rate_limit: -1\n", `mx.yaml:11: bounce.rate_limit: -1 is negative`},
		{"negative duration", base + "bounce:\n  retry_for: -1h\n", `mx.yaml:11: bounce.retry_for: -1h is negative`},
		{"negative backoff", base + "bounce:\n  min_backoff: -1s\n", `mx.yaml:11: bounce.min_backoff: -1s is negative`},
		{"backoff bounds", base + "bounce:\n  min_backoff: 5m\n  max_backoff: 1m\n", `mx.yaml:12: bounce.max_backoff: 1m is shorter than min_backoff 5m (write a max_backoff of at least min_backoff)`},

		// The relay.
		{"smtp tls", base + "smtp:\n  host: relay\n  tls: ssl\n", `mx.yaml:12: smtp.tls: unknown value "ssl" (use one of none, starttls, implicit)`},
		{"smtp port", base + "smtp:\n  host: relay\n  port: 70000\n", `mx.yaml:12: smtp.port: 70000 is out of range (a port is 1 to 65535`},
		{"smtp host with port", base + "smtp:\n  host: relay:25\n", `mx.yaml:11: smtp.host: "relay:25" is not a host name or address (write the host alone and the port in port:)`},
		{"smtp auth method", base + "smtp:\n  host: relay\n  auth:\n    method: cram-md5\n", `mx.yaml:13: smtp.auth.method: unknown value "cram-md5" (use one of none, plain, login, xoauth2)`},
		{"smtp plain without username", base + "smtp:\n  host: relay\n  auth:\n    method: plain\n    password: x\n", `mx.yaml:12: smtp.auth.username: is required with method plain`},
		{"smtp plain without password", base + "smtp:\n  host: relay\n  auth:\n    method: login\n    username: u\n", `mx.yaml:12: smtp.auth.password_file: a password is required with method login`},
		{"smtp password with none", base + "smtp:\n  host: relay\n  auth:\n    password: x\n", `mx.yaml:12: smtp.auth.method: a password is set but method is none`},
		{"smtp password twice", base + "smtp:\n  auth:\n    method: plain\n    username: u\n    password: x\n    password_file: f\n", `mx.yaml:14: smtp.auth.password: both password and password_file are set`},
		{"smtp xoauth2 without oauth", base + "smtp:\n  host: relay\n  auth:\n    method: xoauth2\n    username: u\n", `mx.yaml:12: smtp.auth.oauth.provider: is required with method xoauth2 (use one of google, microsoft, custom)`},
		{"oauth provider", base + "smtp:\n  auth:\n    oauth: {provider: yahoo}\n", `mx.yaml:12: smtp.auth.oauth.provider: unknown value "yahoo" (use one of google, microsoft, custom)`},
		{"oauth custom token url", base + "smtp:\n  host: relay\n  auth:\n    method: xoauth2\n    username: u\n    oauth:\n      provider: custom\n      client_id: id\n", `mx.yaml:15: smtp.auth.oauth.token_url: is required with provider custom`},
		{"oauth token url https", base + "smtp:\n  auth:\n    oauth:\n      token_url: http://x/token\n", `mx.yaml:13: smtp.auth.oauth.token_url: "http://x/token" is not an https URL`},
		{"reporting mta", base + "smtp:\n  reporting_mta: \"mx example\"\n", `mx.yaml:11: smtp.reporting_mta: "mx example" is not a host name`},
		{"ca file missing", base + "smtp:\n  host: relay\n  ca_file: nope.pem\n", `mx.yaml:12: smtp.ca_file: cannot read: ` + filepath.Join(dir, "nope.pem") + `: no such file or directory`},

		// Accounts.
		{"account address", strings.Replace(base, "alice@example.com\n", "alice\n", 1), `mx.yaml:2: accounts[0].address: "alice" is not an address (write a bare address such as alice@example.com)`},
		{"account display name", strings.Replace(base, "alice@example.com\n", "Alice <alice@example.com>\n", 1), `mx.yaml:2: accounts[0].address: "Alice <alice@example.com>" is not an address`},
		{"account without address", strings.Replace(base, "connectors:", "  - maildir: mail/carol\nconnectors:", 1), `mx.yaml:7: accounts[2].address: is required`},
		{"alias address", strings.Replace(base, "[a.smith@example.com]", "[a.smith@example.com, a smith@example.com]", 1), `mx.yaml:3: accounts[0].aliases[1]: "a smith@example.com" is not an address`},
		{"account without maildir", strings.Replace(base, "    maildir: mail/bob\n", "", 1), `mx.yaml:5: accounts[1].maildir: is required`},
		{"duplicate address", strings.Replace(base, "bob@example.com", "Alice@Example.COM", 1), `mx.yaml:5: accounts[1].address: Alice@Example.COM is already the address of accounts[0] (line 2) (an address belongs to one account`},
		{"alias is another address", strings.Replace(base, "[a.smith@example.com]", "[a.smith@example.com, Bob@example.com]", 1), `mx.yaml:3: accounts[0].aliases[1]: Bob@example.com is already the address of accounts[1] (line 5)`},
		{"alias is another alias", strings.Replace(base, "    maildir: mail/bob\n", "    maildir: mail/bob\n    aliases: [A.Smith@example.com]\n", 1), `mx.yaml:7: accounts[1].aliases[0]: A.Smith@example.com is already an alias of alice@example.com (line 3)`},
		{"alias is own address", strings.Replace(base, "[a.smith@example.com]", "[alice@example.com]", 1), `mx.yaml:3: accounts[0].aliases[0]: alice@example.com is the account's own address`},
		{"shared maildir", strings.Replace(base, "mail/bob", "./mail/x/../alice", 1), `mx.yaml:6: accounts[1].maildir: ` + filepath.Join(dir, "mail/alice") + ` is also the maildir of alice@example.com (line 4) (each account needs its own Maildir)`},
		{"two catch-alls", strings.Replace(strings.Replace(base, "    maildir: mail/bob\n", "    maildir: mail/bob\n    catch_all: true\n", 1), "    maildir: mail/alice\n", "    maildir: mail/alice\n    catch_all: true\n", 1), `mx.yaml:8: accounts[1].catch_all: example.com already has a catch-all: alice@example.com`},
		{"maildir in drop folder", strings.Replace(base, "mail/bob", "drop/bob", 1), `mx.yaml:6: accounts[1].maildir: ` + filepath.Join(dir, "drop/bob") + ` overlaps the drop folder of connector mx`},

		// Connectors.
		{"connector without drop folder", strings.Replace(base, "    drop_folder: drop\n", "", 1), `mx.yaml:8: connectors[0].drop_folder: is required`},
		{"connector without name", strings.Replace(base, "  - name: mx\n    drop_folder", "  - drop_folder", 1), `mx.yaml:8: connectors[0].name: is required`},
		{"connector name", strings.Replace(base, "name: mx", "name: m/x", 1), `mx.yaml:8: connectors[0].name: "m/x" is not a valid name`},
		{"connector same name", base + "  - name: mx\n    drop_folder: drop2\n", `mx.yaml:10: connectors[1].name: "mx" is already the name of connectors[0] (line 8)`},
		{"connector same drop folder", base + "  - name: mx2\n    drop_folder: ./drop/\n", `mx.yaml:11: connectors[1].drop_folder: ` + filepath.Join(dir, "drop") + ` is also the drop folder of mx (line 9) (each connector needs its own drop folder)`},
		{"connector nested drop folder", base + "  - name: mx2\n    drop_folder: drop/inner\n", `mx.yaml:11: connectors[1].drop_folder: ` + filepath.Join(dir, "drop/inner") + ` overlaps the drop folder of mx`},
		{"subdomain pattern", base + "    subdomains: [example.com, \"*\"]\n", `mx.yaml:10: connectors[0].subdomains[1]: "*" is not a domain pattern (use ".", a domain such as example.com, or *.example.com)`},
		{"subdomain pattern space", base + "    subdomains:\n      - exa mple.com\n", `mx.yaml:11: connectors[0].subdomains[0]: "exa mple.com" is not a domain pattern`},
		{"subdomain wildcard", base + "    subdomains: [\"*.\"]\n", `mx.yaml:10: connectors[0].subdomains[0]: "*." is not a domain pattern`},
		{"mailbox not an address", base + "    mailboxes: [alice]\n", `mx.yaml:10: connectors[0].mailboxes[0]: "alice" is not an address`},
		{"mailbox names no account", base + "    mailboxes: [carol@example.com]\n", `mx.yaml:10: connectors[0].mailboxes[0]: carol@example.com names no account (accounts are: alice@example.com, bob@example.com)`},
		{"mailbox names alias", base + "    mailboxes: [a.smith@example.com]\n", `mx.yaml:10: connectors[0].mailboxes[0]: a.smith@example.com is an alias of alice@example.com (name the account by its address)`},
		{"connector unknown recipients", base + "    unknown_recipients: carol@example.com\n", `mx.yaml:10: connectors[0].unknown_recipients: carol@example.com names no account`},
		{"unknown recipients not served", base + "    mailboxes: [alice@example.com]\n    unknown_recipients: bob@example.com\n", `mx.yaml:11: connectors[0].unknown_recipients: bob@example.com is not one of this connector's mailboxes`},
		{"envelope header", base + "    envelope_headers: [x-original-to, return-path]\n", `mx.yaml:10: connectors[0].envelope_headers[1]: unknown envelope header "return-path" (use some of x-receiver, envelope-to,`},
		{"envelope header twice", base + "    envelope_headers: [Delivered-To, delivered-to]\n", `mx.yaml:10: connectors[0].envelope_headers[1]: delivered-to is listed twice`},
		{"connector size", base + "    max_message_size: -5\n", `mx.yaml:10: connectors[0].max_message_size: -5 is negative (write a size in bytes; 0 means no limit)`},
		{"smtp override without host", base + "    smtp:\n      port: 587\n", `mx.yaml:10: connectors[0].smtp.host: is required in a connector's smtp override`},

		// Pollers.
		{"poller protocol", strings.Replace(poller, "pop3", "jmap", 1), `mx.yaml:12: pollers[0].protocol: unknown value "jmap" (use one of pop3, imap)`},
		{"poller without protocol", strings.Replace(poller, "    protocol: pop3\n", "", 1), `mx.yaml:11: pollers[0].protocol: is required (use pop3 or imap)`},
		{"poller without host", strings.Replace(poller, "    host: pop.example.net\n", "", 1), `mx.yaml:11: pollers[0].host: is required`},
		{"poller without username", strings.Replace(poller, "    username: alice\n", "", 1), `mx.yaml:11: pollers[0].username: is required`},
		{"poller port", poller + "    port: -1\n", `mx.yaml:17: pollers[0].port: -1 is out of range`},
		{"poller tls", poller + "    tls: yes\n", `mx.yaml:17: pollers[0].tls: unknown value "yes" (use one of none, starttls, implicit)`},
		{"poller name", poller + "  - name: mx\n    protocol: imap\n    host: h\n    username: u\n    auth: {password: pw}\n    deliver_to: bob@example.com\n", `mx.yaml:17: pollers[1].name: "mx" is already the name of connectors[0] (line 8)`},
		{"poller auth method", strings.Replace(poller, "{password: pw}", "{method: oauth}", 1), `mx.yaml:15: pollers[0].auth.method: unknown value "oauth" (use one of password, xoauth2)`},
		{"poller password missing", strings.Replace(poller, "{password: pw}", "{}", 1), `mx.yaml:15: pollers[0].auth.password_file: a password is required with method password`},
		{"poller xoauth2 client id", strings.Replace(poller, "{password: pw}", "{method: xoauth2, oauth: {provider: google}}", 1), `mx.yaml:15: pollers[0].auth.oauth.client_id: is required with method xoauth2`},
		{"poller keep", poller + "    keep: archive\n", `mx.yaml:17: pollers[0].keep: unknown value "archive" (use one of delete, forever, days)`},
		{"keep days missing", poller + "    keep: days\n", `mx.yaml:17: pollers[0].keep_days: keep: days needs keep_days above 0 (set keep_days to the number of days`},
		{"keep days without days", poller + "    keep_days: 3\n", `mx.yaml:17: pollers[0].keep_days: keep_days is only used with keep: days, not keep: delete`},
		{"poller mode", poller + "    mode: multi\n", `mx.yaml:17: pollers[0].mode: unknown value "multi" (use one of single, collection)`},
		{"single without deliver_to", strings.Replace(poller, "    deliver_to: alice@example.com\n", "", 1), `mx.yaml:11: pollers[0].deliver_to: is required in single mode`},
		{"single mode without deliver_to", strings.Replace(poller, "    deliver_to: alice@example.com\n", "    mode: single\n", 1), `mx.yaml:16: pollers[0].deliver_to: is required in single mode`},
		{"deliver_to names no account", strings.Replace(poller, "deliver_to: alice@", "deliver_to: carol@", 1), `mx.yaml:16: pollers[0].deliver_to: carol@example.com names no account`},
		{"deliver_to not an address", strings.Replace(poller, "deliver_to: alice@example.com", "deliver_to: alice", 1), `mx.yaml:16: pollers[0].deliver_to: "alice" is not an address`},
		{"collection without domains", strings.Replace(poller, "    deliver_to: alice@example.com\n", "    mode: collection\n", 1), `mx.yaml:16: pollers[0].accepted_domains: is required in collection mode (list the recipient domains`},
		{"collection with deliver_to", poller + "    mode: collection\n    accepted_domains: [example.com]\n", `mx.yaml:16: pollers[0].deliver_to: is only used in single mode`},
		{"collection unknown recipients", strings.Replace(poller, "    deliver_to: alice@example.com\n", "    mode: collection\n    accepted_domains: [example.com]\n    unknown_recipients: nobody@example.com\n", 1), `mx.yaml:18: pollers[0].unknown_recipients: nobody@example.com names no account`},
		{"collection domain pattern", strings.Replace(poller, "    deliver_to: alice@example.com\n", "    mode: collection\n    accepted_domains: [\"*.*.example.com\"]\n", 1), `mx.yaml:17: pollers[0].accepted_domains[0]: "*.*.example.com" is not a domain pattern`},
		{"single with accepted domains", poller + "    accepted_domains: [example.com]\n", `mx.yaml:17: pollers[0].accepted_domains: is only used in collection mode`},
		{"pop3 folders", poller + "    folders: [INBOX, Archive]\n", `mx.yaml:17: pollers[0].folders: is imap only`},
		{"poller max per cycle", poller + "    max_per_cycle: -1\n", `mx.yaml:17: pollers[0].max_per_cycle: -1 is negative`},
		{"poller size", poller + "    max_message_size: -1\n", `mx.yaml:17: pollers[0].max_message_size: -1 is negative`},
		{"poller interval", poller + "    interval: -5m\n", `mx.yaml:17: pollers[0].interval: -5m is negative`},
		{"poller secret file missing", strings.Replace(poller, "{password: pw}", "\n      password_file: secret-missing", 1), `mx.yaml:16: pollers[0].auth.password_file: cannot read the secret: ` + filepath.Join(dir, "secret-missing") + `: no such file or directory`},
		{"poller secret file empty", strings.Replace(poller, "{password: pw}", "{password_file: secret-empty}", 1), `mx.yaml:15: pollers[0].auth.password_file: ` + filepath.Join(dir, "secret-empty") + ` is empty (the file must hold the password`},

		// Delivery targets and quota.
		{"delivery", base + "    delivery: dovecot\n", `mx.yaml:10: connectors[0].delivery: unknown value "dovecot" (use one of maildir, lmtp)`},
		{"lmtp without address", base + "    delivery: lmtp\n", `mx.yaml:10: lmtp.address: is required with delivery: lmtp`},
		{"poller lmtp without address", poller + "    delivery: lmtp\n", `mx.yaml:17: lmtp.address: is required with delivery: lmtp`},
		{"lmtp address", base + "lmtp:\n  address: dovecot\n", `mx.yaml:11: lmtp.address: "dovecot" is not host:port`},
		{"lmtp unix relative", base + "lmtp:\n  address: \"unix:\"\n", `mx.yaml:11: lmtp.address: "unix:" names no socket path`},
		{"lmtp tls", base + "lmtp:\n  address: 127.0.0.1:24\n  tls: implicit\n", `mx.yaml:12: lmtp.tls: unknown value "implicit" (use one of none, starttls)`},
		{"lmtp connections", base + "lmtp:\n  address: 127.0.0.1:24\n  connections: -1\n", `mx.yaml:12: lmtp.connections: -1 is negative`},
		{"quota", strings.Replace(base, "    maildir: mail/bob\n", "    maildir: mail/bob\n    quota: 2T\n", 1), `mx.yaml:7: accounts[1].quota: "2T" is not a size`},
		{"quota negative", strings.Replace(base, "    maildir: mail/bob\n", "    maildir: mail/bob\n    quota: -5\n", 1), `mx.yaml:7: accounts[1].quota: "-5" is not a size`},
		{"quota messages", strings.Replace(base, "    maildir: mail/bob\n", "    maildir: mail/bob\n    quota_messages: -1\n", 1), `mx.yaml:7: accounts[1].quota_messages: -1 is negative`},
		{"maildir needed", strings.Replace(base, "    maildir: mail/bob\n", "", 1), `mx.yaml:5: accounts[1].maildir: is required`},

		// Spam.
		{"spamd", base + "spam:\n  spamd: spamd.local\n", `mx.yaml:11: spam.spamd: "spamd.local" is not host:port`},
		{"blocked sender", base + "spam:\n  blocked_senders: [\"@\", bad]\n", `mx.yaml:11: spam.blocked_senders[0]: "@" is not a domain (use an address (spammer@example.com) or a whole domain (@example.com))`},
		{"blocked sender address", base + "spam:\n  blocked_senders:\n    - \"@example.org\"\n    - not an address\n", `mx.yaml:13: spam.blocked_senders[1]: "not an address" is not an address or @domain`},
		{"spam folder", base + "spam:\n  folder: .Junk\n", `mx.yaml:11: spam.folder: ".Junk" is not a Maildir++ folder name`},
		{"words file", base + "spam:\n  words_file: words.txt\n", `mx.yaml:11: spam.words_file: cannot read: ` + filepath.Join(dir, "words.txt") + `: no such file or directory`},
		{"empty word", base + "spam:\n  words: [viagra, \"\"]\n", `mx.yaml:11: spam.words[1]: is empty`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := parseTest(t, dir, tc.yaml)
			if err == nil {
				t.Fatalf("loaded without error: %+v", cfg)
			}
			ps := problemsOf(t, err)
			found := false
			for _, line := range strings.Split(err.Error(), "\n") {
				if strings.HasPrefix(line, tc.want) {
					found = true
				}
			}
			if !found {
				t.Errorf("no problem starts with\n\t%s\ngot:\n\t%s", tc.want, strings.ReplaceAll(err.Error(), "\n", "\n\t"))
			}
			for _, p := range ps {
				if p.Hint == "" {
					t.Errorf("problem without a hint: %s", p)
				}
			}
		})
	}
}

// TestPlaces: state_dir, drop folders and Maildirs on the kernel's virtual file systems,
// and a drop folder that is (or holds, or lies in) state_dir, are refused by path.
func TestPlaces(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		name, text, key, want string
	}{
		{"maildir under /proc", strings.Replace(base, "maildir: mail/bob", "maildir: /proc/self/fd", 1), "accounts[1].maildir", "virtual file system /proc"},
		{"drop folder under /sys", strings.Replace(base, "drop_folder: drop", "drop_folder: /sys/kernel", 1), "connectors[0].drop_folder", "virtual file system /sys"},
		{"state_dir is /dev/shm", "state_dir: /dev/shm\n" + base, "state_dir", "virtual file system /dev"},
		{"drop folder is state_dir", "state_dir: drop\n" + base, "connectors[0].drop_folder", "overlaps state_dir"},
		{"state_dir inside the drop folder", "state_dir: drop/state\n" + base, "connectors[0].drop_folder", "overlaps state_dir"},
		{"drop folder inside state_dir", "state_dir: var\n" + strings.Replace(base, "drop_folder: drop", "drop_folder: var/drop", 1), "connectors[0].drop_folder", "overlaps state_dir"},
	} {
		_, err := parseTest(t, dir, tc.text)
		found := false
		for _, p := range problemsOf(t, err) {
			if p.Path == tc.key && strings.Contains(p.Msg, tc.want) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: no problem at %s saying %q; got %v", tc.name, tc.key, tc.want, err)
		}
	}
	if _, err := parseTest(t, dir, "state_dir: var/state\n"+base); err != nil {
		t.Errorf("separate state_dir and drop folder refused: %v", err)
	}
}

// TestLoadTooLarge: a configuration file past MaxConfigSize is refused before it is
// parsed, with an error that says so.
func TestLoadTooLarge(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "huge.yaml")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(base + "# " + strings.Repeat("x", MaxConfigSize) + "\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	_, err = Load(path)
	if err == nil || !strings.Contains(err.Error(), "larger than 4 MiB") {
		t.Fatalf("Load of a %d-byte file: %v, want a size error", MaxConfigSize+len(base), err)
	}
}
