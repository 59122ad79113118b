// Package configs holds mxdrop's configuration: the YAML schema of CONFIG.md as plain
// structs, loading with strict decoding, defaults, validation with file:line errors, and
// the embedded default configuration. A loaded Config is a value: nothing in it changes
// after Load returns, and components receive the parts they need.
package configs

import "time"

// Config is the whole configuration file.
type Config struct {
	// File is the absolute path the configuration was loaded from ("" for the embedded
	// default). Relative paths in the file have already been resolved against its folder.
	File string `yaml:"-"`

	StateDir string `yaml:"state_dir"`
	// Workers is the number of concurrent imports (default 16: imports are fsync-bound,
	// and concurrent fsyncs share journal commits).
	Workers int `yaml:"workers"`

	Log     Log     `yaml:"log"`
	Metrics Metrics `yaml:"metrics"`
	SMTP    SMTP    `yaml:"smtp"`
	Bounce  Bounce  `yaml:"bounce"`

	Accounts   []Account   `yaml:"accounts"`
	Connectors []Connector `yaml:"connectors"`
	Pollers    []Poller    `yaml:"pollers"`

	PollersAlwaysDelete bool `yaml:"pollers_always_delete"`

	Spam Spam `yaml:"spam"`
}

// Log configures the structured log.
type Log struct {
	Level  string `yaml:"level"`  // debug | info | warn | error
	Format string `yaml:"format"` // json | console
}

// Metrics configures the Prometheus and health endpoint.
type Metrics struct {
	Listen string `yaml:"listen"` // "" = off
}

// SMTP is a relay used to send DSNs.
type SMTP struct {
	Host         string   `yaml:"host"` // "" = no relay
	Port         int      `yaml:"port"`
	TLS          string   `yaml:"tls"` // none | starttls | implicit
	CAFile       string   `yaml:"ca_file"`
	Auth         SMTPAuth `yaml:"auth"`
	ReportingMTA string   `yaml:"reporting_mta"`
	Timeout      Duration `yaml:"timeout"`
}

// SMTPAuth is the relay's authentication.
type SMTPAuth struct {
	Method       string `yaml:"method"` // none | plain | login | xoauth2
	Username     string `yaml:"username"`
	Password     Secret `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
	OAuth        OAuth  `yaml:"oauth"`
}

// OAuth names an OAuth 2.0 client.
type OAuth struct {
	Provider         string   `yaml:"provider"` // google | microsoft | custom
	ClientID         string   `yaml:"client_id"`
	ClientSecret     Secret   `yaml:"client_secret"`
	ClientSecretFile string   `yaml:"client_secret_file"`
	TokenURL         string   `yaml:"token_url"`
	AuthURL          string   `yaml:"auth_url"`
	Tenant           string   `yaml:"tenant"`
	Scopes           []string `yaml:"scopes"`
}

// Bounce configures DSN generation and the outbox.
type Bounce struct {
	Language string   `yaml:"language"`  // en | de
	RetryFor Duration `yaml:"retry_for"` // how long the outbox retries a DSN (default 120h)
	// RateLimit is the most DSNs sent to one sender per RateWindow (default 10 per 1h).
	RateLimit  int      `yaml:"rate_limit"`
	RateWindow Duration `yaml:"rate_window"`
}

// Account is a local Maildir account.
type Account struct {
	Address   string   `yaml:"address"`
	Aliases   []string `yaml:"aliases"`
	Maildir   string   `yaml:"maildir"`
	CatchAll  bool     `yaml:"catch_all"`
	SpamCheck bool     `yaml:"spam_check"`
}

// Connector is one MTA drop folder.
type Connector struct {
	Name         string   `yaml:"name"`
	Active       *bool    `yaml:"active"` // default true
	DropFolder   string   `yaml:"drop_folder"`
	Subdomains   []string `yaml:"subdomains"`
	Mailboxes    []string `yaml:"mailboxes"`
	Settle       Duration `yaml:"settle"`
	Bounce       *bool    `yaml:"bounce"` // default true
	KeepImported bool     `yaml:"keep_imported"`
	SMTP         *SMTP    `yaml:"smtp"`
	SpamCheck    bool     `yaml:"spam_check"`
	// EnvelopeHeaders lists, in order of preference, the header conventions the envelope
	// is read from. Default: x-receiver, envelope-to, x-original-to, delivered-to,
	// x-envelope-to, received.
	EnvelopeHeaders []string `yaml:"envelope_headers"`
	// MaxMessageSize quarantines larger files (bytes; 0 = no limit).
	MaxMessageSize int64 `yaml:"max_message_size"`
}

// IsActive reports whether the connector runs (active defaults to true).
func (c *Connector) IsActive() bool { return c.Active == nil || *c.Active }

// BounceEnabled reports whether DSNs are sent for this connector (default true).
func (c *Connector) BounceEnabled() bool { return c.Bounce == nil || *c.Bounce }

// Poller is one remote POP3/IMAP account.
type Poller struct {
	Name              string     `yaml:"name"`
	Active            *bool      `yaml:"active"`
	Protocol          string     `yaml:"protocol"` // pop3 | imap
	Host              string     `yaml:"host"`
	Port              int        `yaml:"port"`
	TLS               string     `yaml:"tls"` // none | starttls | implicit
	CAFile            string     `yaml:"ca_file"`
	Timeout           Duration   `yaml:"timeout"`
	Interval          Duration   `yaml:"interval"`
	MaxPerCycle       int        `yaml:"max_per_cycle"`
	Username          string     `yaml:"username"`
	Auth              PollerAuth `yaml:"auth"`
	Keep              string     `yaml:"keep"` // delete | forever | days
	KeepDays          int        `yaml:"keep_days"`
	Mode              string     `yaml:"mode"` // single | collection
	DeliverTo         string     `yaml:"deliver_to"`
	AcceptedDomains   []string   `yaml:"accepted_domains"`
	UnknownRecipients string     `yaml:"unknown_recipients"`
	SpamCheck         bool       `yaml:"spam_check"`
	Folders           []string   `yaml:"folders"`
	IDLE              *bool      `yaml:"idle"`
	MaxMessageSize    int64      `yaml:"max_message_size"`
	DuplicateWindow   Duration   `yaml:"duplicate_window"`
}

// IsActive reports whether the poller runs (active defaults to true).
func (p *Poller) IsActive() bool { return p.Active == nil || *p.Active }

// PollerAuth is a poller's authentication.
type PollerAuth struct {
	Method       string `yaml:"method"` // password | xoauth2
	Password     Secret `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
	OAuth        OAuth  `yaml:"oauth"`
}

// Spam configures the spam check.
type Spam struct {
	Words              []string `yaml:"words"`
	WordsFile          string   `yaml:"words_file"`
	BlockedSenders     []string `yaml:"blocked_senders"`
	BlockedSendersFile string   `yaml:"blocked_senders_file"`
	Spamd              string   `yaml:"spamd"`
	SpamdTimeout       Duration `yaml:"spamd_timeout"`
	Folder             string   `yaml:"folder"`
}

// Duration is a time.Duration written in Go syntax ("30s", "5m") in YAML.
type Duration time.Duration

// D returns the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Secret is a string that never prints: its String and MarshalText give "***".
type Secret string

// String hides the secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "***"
}

// Reveal returns the secret itself, for the one place that sends it.
func (s Secret) Reveal() string { return string(s) }
