package configs

import (
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mxdrop/mxdrop/importer/address"
)

// Hints shared by several rules.
const (
	hintAddress = "write a bare address such as alice@example.com"
	hintDomain  = `use ".", a domain such as example.com, or *.example.com`
	hintName    = "a name is letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64 characters"
	hintTLS     = "use one of none, starttls, implicit"
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// validator checks a defaulted, resolved Config as a whole.
type validator struct {
	*loader
	cfg *Config
	// accounts by normalised address, and by normalised alias, to account index.
	byAddr, byAlias map[string]int
	names           map[string]string // connector/poller name -> key path of its first use
}

// validate reports every rule the configuration breaks. It assumes applyDefaults and
// resolvePaths ran: enums are set, paths are absolute.
func (l *loader) validate(cfg *Config) {
	v := &validator{loader: l, cfg: cfg, byAddr: map[string]int{}, byAlias: map[string]int{}, names: map[string]string{}}
	if len(cfg.Connectors) == 0 && len(cfg.Pollers) == 0 {
		v.add("", "add a connector with a drop_folder (see configs/example.yaml), or run without --config for the embedded default", "nothing to do: no connectors and no pollers")
	}
	if cfg.Workers < 0 {
		v.add("workers", "write a positive number; 0 means the default, 16", "%d is negative", cfg.Workers)
	}
	v.enum("log.level", cfg.Log.Level, "debug", "info", "warn", "error")
	v.enum("log.format", cfg.Log.Format, "json", "console")
	if cfg.Metrics.Listen != "" {
		if err := checkHostPort(cfg.Metrics.Listen); err != "" {
			v.add("metrics.listen", `write host:port such as 127.0.0.1:9464, or "" to turn the endpoint off`, "%q is not host:port: %s", cfg.Metrics.Listen, err)
		}
	}
	v.relay("smtp", &cfg.SMTP, false, true)
	v.enum("bounce.language", cfg.Bounce.Language, "en", "de")
	v.notNegative("metrics.poller_failure_unready", cfg.Metrics.PollerFailureUnready)
	v.notNegative("bounce.retry_for", cfg.Bounce.RetryFor)
	v.notNegative("bounce.rate_window", cfg.Bounce.RateWindow)
	v.notNegative("bounce.min_backoff", cfg.Bounce.MinBackoff)
	v.notNegative("bounce.max_backoff", cfg.Bounce.MaxBackoff)
	if lo, hi := cfg.Bounce.MinBackoff, cfg.Bounce.MaxBackoff; lo > 0 && hi > 0 && hi < lo {
		v.add("bounce.max_backoff", "write a max_backoff of at least min_backoff", "%s is shorter than min_backoff %s", hi, lo)
	}
	if cfg.Bounce.RateLimit < 0 {
		v.add("bounce.rate_limit", "write the most DSNs one sender may get per rate_window, such as 10", "%d is negative", cfg.Bounce.RateLimit)
	}
	v.lmtp()
	v.accounts()
	for i := range cfg.Connectors {
		v.connector(i)
	}
	v.overlaps()
	v.places()
	for i := range cfg.Pollers {
		v.poller(i)
	}
	v.spam()
}

// accounts checks every account and builds the address index the other rules use.
func (v *validator) accounts() {
	maildirUsed := v.maildirUsed()
	if len(v.cfg.Accounts) == 0 && maildirUsed {
		v.add("accounts", "add at least one account with an address and a maildir, or deliver over LMTP (delivery: lmtp)", "no accounts: every message would fail")
	}
	// Addresses first, then aliases: when an alias repeats an address, the alias is
	// what is wrong.
	owner := map[string]string{} // normalised address or alias -> who has it, for messages
	norm := make([]string, len(v.cfg.Accounts))
	for i, a := range v.cfg.Accounts {
		p := fmt.Sprintf("accounts[%d].address", i)
		addr, ok := v.address(p, a.Address, true)
		if !ok {
			continue
		}
		norm[i] = addr
		if prev, dup := owner[addr]; dup {
			v.add(p, "an address belongs to one account; merge the two or remove one", "%s is already %s", a.Address, prev)
			continue
		}
		owner[addr] = fmt.Sprintf("the address of accounts[%d] (line %d)", i, v.lineOf(p))
		v.byAddr[addr] = i
	}
	maildirs := map[string]int{}
	catchAll := map[string]int{} // domain -> account index
	for i, a := range v.cfg.Accounts {
		p := fmt.Sprintf("accounts[%d]", i)
		for j, al := range a.Aliases {
			ap := fmt.Sprintf("%s.aliases[%d]", p, j)
			n, ok := v.address(ap, al, true)
			if !ok {
				continue
			}
			if n == norm[i] {
				v.add(ap, "remove it: the address itself is always delivered", "%s is the account's own address", al)
				continue
			}
			if prev, dup := owner[n]; dup {
				v.add(ap, "an address or alias belongs to one account; remove one of them", "%s is already %s", al, prev)
				continue
			}
			owner[n] = fmt.Sprintf("an alias of %s (line %d)", a.Address, v.lineOf(ap))
			v.byAlias[n] = i
		}
		if a.Quota < 0 {
			v.add(p+".quota", "write bytes or a size such as 2G; 0 means no quota", "%d is negative", a.Quota)
		}
		if a.QuotaMessages < 0 {
			v.add(p+".quota_messages", "write the most messages the Maildir may hold; 0 means no limit", "%d is negative", a.QuotaMessages)
		}
		if a.Maildir == "" {
			if maildirUsed {
				v.add(p+".maildir", "give the account's Maildir folder, such as maildir: /var/mail/example.com/alice", "is required")
			} else if a.Quota != 0 || a.QuotaMessages != 0 {
				v.add(p+".quota", "set the quota in the mail server; quota is for Maildirs mxdrop writes", "is only used with a maildir")
			}
		} else if j, dup := maildirs[a.Maildir]; dup {
			v.add(p+".maildir", "each account needs its own Maildir", "%s is also the maildir of %s (line %d)", a.Maildir, v.cfg.Accounts[j].Address, v.lineOf(fmt.Sprintf("accounts[%d].maildir", j)))
		} else {
			maildirs[a.Maildir] = i
		}
		if a.CatchAll && norm[i] != "" {
			d := domainOf(norm[i])
			if j, dup := catchAll[d]; dup {
				v.add(p+".catch_all", "a domain has one catch-all account; set catch_all on one of them", "%s already has a catch-all: %s", d, v.cfg.Accounts[j].Address)
			} else {
				catchAll[d] = i
			}
		}
	}
}

// connector checks connectors[i].
func (v *validator) connector(i int) {
	c := &v.cfg.Connectors[i]
	p := fmt.Sprintf("connectors[%d]", i)
	v.name(p, c.Name)
	if c.DropFolder == "" {
		v.add(p+".drop_folder", "give the folder the MTA drops messages into, such as drop_folder: /var/spool/mxdrop/drop", "is required")
	} else {
		for j := range i {
			o := v.cfg.Connectors[j]
			if o.DropFolder == c.DropFolder {
				v.add(p+".drop_folder", "each connector needs its own drop folder", "%s is also the drop folder of %s (line %d)", c.DropFolder, o.Name, v.lineOf(fmt.Sprintf("connectors[%d].drop_folder", j)))
			} else if o.DropFolder != "" && (within(c.DropFolder, o.DropFolder) || within(o.DropFolder, c.DropFolder)) {
				v.add(p+".drop_folder", "drop folders must not contain one another", "%s overlaps the drop folder of %s (%s)", c.DropFolder, o.Name, o.DropFolder)
			}
		}
	}
	for j, d := range c.Subdomains {
		v.domainPattern(fmt.Sprintf("%s.subdomains[%d]", p, j), d)
	}
	served := map[string]bool{}
	for j, m := range c.Mailboxes {
		if n, ok := v.accountRef(fmt.Sprintf("%s.mailboxes[%d]", p, j), m); ok {
			served[n] = true
		}
	}
	v.delivery(p, c.Delivery)
	if c.UnknownRecipients != "" && c.Delivery == DeliveryLMTP {
		v.address(p+".unknown_recipients", c.UnknownRecipients, true)
	} else if c.UnknownRecipients != "" {
		n, ok := v.accountRef(p+".unknown_recipients", c.UnknownRecipients)
		if ok && len(served) > 0 && !served[n] {
			v.add(p+".unknown_recipients", "add it to mailboxes, or name a served account", "%s is not one of this connector's mailboxes", c.UnknownRecipients)
		}
	}
	v.notNegative(p+".settle", c.Settle)
	v.enum(p+".watch", c.Watch, "auto", "events", "poll")
	v.notNegative(p+".poll_interval", c.PollInterval)
	if c.PollInterval > 0 && c.PollInterval < Duration(10*time.Millisecond) {
		v.add(p+".poll_interval", "write 10ms or more; 1s is the default", "%s lists the folder too often", c.PollInterval)
	}
	v.notNegative(p+".claim_lease", c.ClaimLease)
	if c.ClaimLease > 0 && c.ClaimLease < Duration(time.Second) {
		v.add(p+".claim_lease", "write 1s or more; 2m is the default", "%s leaves a live host no time to renew its lease", c.ClaimLease)
	}
	seen := map[string]bool{}
	for j, h := range c.EnvelopeHeaders {
		hp := fmt.Sprintf("%s.envelope_headers[%d]", p, j)
		switch {
		case !slices.Contains(envelopeHeaderNames, h):
			v.add(hp, "use some of "+strings.Join(envelopeHeaderNames, ", "), "unknown envelope header %q", h)
		case seen[h]:
			v.add(hp, "list each header once", "%s is listed twice", h)
		}
		seen[h] = true
	}
	if c.MaxMessageSize < 0 {
		v.add(p+".max_message_size", "write a size in bytes; 0 means no limit", "%d is negative", c.MaxMessageSize)
	}
	if c.SMTP != nil {
		v.relay(p+".smtp", c.SMTP, true, c.IsActive())
	}
}

// overlaps reports a Maildir inside a drop folder or the other way round: the watcher
// would import the account's own mail, or deliver into the folder it watches.
func (v *validator) overlaps() {
	for i, a := range v.cfg.Accounts {
		if a.Maildir == "" {
			continue
		}
		for _, c := range v.cfg.Connectors {
			if c.DropFolder != "" && (within(a.Maildir, c.DropFolder) || within(c.DropFolder, a.Maildir)) {
				v.add(fmt.Sprintf("accounts[%d].maildir", i), "keep Maildirs and drop folders apart, such as ./var/mail/... and ./var/drop", "%s overlaps the drop folder of connector %s (%s)", a.Maildir, c.Name, c.DropFolder)
			}
		}
	}
}

// pseudoFS lists the kernel's virtual file systems: a Maildir, drop folder or state_dir
// there can never hold mail, and writes into it fail forever (or worse, succeed).
var pseudoFS = []string{"/proc", "/sys", "/dev"}

// places checks that state_dir, the drop folders and the Maildirs are on real file
// systems, and that state_dir and the drop folders stay apart: the watcher would take
// mxdrop's own state files for messages, or state files would land in a drop folder.
func (v *validator) places() {
	onPseudo := func(path, p string) {
		for _, fs := range pseudoFS {
			if p != "" && (p == fs || within(p, fs)) {
				v.add(path, "use a folder on a disk, such as /var/lib/mxdrop/...", "%s is on the kernel's virtual file system %s", p, fs)
				return
			}
		}
	}
	onPseudo("state_dir", v.cfg.StateDir)
	for i, a := range v.cfg.Accounts {
		onPseudo(fmt.Sprintf("accounts[%d].maildir", i), a.Maildir)
	}
	for i, c := range v.cfg.Connectors {
		p := fmt.Sprintf("connectors[%d].drop_folder", i)
		onPseudo(p, c.DropFolder)
		if sd := v.cfg.StateDir; c.DropFolder != "" && sd != "" && (within(c.DropFolder, sd) || within(sd, c.DropFolder)) {
			v.add(p, "keep the drop folder and state_dir apart, such as ./var/drop and ./var/state", "%s overlaps state_dir (%s)", c.DropFolder, sd)
		}
	}
}

// poller checks pollers[i].
func (v *validator) poller(i int) {
	pl := &v.cfg.Pollers[i]
	p := fmt.Sprintf("pollers[%d]", i)
	v.name(p, pl.Name)
	if pl.Protocol == "" {
		v.add(p+".protocol", "use pop3 or imap", "is required")
	} else {
		v.enum(p+".protocol", pl.Protocol, "pop3", "imap")
	}
	v.host(p+".host", pl.Host, true, "the server's name, such as pop.example.com")
	if pl.Port != 0 { // 0 is left only by an unknown protocol, reported above
		v.port(p+".port", pl.Port)
	}
	v.enum(p+".tls", pl.TLS, "none", "starttls", "implicit")
	if pl.IsActive() {
		v.file(p+".ca_file", pl.CAFile)
	}
	v.notNegative(p+".timeout", pl.Timeout)
	v.notNegative(p+".interval", pl.Interval)
	v.notNegative(p+".duplicate_window", pl.DuplicateWindow)
	if pl.MaxPerCycle < 0 {
		v.add(p+".max_per_cycle", "write the most messages fetched per cycle; 0 means no limit", "%d is negative", pl.MaxPerCycle)
	}
	if pl.MaxMessageSize < 0 {
		v.add(p+".max_message_size", "write a size in bytes; 0 means mxdrop's ceiling of 1 GiB", "%d is negative", pl.MaxMessageSize)
	}
	if pl.Username == "" {
		v.add(p+".username", "the login name at the server, often the full address", "is required")
	}

	a := &pl.Auth
	ap := p + ".auth"
	if v.enum(ap+".method", a.Method, "password", "xoauth2") {
		v.bothSet(ap+".password", a.Password != "", a.PasswordFile != "")
		switch a.Method {
		case "password":
			if a.Password == "" && a.PasswordFile == "" {
				v.add(ap+".password_file", "give password_file (a file holding the password) or password: ${ENV_NAME}", "a password is required with method password")
			}
		case "xoauth2":
			if a.Password != "" || a.PasswordFile != "" {
				v.add(ap+".method", "remove password and password_file, or use method: password", "xoauth2 does not use a password")
			}
		}
		v.oauth(ap+".oauth", &a.OAuth, a.Method == "xoauth2")
	}

	if v.enum(p+".keep", pl.Keep, "delete", "forever", "days") {
		switch {
		case pl.Keep == "days" && pl.KeepDays <= 0:
			v.addNear(p+".keep_days", p+".keep", "set keep_days to the number of days, such as keep_days: 30", "keep: days needs keep_days above 0")
		case pl.Keep != "days" && pl.KeepDays != 0:
			v.add(p+".keep_days", "set keep: days, or remove keep_days", "keep_days is only used with keep: days, not keep: %s", pl.Keep)
		}
	}
	if pl.KeepDays < 0 {
		v.add(p+".keep_days", "write a number of days above 0", "%d is negative", pl.KeepDays)
	}

	if v.enum(p+".mode", pl.Mode, "single", "collection") {
		switch pl.Mode {
		case "single":
			if pl.DeliverTo == "" {
				v.addNear(p+".deliver_to", p+".mode", "name the account that receives every message (single mode is the default), or set mode: collection to route by recipient", "is required in single mode")
			}
			if len(pl.AcceptedDomains) > 0 {
				v.add(p+".accepted_domains", "remove it, or set mode: collection", "is only used in collection mode")
			}
			if pl.UnknownRecipients != "" {
				v.add(p+".unknown_recipients", "remove it, or set mode: collection", "is only used in collection mode")
			}
		case "collection":
			if len(pl.AcceptedDomains) == 0 {
				v.addNear(p+".accepted_domains", p+".mode", "list the recipient domains that are ours, such as [example.com]", "is required in collection mode")
			}
			if pl.DeliverTo != "" {
				v.add(p+".deliver_to", "remove it, or set mode: single", "is only used in single mode")
			}
		}
	}
	v.delivery(p, pl.Delivery)
	// Over LMTP the server's user database decides: any address will do.
	ref := v.accountRef
	if pl.Delivery == DeliveryLMTP {
		ref = func(path, value string) (string, bool) { return v.address(path, value, true) }
	}
	if pl.DeliverTo != "" {
		ref(p+".deliver_to", pl.DeliverTo)
	}
	if pl.UnknownRecipients != "" {
		ref(p+".unknown_recipients", pl.UnknownRecipients)
	}
	for j, d := range pl.AcceptedDomains {
		v.domainPattern(fmt.Sprintf("%s.accepted_domains[%d]", p, j), d)
	}
	if pl.Protocol == "pop3" && !(len(pl.Folders) == 1 && pl.Folders[0] == defaultFolder) {
		v.add(p+".folders", "POP3 has only the inbox; remove folders or use protocol: imap", "is imap only")
	}
	for j, f := range pl.Folders {
		if strings.TrimSpace(f) == "" {
			v.add(fmt.Sprintf("%s.folders[%d]", p, j), "write a folder name such as INBOX", "is empty")
		}
	}
}

// maildirUsed reports whether any connector or poller delivers into Maildirs.
func (v *validator) maildirUsed() bool {
	for _, c := range v.cfg.Connectors {
		if c.Delivery != DeliveryLMTP {
			return true
		}
	}
	for _, p := range v.cfg.Pollers {
		if p.Delivery != DeliveryLMTP {
			return true
		}
	}
	return false
}

// delivery checks the delivery key of a connector or poller at block path.
func (v *validator) delivery(block, d string) {
	if v.enum(block+".delivery", d, DeliveryMaildir, DeliveryLMTP) && d == DeliveryLMTP && v.cfg.LMTP.Address == "" {
		v.addNear("lmtp.address", block+".delivery", "add a top-level lmtp block with address: unix:/run/dovecot/lmtp or host:port", "is required with delivery: lmtp")
	}
}

// lmtp checks the top-level lmtp block.
func (v *validator) lmtp() {
	l := &v.cfg.LMTP
	if l.Address != "" {
		if network, addr := l.Network(); network == "unix" {
			if !filepath.IsAbs(addr) {
				v.add("lmtp.address", "write unix:/path/to/socket or host:port", "%q names no socket path", l.Address)
			}
		} else if err := checkHostPort(addr); err != "" {
			v.add("lmtp.address", "write unix:/path/to/socket or host:port such as 127.0.0.1:24", "%q is not host:port: %s", l.Address, err)
		}
	}
	v.enum("lmtp.tls", l.TLS, "none", "starttls")
	v.notNegative("lmtp.timeout", l.Timeout)
	if l.Connections < 0 {
		v.add("lmtp.connections", "write the number of LMTP sessions in parallel; 0 means the default, 8", "%d is negative", l.Connections)
	}
	v.file("lmtp.ca_file", l.CAFile)
}

// spam checks the spam block.
func (v *validator) spam() {
	s := &v.cfg.Spam
	for i, w := range s.Words {
		if strings.TrimSpace(w) == "" {
			v.add(fmt.Sprintf("spam.words[%d]", i), "remove the empty entry", "is empty")
		}
	}
	v.file("spam.words_file", s.WordsFile)
	for i, b := range s.BlockedSenders {
		p := fmt.Sprintf("spam.blocked_senders[%d]", i)
		hint := "use an address (spammer@example.com) or a whole domain (@example.com)"
		if d, ok := strings.CutPrefix(b, "@"); ok {
			if _, err := address.ParseDomain(d); err != nil {
				v.add(p, hint, "%q is not a domain", b)
			}
		} else if _, err := normAddress(b); err != nil {
			v.add(p, hint, "%q is not an address or @domain", b)
		}
	}
	v.file("spam.blocked_senders_file", s.BlockedSendersFile)
	if s.Spamd != "" {
		if err := checkHostPort(s.Spamd); err != "" {
			v.add("spam.spamd", `write host:port such as 127.0.0.1:783, or "" for no spamd`, "%q is not host:port: %s", s.Spamd, err)
		}
	}
	v.notNegative("spam.spamd_timeout", s.SpamdTimeout)
	if strings.HasPrefix(s.Folder, ".") || strings.ContainsAny(s.Folder, "/\x00\r\n") {
		v.add("spam.folder", "write a folder name such as Junk; subfolders are written Parent.Child", "%q is not a Maildir++ folder name", s.Folder)
	}
}

// relay checks an smtp block at path. An override must name its host; the block's
// files and credentials are checked only when inUse (an inactive connector's relay is
// not).
func (v *validator) relay(path string, s *SMTP, override, inUse bool) {
	if override && s.Host == "" {
		v.addNear(path+".host", path, "set host, or remove the smtp block to use the top-level relay", "is required in a connector's smtp override")
	}
	v.host(path+".host", s.Host, false, `the relay's name or address, such as 127.0.0.1; "" for no relay`)
	v.port(path+".port", s.Port)
	v.enum(path+".tls", s.TLS, "none", "starttls", "implicit")
	if s.Host != "" && inUse {
		v.file(path+".ca_file", s.CAFile)
	}
	v.notNegative(path+".timeout", s.Timeout)
	if _, err := address.ParseDomain(s.ReportingMTA); err != nil {
		v.add(path+".reporting_mta", "write this host's name, such as mx.example.com", "%q is not a host name", s.ReportingMTA)
	}
	a := &s.Auth
	ap := path + ".auth"
	if !v.enum(ap+".method", a.Method, "none", "plain", "login", "xoauth2") {
		return
	}
	v.bothSet(ap+".password", a.Password != "", a.PasswordFile != "")
	hasPassword := a.Password != "" || a.PasswordFile != ""
	switch a.Method {
	case "none":
		if hasPassword {
			v.add(ap+".method", "set method: plain or login to use the password, or remove it", "a password is set but method is none")
		}
	case "plain", "login":
		if a.Username == "" {
			v.add(ap+".username", "the relay login name", "is required with method %s", a.Method)
		}
		if !hasPassword {
			v.add(ap+".password_file", "give password_file (a file holding the password) or password: ${ENV_NAME}", "a password is required with method %s", a.Method)
		}
	case "xoauth2":
		if a.Username == "" {
			v.add(ap+".username", "the mailbox the token belongs to", "is required with method xoauth2")
		}
		if hasPassword {
			v.add(ap+".method", "remove password and password_file, or use method: plain or login", "xoauth2 does not use a password")
		}
	}
	v.oauth(ap+".oauth", &a.OAuth, a.Method == "xoauth2")
}

// oauth checks an OAuth client; required says whether the auth method uses it.
func (v *validator) oauth(path string, o *OAuth, required bool) {
	if o.Provider == "" {
		if required {
			v.add(path+".provider", "use one of google, microsoft, custom", "is required with method xoauth2")
		}
	} else {
		v.enum(path+".provider", o.Provider, "google", "microsoft", "custom")
	}
	if required && o.ClientID == "" {
		v.add(path+".client_id", "the OAuth client (application) id registered with the provider", "is required with method xoauth2")
	}
	v.bothSet(path+".client_secret", o.ClientSecret != "", o.ClientSecretFile != "")
	if required && o.Provider == "custom" && o.TokenURL == "" {
		v.add(path+".token_url", "the provider's token endpoint, such as https://login.example.com/oauth2/token", "is required with provider custom")
	}
	for _, u := range []struct{ key, val string }{{"token_url", o.TokenURL}, {"auth_url", o.AuthURL}} {
		if u.val == "" {
			continue
		}
		if pu, err := url.Parse(u.val); err != nil || pu.Scheme != "https" || pu.Host == "" {
			v.add(path+"."+u.key, "write an https:// URL", "%q is not an https URL", u.val)
		}
	}
}

// enum reports value at path when it is not one of allowed, and says whether it is.
func (v *validator) enum(path, value string, allowed ...string) bool {
	if slices.Contains(allowed, value) {
		return true
	}
	v.add(path, "use one of "+strings.Join(allowed, ", "), "unknown value %q", value)
	return false
}

// name checks the name of a connector or poller at block path: required, usable in
// file names and metric labels, and unique among connectors and pollers together.
func (v *validator) name(block, name string) {
	path := block + ".name"
	switch {
	case name == "":
		v.add(path, "name it, such as name: mx; logs, metrics and state files use the name", "is required")
	case !nameRE.MatchString(name):
		v.add(path, hintName, "%q is not a valid name", name)
	default:
		if prev, dup := v.names[name]; dup {
			v.add(path, "connectors and pollers need distinct names", "%q is already the name of %s (line %d)", name, prev, v.lineOf(prev+".name"))
			return
		}
		v.names[name] = block
	}
}

// address checks an address at path and returns it normalised.
func (v *validator) address(path, addr string, required bool) (string, bool) {
	if addr == "" {
		if required {
			v.add(path, hintAddress, "is required")
		}
		return "", false
	}
	n, err := normAddress(addr)
	if err != nil {
		v.add(path, hintAddress, "%q is not an address", addr)
		return "", false
	}
	return n, true
}

// accountRef checks that value at path names an account by its address, and returns
// the normalised address.
func (v *validator) accountRef(path, value string) (string, bool) {
	n, ok := v.address(path, value, true)
	if !ok {
		return "", false
	}
	if _, ok := v.byAddr[n]; ok {
		return n, true
	}
	if i, ok := v.byAlias[n]; ok {
		v.add(path, "name the account by its address", "%s is an alias of %s", value, v.cfg.Accounts[i].Address)
		return "", false
	}
	var known []string
	for _, a := range v.cfg.Accounts {
		known = append(known, a.Address)
	}
	hint := "add an account with this address"
	if len(known) > 0 {
		hint = "accounts are: " + strings.Join(known, ", ")
	}
	v.add(path, hint, "%s names no account", value)
	return "", false
}

// domainPattern checks an accepted-domain pattern.
func (v *validator) domainPattern(path, d string) {
	if d == "." {
		return
	}
	if _, err := address.ParseDomain(strings.TrimPrefix(d, "*.")); err != nil {
		v.add(path, hintDomain, "%q is not a domain pattern", d)
	}
}

// host checks a host name or address written without a port.
func (v *validator) host(path, h string, required bool, what string) {
	if h == "" {
		if required {
			v.add(path, what, "is required")
		}
		return
	}
	if _, _, err := net.SplitHostPort(h); err == nil || strings.ContainsAny(h, "/ \t") {
		v.add(path, "write the host alone and the port in port:", "%q is not a host name or address", h)
	}
}

// port checks a TCP port.
func (v *validator) port(path string, p int) {
	if p < 1 || p > 65535 {
		v.add(path, "a port is 1 to 65535; 0 means the default", "%d is out of range", p)
	}
}

// file checks that a configured file can be opened.
func (v *validator) file(path, name string) {
	if name == "" {
		return
	}
	f, err := os.Open(name)
	if err != nil {
		v.add(path, "the file must exist and be readable by mxdrop's user", "cannot read: %s", unwrapPathError(err))
		return
	}
	f.Close()
}

// bothSet reports a secret given both directly and as a file.
func (v *validator) bothSet(path string, direct, file bool) {
	if direct && file {
		v.add(path, "keep one of them", "both %s and %s_file are set", path[strings.LastIndexByte(path, '.')+1:], path[strings.LastIndexByte(path, '.')+1:])
	}
}

func (v *validator) notNegative(path string, d Duration) {
	if d < 0 {
		v.add(path, "write a positive duration such as 30s; 0 means the default", "%s is negative", d)
	}
}

// normAddress returns addr in the form the importer compares (local part and domain
// lower-cased, domain in ASCII), or an error when addr is not a bare address.
func normAddress(addr string) (string, error) {
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return "", fmt.Errorf("no local part or domain")
	}
	a, err := mail.ParseAddress(addr)
	if err != nil {
		return "", err
	}
	if a.Name != "" || a.Address != addr {
		return "", fmt.Errorf("not a bare address")
	}
	d, err := address.ParseDomain(addr[at+1:])
	if err != nil {
		return "", err
	}
	return strings.ToLower(addr[:at]) + "@" + d, nil
}

// checkHostPort returns "" when s is host:port with a port of 1 to 65535, else why not.
func checkHostPort(s string) string {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return ae.Err
		}
		return err.Error()
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return "the port must be a number from 1 to 65535"
	}
	return ""
}

// within reports whether path a is b or inside b (both absolute and clean).
func within(a, b string) bool {
	rel, err := filepath.Rel(b, a)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}
