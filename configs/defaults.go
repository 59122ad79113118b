package configs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/mxdrop/mxdrop/importer/address"
)

// The defaults Load applies to a value left out (or written as zero) in the file.
const (
	defaultStateDir        = "./var/state" // relative to the configuration file's folder
	defaultWorkers         = 16            // imports are fsync-bound; concurrent fsyncs share journal commits
	defaultLogLevel        = "info"
	defaultLogFormat       = "json"
	defaultSMTPPort        = 25
	defaultSMTPSPort       = 465 // with tls: implicit: port 25 never speaks TLS first
	defaultSMTPTimeout     = 60 * time.Second
	defaultBounceLanguage  = "en"
	defaultBounceRetryFor  = 120 * time.Hour // five days, as MTAs keep a queued message
	defaultBounceRateLimit = 10              // DSNs to one sender ...
	defaultBounceWindow    = time.Hour       // ... per this window
	defaultSettle          = 500 * time.Millisecond
	defaultLMTPTimeout     = 60 * time.Second
	defaultLMTPConnections = 8
	defaultWatch           = "auto"
	defaultPollInterval    = time.Second
	defaultClaimLease      = 2 * time.Minute // a dead host's claims wait this long; far above any pause of a live one
	defaultPollerTLS       = "implicit"
	defaultPollerTimeout   = 60 * time.Second
	defaultPollerInterval  = 5 * time.Minute
	defaultKeep            = "delete"
	defaultMode            = "single"
	defaultFolder          = "INBOX"
	defaultPollerAuth      = "password"
	defaultDuplicateWindow = 336 * time.Hour // two weeks
	defaultSpamFolder      = "Junk"
	defaultSpamdTimeout    = 30 * time.Second
)

// envelopeHeaderNames are the envelope conventions a connector may list in
// envelope_headers, in the default order. They match importer.DefaultEnvelopeHeaders,
// which this package cannot import (importer imports configs).
var envelopeHeaderNames = []string{"x-receiver", "envelope-to", "x-original-to", "delivered-to", "x-envelope-to", "received"}

// DefaultEnvelopeHeaders returns the envelope conventions in their default order: the
// one list the loader validates against and the importer tries.
func DefaultEnvelopeHeaders() []string { return append([]string(nil), envelopeHeaderNames...) }

// normalize tidies what the file said before defaults apply: a connector's empty smtp
// block means "no override", envelope header names compare in lower case.
func (l *loader) normalize(cfg *Config) {
	for i := range cfg.Connectors {
		c := &cfg.Connectors[i]
		if c.SMTP != nil && reflect.ValueOf(*c.SMTP).IsZero() {
			c.SMTP = nil
		}
		for j, h := range c.EnvelopeHeaders {
			c.EnvelopeHeaders[j] = strings.ToLower(strings.TrimSpace(h))
		}
	}
}

