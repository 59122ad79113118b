package configs

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/mxdrop/mxdrop/importer/address"
)

// Describe writes a human-readable account of what cfg means, as `mxdrop check-config`
// prints it: the relay, bounce policy, accounts, each connector with its routes in
// routing order, each poller, and the spam check. Secrets are never written, only
// whether they are set. cfg must come from Load, Parse or Default. The only error is
// one from writing to w.
func Describe(w io.Writer, cfg *Config) error {
	d := &describer{cfg: cfg}
	d.general()
	d.relay()
	d.accounts()
	d.connectors()
	d.pollers()
	d.spam()
	if _, err := w.Write(d.b.Bytes()); err != nil {
		return fmt.Errorf("describe config: %w", err)
	}
	return nil
}

type describer struct {
	cfg *Config
	b   bytes.Buffer
}

func (d *describer) section(format string, args ...any) {
	if d.b.Len() > 0 {
		d.b.WriteByte('\n')
	}
	fmt.Fprintf(&d.b, format+"\n", args...)
}

// kv writes one "key  value" line at an indent of depth levels.
func (d *describer) kv(depth int, key, format string, args ...any) {
	fmt.Fprintf(&d.b, "%s%-*s%s\n", strings.Repeat("  ", depth), 22-2*depth, key, fmt.Sprintf(format, args...))
}

func (d *describer) general() {
	c := d.cfg
	file := c.File
	if file == "" {
		file = "the embedded default (no --config)"
	}
	d.section("Configuration %s", file)
	d.kv(1, "state folder", "%s", c.StateDir)
	d.kv(1, "workers", "%d concurrent imports", c.Workers)
	d.kv(1, "log", "level %s, format %s", c.Log.Level, c.Log.Format)
	if c.Metrics.Listen == "" {
		d.kv(1, "metrics", "off")
	} else {
		d.kv(1, "metrics", "http://%s/metrics, /healthz, /readyz", c.Metrics.Listen)
	}
}

func (d *describer) relay() {
	c := d.cfg
	d.section("Relay (smtp)")
	d.relayLines(1, c.SMTP, true)
	d.kv(1, "reporting MTA", "%s (DSNs come from MAILER-DAEMON@%s)", c.SMTP.ReportingMTA, c.SMTP.ReportingMTA)
	d.kv(1, "bounces", "DSNs in %s; the outbox retries each for %s; at most %d per sender per %s",
		languageName(c.Bounce.Language), c.Bounce.RetryFor, c.Bounce.RateLimit, c.Bounce.RateWindow)
}

// relayLines describes a relay; read is false for the relay of an inactive connector,
// whose secret files Load does not read.
func (d *describer) relayLines(depth int, s SMTP, read bool) {
	if s.Host == "" {
		d.kv(depth, "relay", "none: DSNs are written to ImportFailed/, not sent")
		return
	}
	d.kv(depth, "relay", "%s, tls %s, timeout %s", hostPort(s.Host, s.Port), s.TLS, s.Timeout)
	if s.CAFile != "" {
		d.kv(depth, "extra CA", "%s", s.CAFile)
	}
	switch s.Auth.Method {
	case "none":
		d.kv(depth, "auth", "none")
	case "xoauth2":
		d.kv(depth, "auth", "xoauth2 as %s; %s", s.Auth.Username, oauthText(s.Auth.OAuth, read))
	default:
		d.kv(depth, "auth", "%s as %s; password %s", s.Auth.Method, s.Auth.Username, secretText(s.Auth.Password, s.Auth.PasswordFile, read))
	}
}

func (d *describer) accounts() {
	d.section("Accounts (%d)", len(d.cfg.Accounts))
	if len(d.cfg.Accounts) == 0 {
		fmt.Fprintf(&d.b, "  none\n")
	}
	for _, a := range d.cfg.Accounts {
		fmt.Fprintf(&d.b, "  %s\n", a.Address)
		if len(a.Aliases) > 0 {
			d.kv(2, "aliases", "%s", strings.Join(a.Aliases, ", "))
		}
		if a.CatchAll {
			d.kv(2, "catch-all", "every unknown recipient of %s", domainOf(a.Address))
		}
		if a.Maildir != "" {
			d.kv(2, "maildir", "%s", a.Maildir)
		}
		if a.Quota != 0 || a.QuotaMessages != 0 {
			d.kv(2, "quota", "%s", quotaText(a.Quota, a.QuotaMessages))
		}
		if a.SpamCheck {
			d.kv(2, "spam check", "yes")
		}
	}
}

