// Package configs holds mxdrop's configuration: the YAML schema of CONFIG.md as plain
// structs, loading with strict decoding, defaults, validation with file:line errors, and
// the embedded default configuration. A loaded Config is a value: nothing in it changes
// after Load returns, and components receive the parts they need.
//
// The defaults applied by Load are written beside each field below and collected in
// defaults.go; a zero value in the file (0, "", 0s) means "use the default".
package configs

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the whole configuration file.
type Config struct {
	// File is the absolute path the configuration was loaded from ("" for the embedded
	// default). Relative paths in the file have already been resolved against its folder.
	File string `yaml:"-"`

	// StateDir holds work folders, poller UID state, OAuth tokens and the bounce outbox
	// (default ./var/state, relative to the configuration file's folder).
	StateDir string `yaml:"state_dir"`
	// Workers is the number of concurrent imports of each connector and of each
	// poller's batch (default 16: imports are fsync-bound, and concurrent fsyncs share
	// journal commits).
	Workers int `yaml:"workers"`

	Log     Log     `yaml:"log"`
	Metrics Metrics `yaml:"metrics"`
	SMTP    SMTP    `yaml:"smtp"`   // the default relay for DSNs; a connector may override it
	Bounce  Bounce  `yaml:"bounce"` // DSN language, outbox retry and rate limit
	// LMTP is the mail server that connectors and pollers with delivery: lmtp hand
	// their messages to.
	LMTP LMTP `yaml:"lmtp"`

	// Accounts are the local Maildir accounts. Addresses and aliases are unique across
	// all accounts (compared case-insensitively, domains in ASCII), as are Maildirs.
	Accounts []Account `yaml:"accounts"`
	// Connectors are the MTA drop folders; names are unique among connectors and
	// pollers together, drop folders are unique and do not contain one another.
	Connectors []Connector `yaml:"connectors"`
	// Pollers are the remote POP3/IMAP accounts feeding the importer.
	Pollers []Poller `yaml:"pollers"`

	// PollersAlwaysDelete makes every poller delete after retrieval. Load applies it:
	// every Poller.Keep is "delete" in a loaded Config when it is set.
	PollersAlwaysDelete bool `yaml:"pollers_always_delete"`

	Spam Spam `yaml:"spam"` // the spam check used by sources and accounts with spam_check
}

// Log configures the structured log.
type Log struct {
	Level  string `yaml:"level"`  // debug | info | warn | error (default info)
	Format string `yaml:"format"` // json | console (default json)
}

// Metrics configures the Prometheus and health endpoint.
type Metrics struct {
	Listen string `yaml:"listen"` // host:port of /metrics, /healthz, /readyz; "" = off (default)
	// PollerFailureUnready turns /readyz unready when a poller has failed for longer
	// than this (default 30m).
	PollerFailureUnready Duration `yaml:"poller_failure_unready"`
}

// SMTP is a relay used to send DSNs.
type SMTP struct {
	Host string `yaml:"host"` // "" = no relay: DSNs are only written to ImportFailed/
	// Port defaults to 25, or 465 with tls: implicit.
	Port   int      `yaml:"port"`
	TLS    string   `yaml:"tls"`     // none | starttls | implicit (default none)
	CAFile string   `yaml:"ca_file"` // extra CA (PEM); certificates are always verified
	Auth   SMTPAuth `yaml:"auth"`
	// ReportingMTA names this host in DSNs (Reporting-MTA, From: MAILER-DAEMON@...).
	// Default: os.Hostname(); a connector's override inherits the top-level value.
	ReportingMTA string   `yaml:"reporting_mta"`
	Timeout      Duration `yaml:"timeout"` // default 60s
}

// SMTPAuth is the relay's authentication.
type SMTPAuth struct {
	Method   string `yaml:"method"`   // none | plain | login | xoauth2 (default none)
	Username string `yaml:"username"` // required with plain, login, xoauth2
	// Password is the secret itself; when PasswordFile is set, Load reads it from there.
	Password     Secret `yaml:"password"`
	PasswordFile string `yaml:"password_file"` // a file holding Password; absolute after Load
	OAuth        OAuth  `yaml:"oauth"`
}