// applyDefaults fills every value left at zero with its default (see the constants
// above). Values that are wrong (negative, unknown) are left for validate to report.
func applyDefaults(cfg *Config) {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	defDur := func(d *Duration, v time.Duration) {
		if *d == 0 {
			*d = Duration(v)
		}
	}
	def(&cfg.StateDir, defaultStateDir)
	if cfg.Workers == 0 {
		cfg.Workers = defaultWorkers
	}
	defDur(&cfg.Metrics.PollerFailureUnready, 30*time.Minute)
	def(&cfg.Log.Level, defaultLogLevel)
	def(&cfg.Log.Format, defaultLogFormat)

	if cfg.SMTP.ReportingMTA == "" {
		cfg.SMTP.ReportingMTA = hostname()
	}
	smtpDefaults(&cfg.SMTP, cfg.SMTP.ReportingMTA)

	def(&cfg.Bounce.Language, defaultBounceLanguage)
	defDur(&cfg.Bounce.RetryFor, defaultBounceRetryFor)
	if cfg.Bounce.RateLimit == 0 {
		cfg.Bounce.RateLimit = defaultBounceRateLimit
	}
	defDur(&cfg.Bounce.RateWindow, defaultBounceWindow)

	def(&cfg.LMTP.TLS, "none")
	defDur(&cfg.LMTP.Timeout, defaultLMTPTimeout)
	if cfg.LMTP.Connections == 0 {
		cfg.LMTP.Connections = defaultLMTPConnections
	}

	for i := range cfg.Connectors {
		c := &cfg.Connectors[i]
		if len(c.Subdomains) == 0 {
			c.Subdomains = []string{"."}
		}
		defDur(&c.Settle, defaultSettle)
		def(&c.Delivery, DeliveryMaildir)
		def(&c.Watch, defaultWatch)
		defDur(&c.PollInterval, defaultPollInterval)
		defDur(&c.ClaimLease, defaultClaimLease)
		if len(c.EnvelopeHeaders) == 0 {
			c.EnvelopeHeaders = append([]string(nil), envelopeHeaderNames...)
		}
		if c.SMTP != nil {
			smtpDefaults(c.SMTP, cfg.SMTP.ReportingMTA)
		}
	}

	for i := range cfg.Pollers {
		cfg.Pollers[i].ApplyDefaults()
	}

	def(&cfg.Spam.Folder, defaultSpamFolder)
	defDur(&cfg.Spam.SpamdTimeout, defaultSpamdTimeout)
}

// ApplyDefaults fills the poller's values left at zero with their defaults, as Load
// does. pollers.New calls it too, so that a Poller built without Load (a test, a
// program embedding mxdrop) gets the same defaults and not others.
func (p *Poller) ApplyDefaults() {
	if p.TLS == "" {
		p.TLS = defaultPollerTLS
	}
	if p.Port == 0 {
		p.Port = pollerPort(p.Protocol, p.TLS)
	}
	for _, d := range []struct {
		v   *Duration
		def time.Duration
	}{{&p.Timeout, defaultPollerTimeout}, {&p.Interval, defaultPollerInterval}, {&p.DuplicateWindow, defaultDuplicateWindow}} {
		if *d.v == 0 {
			*d.v = Duration(d.def)
		}
	}
	for _, d := range []struct {
		v   *string
		def string
	}{{&p.Keep, defaultKeep}, {&p.Mode, defaultMode}, {&p.Auth.Method, defaultPollerAuth}, {&p.Delivery, DeliveryMaildir}} {
		if *d.v == "" {
			*d.v = d.def
		}
	}
	if len(p.Folders) == 0 {
		p.Folders = []string{defaultFolder}
	}
}

// smtpDefaults fills a relay block: port 25 (465 with implicit TLS), tls none, auth
// none, timeout 60s, and the top-level reporting MTA.
func smtpDefaults(s *SMTP, reportingMTA string) {
	if s.TLS == "" {
		s.TLS = "none"
	}
	if s.Port == 0 {
		s.Port = defaultSMTPPort
		if s.TLS == "implicit" {
			s.Port = defaultSMTPSPort
		}
	}
	if s.Auth.Method == "" {
		s.Auth.Method = "none"
	}
	if s.Timeout == 0 {
		s.Timeout = Duration(defaultSMTPTimeout)
	}
	if s.ReportingMTA == "" {
		s.ReportingMTA = reportingMTA
	}
}

// pollerPort is the standard port of protocol with tls: 995/993 for implicit TLS, else
// 110/143 (STARTTLS upgrades the plain port). 0 for an unknown protocol.
func pollerPort(protocol, tls string) int {
	implicit := tls == "implicit"
	switch protocol {
	case "pop3":
		if implicit {
			return 995
		}
		return 110
	case "imap":
		if implicit {
			return 993
		}
		return 143
	}
	return 0
}

// hostname is the default reporting MTA: the host's name, or "localhost" when the
// system does not say or its name is no valid domain name.
func hostname() string {
	if h, err := os.Hostname(); err == nil {
		if d, err := address.ParseDomain(h); err == nil {
			return d
		}
	}
	return "localhost"
}