func (d *describer) connectors() {
	d.section("Connectors (%d)", len(d.cfg.Connectors))
	if len(d.cfg.Connectors) == 0 {
		fmt.Fprintf(&d.b, "  none\n")
	}
	for i := range d.cfg.Connectors {
		c := &d.cfg.Connectors[i]
		fmt.Fprintf(&d.b, "  %s (%s)\n", c.Name, activeText(c.IsActive()))
		d.kv(2, "drop folder", "%s (unimportable files go to ImportFailed/ inside it)", c.DropFolder)
		d.kv(2, "accepted domains", "%s", domainsText(c.Subdomains))
		d.kv(2, "delivery", "%s", d.deliveryText(c.Delivery))
		if len(c.Mailboxes) == 0 {
			d.kv(2, "mailboxes", "all accounts")
		} else {
			d.kv(2, "mailboxes", "%s", strings.Join(c.Mailboxes, ", "))
		}
		d.kv(2, "settle", "%s (a file is taken once unchanged this long)", c.Settle)
		switch c.Watch {
		case "events":
			d.kv(2, "watch", "events (fsnotify; other hosts' writes on a share are found only by the rescan)")
		case "poll":
			d.kv(2, "watch", "poll: listed every %s, events kept for local writers", c.PollInterval)
		default:
			d.kv(2, "watch", "auto: events on a local file system, listed every %s on a network or FUSE share", c.PollInterval)
		}
		d.kv(2, "claim lease", "%s (on a share, a dead host's claims are adopted after this long)", c.ClaimLease)
		d.kv(2, "envelope from", "%s, else To/Cc", strings.Join(c.EnvelopeHeaders, ", "))
		if c.KeepImported {
			d.kv(2, "imported files", "moved to Imported/")
		} else {
			d.kv(2, "imported files", "deleted")
		}
		d.kv(2, "max message size", "%s", sizeText(c.MaxMessageSize))
		d.kv(2, "spam check", "%s", yesNo(c.SpamCheck))
		switch relay := c.Relay(d.cfg.SMTP); {
		case !c.BounceEnabled():
			d.kv(2, "bounces", "off: failed recipients get no DSN")
		case relay.Host == "":
			d.kv(2, "bounces", "on, but no relay: DSNs are written to ImportFailed/")
		case c.SMTP != nil:
			d.kv(2, "bounces", "on, through this connector's relay:")
			d.relayLines(3, *c.SMTP, c.IsActive())
		default:
			d.kv(2, "bounces", "on, through the relay %s", hostPort(relay.Host, relay.Port))
		}
		d.routes(c.Subdomains, c.Mailboxes, c.UnknownRecipients, c.BounceEnabled())
	}
}

// routes writes the routing table of a source, in the order the importer tries the
// rules: address, alias, +tag stripped, domain catch-all, unknown_recipients, else
// failed 5.1.1; and recipients of domains not accepted.
func (d *describer) routes(domains, mailboxes []string, unknownTo string, bounce bool) {
	serve := map[string]bool{}
	for _, m := range mailboxes {
		if n, err := normAddress(m); err == nil {
			serve[n] = true
		}
	}
	var served []Account
	var outside []string // explicitly served mailboxes of domains not accepted
	for _, a := range d.cfg.Accounts {
		n, err := normAddress(a.Address)
		if err != nil || (len(serve) > 0 && !serve[n]) {
			continue
		}
		served = append(served, a)
		if len(serve) > 0 && !accepts(domains, domainOf(n)) {
			outside = append(outside, a.Address)
		}
	}
	type row struct{ rule, rcpt, to string }
	var rows []row
	// Only addresses of accepted domains appear: others never reach these rules.
	ok := func(addr string) bool {
		n, err := normAddress(addr)
		return err == nil && accepts(domains, domainOf(n))
	}
	for _, a := range served {
		if ok(a.Address) {
			rows = append(rows, row{"address", a.Address, a.Address})
		}
	}
	for _, a := range served {
		for _, al := range a.Aliases {
			if ok(al) {
				rows = append(rows, row{"alias", al, a.Address})
			}
		}
	}
	if len(rows) > 0 {
		rows = append(rows, row{"+tag", "local+tag@domain", "as local@domain above"})
	}
	for _, a := range served {
		if a.CatchAll && ok(a.Address) {
			rows = append(rows, row{"catch-all", "*@" + domainOf(a.Address), a.Address})
		}
	}
	switch {
	case unknownTo != "":
		rows = append(rows, row{"unknown", "any other recipient", unknownTo + " (unknown_recipients)"})
	case bounce:
		rows = append(rows, row{"unknown", "any other recipient", "failed 5.1.1, bounced"})
	default:
		rows = append(rows, row{"unknown", "any other recipient", "failed 5.1.1, no DSN"})
	}
	if !slices.Contains(domains, ".") {
		rows = append(rows, row{"not ours", "other domains", "failed 5.1.2; ignored when read from To/Cc"})
	}
	fmt.Fprintf(&d.b, "    routes, in order:\n")
	w0, w1 := 0, 0
	for _, r := range rows {
		w0, w1 = max(w0, len(r.rule)), max(w1, len(r.rcpt))
	}
	for _, r := range rows {
		fmt.Fprintf(&d.b, "      %-*s  %-*s  -> %s\n", w0, r.rule, w1, r.rcpt, r.to)
	}
	if len(outside) > 0 {
		fmt.Fprintf(&d.b, "    note: no mail reaches %s here: not an accepted domain\n", strings.Join(outside, ", "))
	}
}