// OAuth names an OAuth 2.0 client.
type OAuth struct {
	Provider string `yaml:"provider"` // google | microsoft | custom
	ClientID string `yaml:"client_id"`
	// ClientSecret is the secret itself; when ClientSecretFile is set, Load reads it.
	ClientSecret     Secret   `yaml:"client_secret"`
	ClientSecretFile string   `yaml:"client_secret_file"` // a file holding ClientSecret; absolute after Load
	TokenURL         string   `yaml:"token_url"`          // https; required with provider custom
	AuthURL          string   `yaml:"auth_url"`           // https; the authorization endpoint (provider custom)
	Tenant           string   `yaml:"tenant"`             // microsoft: the directory (tenant) id
	Scopes           []string `yaml:"scopes"`             // requested scopes; empty = the provider's default for mail
}

// Bounce configures DSN generation and the outbox.
type Bounce struct {
	Language string   `yaml:"language"`  // en | de (default en)
	RetryFor Duration `yaml:"retry_for"` // how long the outbox retries a DSN (default 120h)
	// RateLimit is the most DSNs sent to one sender per RateWindow (default 10 per 1h).
	RateLimit  int      `yaml:"rate_limit"`
	RateWindow Duration `yaml:"rate_window"`
	// MinBackoff is how long the outbox waits after a DSN's first failed attempt; each
	// further failure doubles the wait, up to MaxBackoff. 0 means the outbox's defaults
	// (1m and 1h); a MaxBackoff below MinBackoff is an error.
	MinBackoff Duration `yaml:"min_backoff"`
	MaxBackoff Duration `yaml:"max_backoff"`
}

// Account is a local Maildir account.
type Account struct {
	Address string   `yaml:"address"` // the account's address, as written (required)
	Aliases []string `yaml:"aliases"` // more addresses delivered to this account
	Maildir string   `yaml:"maildir"` // absolute after Load (required)
	// CatchAll makes the account receive unknown recipients of its own domain. To catch
	// every domain, name the account in a connector's UnknownRecipients instead.
	CatchAll  bool `yaml:"catch_all"`
	SpamCheck bool `yaml:"spam_check"` // check mail for this account; spam goes to Spam.Folder
	// Quota is the Maildir++ quota of the account's Maildir in bytes (0 = none).
	Quota Size `yaml:"quota"`
	// QuotaMessages limits the number of messages in the Maildir (0 = no limit).
	QuotaMessages int64 `yaml:"quota_messages"`
}

// Delivery targets of connectors and pollers.
const (
	DeliveryMaildir = "maildir" // mxdrop writes the accounts' Maildirs itself
	DeliveryLMTP    = "lmtp"    // every routed recipient goes to the LMTP server
)

// LMTP is a mail server that takes deliveries over LMTP (RFC 2033).
type LMTP struct {
	// Address is "unix:/path" or "host:port"; "" = no LMTP server.
	Address string   `yaml:"address"`
	TLS     string   `yaml:"tls"`     // none | starttls (default none)
	CAFile  string   `yaml:"ca_file"` // extra CA (PEM); certificates are always verified
	Timeout Duration `yaml:"timeout"` // no answer for this long aborts a session (default 60s)
	// Connections is the number of LMTP sessions kept and used in parallel (default 8).
	Connections int `yaml:"connections"`
}

// Network returns the network and address to dial: ("unix", path) or ("tcp", host:port).
func (l LMTP) Network() (network, address string) {
	if p, ok := strings.CutPrefix(l.Address, "unix:"); ok {
		return "unix", p
	}
	return "tcp", l.Address
}