// resolvePaths makes every path of the configuration absolute and clean, relative ones
// against the configuration file's folder.
func (l *loader) resolvePaths(cfg *Config) {
	abs := func(p *string) {
		if *p == "" {
			return
		}
		if filepath.IsAbs(*p) {
			*p = filepath.Clean(*p)
		} else {
			*p = filepath.Join(l.dir, *p)
		}
	}
	smtp := func(s *SMTP) {
		abs(&s.CAFile)
		abs(&s.Auth.PasswordFile)
		abs(&s.Auth.OAuth.ClientSecretFile)
	}
	abs(&cfg.StateDir)
	smtp(&cfg.SMTP)
	abs(&cfg.LMTP.CAFile)
	if p, ok := strings.CutPrefix(cfg.LMTP.Address, "unix:"); ok && p != "" {
		abs(&p)
		cfg.LMTP.Address = "unix:" + p
	}
	for i := range cfg.Accounts {
		abs(&cfg.Accounts[i].Maildir)
	}
	for i := range cfg.Connectors {
		c := &cfg.Connectors[i]
		abs(&c.DropFolder)
		if c.SMTP != nil {
			smtp(c.SMTP)
		}
	}
	for i := range cfg.Pollers {
		p := &cfg.Pollers[i]
		abs(&p.CAFile)
		abs(&p.Auth.PasswordFile)
		abs(&p.Auth.OAuth.ClientSecretFile)
	}
	abs(&cfg.Spam.WordsFile)
	abs(&cfg.Spam.BlockedSendersFile)
}

// readSecrets reads every *_file secret of a part that is in use (the top-level relay,
// the relay of an active connector, an active poller) into its Secret field. A file
// that cannot be read, or is empty, is reported at the line of its key. Files of an
// inactive part are not read, so a poller can be staged before its secret exists.
func (l *loader) readSecrets(cfg *Config) {
	read := func(path, file string, secret *Secret, other string) {
		if file == "" {
			return
		}
		if *secret != "" {
			return // both set: validate reported it
		}
		data, err := os.ReadFile(file)
		if err != nil {
			l.add(path, "the file must exist and be readable by mxdrop's user", "cannot read the secret: %v", unwrapPathError(err))
			return
		}
		s := strings.TrimSuffix(string(data), "\n")
		s = strings.TrimSuffix(s, "\r")
		if s == "" {
			l.add(path, "the file must hold the "+other+"; one trailing newline is ignored", "%s is empty", file)
			return
		}
		*secret = Secret(s)
	}
	smtp := func(path string, s *SMTP) {
		read(path+".auth.password_file", s.Auth.PasswordFile, &s.Auth.Password, "password")
		read(path+".auth.oauth.client_secret_file", s.Auth.OAuth.ClientSecretFile, &s.Auth.OAuth.ClientSecret, "client secret")
	}
	smtp("smtp", &cfg.SMTP)
	for i := range cfg.Connectors {
		c := &cfg.Connectors[i]
		if c.SMTP != nil && c.IsActive() {
			smtp(fmt.Sprintf("connectors[%d].smtp", i), c.SMTP)
		}
	}
	for i := range cfg.Pollers {
		p := &cfg.Pollers[i]
		if !p.IsActive() {
			continue
		}
		path := fmt.Sprintf("pollers[%d].auth", i)
		read(path+".password_file", p.Auth.PasswordFile, &p.Auth.Password, "password")
		read(path+".oauth.client_secret_file", p.Auth.OAuth.ClientSecretFile, &p.Auth.OAuth.ClientSecret, "client secret")
	}
}

// unwrapPathError gives "open /x: no such file" as "/x: no such file or directory"
// without the operation, which says nothing to an administrator.
func unwrapPathError(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Path + ": " + pe.Err.Error()
	}
	return err.Error()
}