func (d *describer) pollers() {
	d.section("Pollers (%d)", len(d.cfg.Pollers))
	if len(d.cfg.Pollers) == 0 {
		fmt.Fprintf(&d.b, "  none\n")
	}
	for i := range d.cfg.Pollers {
		p := &d.cfg.Pollers[i]
		fmt.Fprintf(&d.b, "  %s (%s)\n", p.Name, activeText(p.IsActive()))
		d.kv(2, "server", "%s %s, tls %s, timeout %s", p.Protocol, hostPort(p.Host, p.Port), p.TLS, p.Timeout)
		if p.CAFile != "" {
			d.kv(2, "extra CA", "%s", p.CAFile)
		}
		if p.Auth.Method == "xoauth2" {
			d.kv(2, "login", "%s with xoauth2; %s", p.Username, oauthText(p.Auth.OAuth, p.IsActive()))
		} else {
			d.kv(2, "login", "%s with a password; password %s", p.Username, secretText(p.Auth.Password, p.Auth.PasswordFile, p.IsActive()))
		}
		limit := "no limit per cycle"
		if p.MaxPerCycle > 0 {
			limit = fmt.Sprintf("at most %d messages per cycle", p.MaxPerCycle)
		}
		d.kv(2, "schedule", "every %s, %s", p.Interval, limit)
		if p.Protocol == "imap" {
			idle := "IDLE off"
			if p.IDLEEnabled() {
				idle = "IDLE on, the interval is the fallback"
			}
			d.kv(2, "folders", "%s; %s", strings.Join(p.Folders, ", "), idle)
		}
		switch {
		case d.cfg.PollersAlwaysDelete:
			d.kv(2, "after delivery", "deleted from the server (pollers_always_delete)")
		case p.Keep == "forever":
			d.kv(2, "after delivery", "kept on the server")
		case p.Keep == "days":
			d.kv(2, "after delivery", "kept on the server for %d days, then deleted", p.KeepDays)
		default:
			d.kv(2, "after delivery", "deleted from the server")
		}
		d.kv(2, "delivery", "%s", d.deliveryText(p.Delivery))
		d.kv(2, "duplicates", "a message seen again within %s is not delivered again", p.DuplicateWindow)
		if p.MaxMessageSize > 0 {
			d.kv(2, "max message size", "%s", sizeText(p.MaxMessageSize))
		} else {
			d.kv(2, "max message size", "%d bytes (not set: mxdrop's ceiling for pollers)", PollerMessageCeiling)
		}
		d.kv(2, "spam check", "%s", yesNo(p.SpamCheck))
		if p.Mode == "collection" {
			d.kv(2, "mode", "collection: routed by recipient within %s", domainsText(p.AcceptedDomains))
			d.routes(p.AcceptedDomains, nil, p.UnknownRecipients, true)
		} else {
			d.kv(2, "mode", "single: every message goes to %s", p.DeliverTo)
		}
	}
}