// Connector is one MTA drop folder.
type Connector struct {
	Name       string `yaml:"name"`        // required; labels logs and metrics
	Active     *bool  `yaml:"active"`      // default true; see IsActive
	DropFolder string `yaml:"drop_folder"` // required; absolute after Load
	// Subdomains are the accepted domains: "." all, "example.com", "*.example.com" any
	// subdomain (default ["."]).
	Subdomains []string `yaml:"subdomains"`
	// Mailboxes limits the accounts this connector imports for (account addresses);
	// empty = all accounts.
	Mailboxes []string `yaml:"mailboxes"`
	// UnknownRecipients names the account that receives recipients of an accepted
	// domain that match no address, alias or domain catch-all ("" = they fail with
	// 5.1.1). With Subdomains ["."] it catches everything: the embedded default uses it.
	// It is the same rule as a collection poller's unknown_recipients and maps to
	// importer.Options.UnknownTo.
	UnknownRecipients string   `yaml:"unknown_recipients"`
	Settle            Duration `yaml:"settle"` // default 500ms
	// Delivery is maildir | lmtp (default maildir).
	Delivery string `yaml:"delivery"`
	// Watch is how new files are found: "auto" (default) uses fsnotify events on local
	// file systems and lists network and FUSE shares every PollInterval, where other
	// hosts' writes raise no event; "events" or "poll" force one way.
	Watch        string   `yaml:"watch"`
	PollInterval Duration `yaml:"poll_interval"` // default 1s: how often a polled drop folder is listed
	// ClaimLease protects this instance's claims on a share, where flock does not cross
	// hosts: the instance renews a lease file every ClaimLease/3, and another host
	// adopts its claims only after seeing the lease unchanged for ClaimLease (default 2m).
	ClaimLease   Duration `yaml:"claim_lease"`
	Bounce       *bool    `yaml:"bounce"`        // default true
	KeepImported bool     `yaml:"keep_imported"` // move imported files to Imported/ instead of deleting them
	// SMTP overrides the top-level relay for this connector's DSNs. nil (or an empty
	// block in the file) means the top-level relay; see Relay. An override is a whole
	// relay: nothing but reporting_mta is inherited, so credentials never travel to
	// another host.
	SMTP      *SMTP `yaml:"smtp"`
	SpamCheck bool  `yaml:"spam_check"` // check every message of this connector for spam
	// EnvelopeHeaders lists, in order of preference, the header conventions the envelope
	// is read from. Default: x-receiver, envelope-to, x-original-to, delivered-to,
	// x-envelope-to, received.
	EnvelopeHeaders []string `yaml:"envelope_headers"`
	// MaxMessageSize quarantines larger files (bytes; 0 = no limit).
	MaxMessageSize int64 `yaml:"max_message_size"`
}

// PollerMessageCeiling is the largest message a poller fetches when its
// max_message_size is 0 (not set): a server, broken or hostile, that announces a huge
// literal or never ends a RETR cannot fill the disk through the spool. An explicit
// max_message_size above it is taken as written.
const PollerMessageCeiling = 1 << 30

// IsActive reports whether the connector runs (active defaults to true).
func (c *Connector) IsActive() bool { return c.Active == nil || *c.Active }

// BounceEnabled reports whether DSNs are sent for this connector (default true).
func (c *Connector) BounceEnabled() bool { return c.Bounce == nil || *c.Bounce }

// Relay returns the relay this connector's DSNs go through: its own smtp block when it
// has one, else top (the Config's SMTP). A relay with Host "" means no relay.
func (c *Connector) Relay(top SMTP) SMTP {
	if c.SMTP != nil {
		return *c.SMTP
	}
	return top
}

// Poller is one remote POP3/IMAP account.
type Poller struct {
	Name     string `yaml:"name"`     // required; names its UID state and labels logs
	Active   *bool  `yaml:"active"`   // default true
	Protocol string `yaml:"protocol"` // pop3 | imap (required)
	Host     string `yaml:"host"`     // required, without port
	// Port defaults by protocol and tls: pop3 110 (995 with tls: implicit), imap 143
	// (993 with tls: implicit); starttls uses the plain port.
	Port        int        `yaml:"port"`
	TLS         string     `yaml:"tls"`           // none | starttls | implicit (default implicit)
	CAFile      string     `yaml:"ca_file"`       // extra CA (PEM); certificates are always verified
	Timeout     Duration   `yaml:"timeout"`       // no byte for this long aborts (default 60s)
	Interval    Duration   `yaml:"interval"`      // default 5m
	MaxPerCycle int        `yaml:"max_per_cycle"` // 0 = no limit
	Username    string     `yaml:"username"`      // required
	Auth        PollerAuth `yaml:"auth"`
	// Keep is delete | forever | days (default delete; always delete when
	// pollers_always_delete is set).
	Keep     string `yaml:"keep"`
	KeepDays int    `yaml:"keep_days"` // with keep: days, > 0
	// Mode is single (every message to DeliverTo) | collection (route by recipient
	// within AcceptedDomains). Default single.
	Mode              string   `yaml:"mode"`
	DeliverTo         string   `yaml:"deliver_to"`         // single: the account's address (required)
	AcceptedDomains   []string `yaml:"accepted_domains"`   // collection: patterns as Connector.Subdomains (required)
	UnknownRecipients string   `yaml:"unknown_recipients"` // collection: account for unknown recipients; "" = fail 5.1.1
	SpamCheck         bool     `yaml:"spam_check"`
	Folders           []string `yaml:"folders"`  // imap only (default [INBOX])
	IDLE              *bool    `yaml:"idle"`     // imap only (default true); see IDLEEnabled
	Delivery          string   `yaml:"delivery"` // maildir | lmtp (default maildir)
	// MaxMessageSize leaves larger messages on the server (bytes; 0: the ceiling,
	// PollerMessageCeiling).
	MaxMessageSize int64 `yaml:"max_message_size"`
	// DuplicateWindow is how long a message identity is remembered to suppress
	// re-delivery (default 336h, two weeks).
	DuplicateWindow Duration `yaml:"duplicate_window"`
}