func (d *describer) spam() {
	s := &d.cfg.Spam
	d.section("Spam")
	list := func(n int, file string) string {
		t := "none"
		if n > 0 {
			t = fmt.Sprintf("%d listed", n)
		}
		if file != "" {
			t += ", and those in " + file
		}
		return t
	}
	d.kv(1, "words", "%s", list(len(s.Words), s.WordsFile))
	d.kv(1, "blocked senders", "%s", list(len(s.BlockedSenders), s.BlockedSendersFile))
	if s.Spamd == "" {
		d.kv(1, "spamd", "off")
	} else {
		d.kv(1, "spamd", "%s, timeout %s", s.Spamd, s.SpamdTimeout)
	}
	d.kv(1, "folder", "%s (Maildir++ .%s)", s.Folder, s.Folder)
	var who []string
	for _, a := range d.cfg.Accounts {
		if a.SpamCheck {
			who = append(who, "account "+a.Address)
		}
	}
	for _, c := range d.cfg.Connectors {
		if c.SpamCheck {
			who = append(who, "connector "+c.Name)
		}
	}
	for _, p := range d.cfg.Pollers {
		if p.SpamCheck {
			who = append(who, "poller "+p.Name)
		}
	}
	if len(who) == 0 {
		d.kv(1, "checked for", "nothing: no account, connector or poller sets spam_check")
	} else {
		d.kv(1, "checked for", "%s", strings.Join(who, ", "))
	}
}

// secretText says whether a secret is set, never what it is. read is false for the
// secret of an inactive part, whose file Load does not read.
// deliveryText says where a connector's or poller's messages are delivered.
func (d *describer) deliveryText(delivery string) string {
	if delivery != DeliveryLMTP {
		return "into the accounts' Maildirs (written by mxdrop)"
	}
	l := d.cfg.LMTP
	return fmt.Sprintf("over LMTP to %s, tls %s, %d sessions, timeout %s (the server decides each recipient)", l.Address, l.TLS, l.Connections, l.Timeout)
}

// quotaText writes a Maildir++ quota.
func quotaText(bytes Size, messages int64) string {
	var parts []string
	if bytes > 0 {
		parts = append(parts, fmt.Sprintf("%s bytes (%d)", bytes, int64(bytes)))
	}
	if messages > 0 {
		parts = append(parts, fmt.Sprintf("%d messages", messages))
	}
	return strings.Join(parts, ", ") + " (Maildir++ maildirsize)"
}

func secretText(s Secret, file string, read bool) string {
	switch {
	case s != "" && file != "":
		return "set (from " + file + ")"
	case s != "":
		return "set"
	case file != "" && !read:
		return "not read yet (" + file + " is read once active)"
	}
	return "not set"
}

// oauthText describes an OAuth client; read is false when Load did not read its files.
func oauthText(o OAuth, read bool) string {
	t := fmt.Sprintf("oauth provider %s, client %s, client secret %s", o.Provider, o.ClientID, secretText(o.ClientSecret, o.ClientSecretFile, read))
	if o.TokenURL != "" {
		t += ", token URL " + o.TokenURL
	}
	return t
}

func activeText(active bool) string {
	if active {
		return "active"
	}
	return "inactive"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func sizeText(n int64) string {
	if n <= 0 {
		return "no limit"
	}
	return fmt.Sprintf("%d bytes", n)
}

func languageName(l string) string {
	switch l {
	case "de":
		return "German"
	case "en":
		return "English"
	}
	return l
}

func domainsText(ds []string) string {
	if slices.Contains(ds, ".") {
		return `all (".")`
	}
	return strings.Join(ds, ", ")
}

func hostPort(h string, p int) string { return net.JoinHostPort(h, strconv.Itoa(p)) }

func domainOf(addr string) string { return addr[strings.LastIndexByte(addr, '@')+1:] }

// accepts reports whether a normalised domain matches one of the patterns, as the
// importer's router decides it.
func accepts(patterns []string, domain string) bool {
	for _, p := range patterns {
		switch {
		case p == ".":
			return true
		case strings.HasPrefix(p, "*."):
			if s, err := address.ParseDomain(p[2:]); err == nil && strings.HasSuffix(domain, "."+s) {
				return true
			}
		default:
			if s, err := address.ParseDomain(p); err == nil && s == domain {
				return true
			}
		}
	}
	return false
}