// IsActive reports whether the poller runs (active defaults to true).
func (p *Poller) IsActive() bool { return p.Active == nil || *p.Active }

// IDLEEnabled reports whether an IMAP poller uses IDLE (default true).
func (p *Poller) IDLEEnabled() bool { return p.IDLE == nil || *p.IDLE }

// PollerAuth is a poller's authentication.
type PollerAuth struct {
	Method string `yaml:"method"` // password | xoauth2 (default password)
	// Password is the secret itself; when PasswordFile is set, Load reads it from there
	// (only for an active poller).
	Password     Secret `yaml:"password"`
	PasswordFile string `yaml:"password_file"` // a file holding Password; absolute after Load
	OAuth        OAuth  `yaml:"oauth"`
}

// Spam configures the spam check.
type Spam struct {
	Words              []string `yaml:"words"`                // words that mark a message as spam
	WordsFile          string   `yaml:"words_file"`           // more words, one per line; absolute after Load, not read by Load
	BlockedSenders     []string `yaml:"blocked_senders"`      // addresses or @domains
	BlockedSendersFile string   `yaml:"blocked_senders_file"` // more, one per line; absolute after Load, not read by Load
	Spamd              string   `yaml:"spamd"`                // host:port of SpamAssassin spamd; "" = off
	SpamdTimeout       Duration `yaml:"spamd_timeout"`        // default 30s
	Folder             string   `yaml:"folder"`               // Maildir++ folder for spam (default Junk)
}

// Duration is a time.Duration written in Go syntax ("30s", "5m") in YAML.
type Duration time.Duration

// D returns the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String gives the duration in Go syntax without zero units: "500ms", "5m", "120h",
// "1h30m".
func (d Duration) String() string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// UnmarshalYAML reads a scalar in Go duration syntax. A null or empty value is zero
// (the default). Any other value, a bare number included, is an error: "30" could mean
// seconds or minutes.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("a duration must be a single value")
	}
	if n.ShortTag() == "!!null" || n.Value == "" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("%q is not a duration", n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as String does.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// Size is a number of bytes written as a bare number or with a K, M or G suffix
// (1024-based: 2G is 2147483648), as Maildir++ quotas are usually given.
type Size int64

// UnmarshalYAML reads a scalar such as 1048576, 512K, 10M or 2G. A null or empty value
// is zero.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("a size must be a single value")
	}
	if n.ShortTag() == "!!null" || n.Value == "" {
		*s = 0
		return nil
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// ParseSize parses a size as Size.UnmarshalYAML does.
func ParseSize(v string) (Size, error) {
	t := strings.TrimSpace(v)
	mult := int64(1)
	if t != "" {
		switch t[len(t)-1] {
		case 'k', 'K':
			mult = 1 << 10
		case 'm', 'M':
			mult = 1 << 20
		case 'g', 'G':
			mult = 1 << 30
		}
		if mult > 1 {
			t = t[:len(t)-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is not a size: write bytes, or a number with K, M or G", v)
	}
	return Size(n * mult), nil
}

// String writes the size with the largest suffix that divides it exactly.
func (s Size) String() string {
	switch {
	case s == 0:
		return "0"
	case s%(1<<30) == 0:
		return fmt.Sprintf("%dG", s>>30)
	case s%(1<<20) == 0:
		return fmt.Sprintf("%dM", s>>20)
	case s%(1<<10) == 0:
		return fmt.Sprintf("%dK", s>>10)
	}
	return strconv.FormatInt(int64(s), 10)
}

// Secret is a string that never prints: String, GoString, MarshalText and MarshalYAML
// give "***" for a set secret and "" for an empty one. Reveal gives the value.
type Secret string

// String hides the secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "***"
}

// GoString hides the secret from %#v.
func (s Secret) GoString() string { return fmt.Sprintf("%q", s.String()) }

// MarshalText hides the secret from encoding/json, zerolog and other text encoders.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// MarshalYAML hides the secret from YAML encoding.
func (s Secret) MarshalYAML() (any, error) { return s.String(), nil }

// Reveal returns the secret itself, for the one place that sends it.
func (s Secret) Reveal() string { return string(s) }
