package bounce

import (
	"bufio"
	"fmt"
	"io"
	"sort"
	"strings"

	"golang.org/x/net/idna"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer"
)

// Recipient map formats of WriteRecipientMap.
const (
	FormatPostfix = "postfix"
	FormatExim    = "exim"
	FormatPlain   = "plain"
)

// WriteRecipientMap writes the recipients the active connectors of cfg accept, for
// `mxdrop export-recipients`, so the MTA can reject unknown recipients at SMTP time
// instead of accepting mail mxdrop would bounce. The list is sorted, one entry a
// line, and depends only on cfg.
//
// Entries: every account address and alias a connector serves (its mailboxes, all
// accounts when it names none) in a domain the connector accepts, lower-cased, the
// domain in its ASCII form and, for an internationalised domain, also in Unicode.
// A domain where mxdrop takes every recipient, because an account of that domain is
// its catch_all or because the connector has unknown_recipients and names the domain
// in subdomains, is one domain entry:
//
//	postfix  "alice@example.com OK" and "@example.com OK": the key syntax of
//	         relay_recipient_maps, where "@domain" matches every address of the domain
//	         (postmap it as a hash/lmdb table). Set recipient_delimiter = + so that
//	         alice+tag@example.com is found as alice@example.com, as mxdrop routes it.
//	exim     "alice@example.com" and "*@example.com": an Exim address list file, e.g.
//	         recipients = ${if exists{/etc/exim4/mxdrop}{/etc/exim4/mxdrop}}; a
//	         connector with unknown_recipients and "*.example.com" gives
//	         "*@*.example.com". Use local_part_suffix = +* for +tag addresses.
//	plain    the addresses and "@domain" entries alone.
//
// A connector that accepts every domain (subdomains ["."]) lists the addresses of
// all accounts it serves and the catch-all domains; only its unknown_recipients,
// which takes every address of every domain, cannot be written as a map, and neither
// can unknown_recipients with "*.example.com" in the postfix and plain formats:
// WriteRecipientMap fails then, naming the connector, as a map would make the MTA
// reject mail mxdrop accepts. It also fails for an unknown format and for an address
// that cannot be written as an entry (white space, control characters).
func WriteRecipientMap(w io.Writer, cfg *configs.Config, format string) error {
	switch format {
	case FormatPostfix, FormatExim, FormatPlain:
	default:
		return fmt.Errorf("recipient map: unknown format %q (postfix, exim, plain)", format)
	}
	entries := map[string]bool{}
	add := func(local, domain string) {
		for _, d := range domainForms(domain) {
			if local == "" {
				if format == FormatExim {
					entries["*@"+d] = true
				} else {
					entries["@"+d] = true
				}
				continue
			}
			entries[local+"@"+d] = true
		}
	}
	for i := range cfg.Connectors {
		c := &cfg.Connectors[i]
		if !c.IsActive() {
			continue
		}
		patterns := c.Subdomains
		if len(patterns) == 0 {
			patterns = []string{"."}
		}
		r, err := importer.NewRouter(nil, patterns, nil, "", "")
		if err != nil {
			return fmt.Errorf("recipient map: connector %s: %w", c.Name, err)
		}
		serve := map[string]bool{}
		for _, m := range c.Mailboxes {
			n, ok := importer.NormalizeAddress(m)
			if !ok {
				return fmt.Errorf("recipient map: connector %s: mailbox %q is not an address", c.Name, m)
			}
			serve[n] = true
		}
		for _, a := range cfg.Accounts {
			addr, ok := importer.NormalizeAddress(a.Address)
			if !ok {
				return fmt.Errorf("recipient map: account %q is not an address", a.Address)
			}
			if len(serve) > 0 && !serve[addr] {
				continue
			}
			for _, x := range append([]string{a.Address}, a.Aliases...) {
				n, ok := importer.NormalizeAddress(x)
				if !ok {
					return fmt.Errorf("recipient map: address %q of account %s is not an address", x, a.Address)
				}
				local, domain := n[:strings.LastIndexByte(n, '@')], n[strings.LastIndexByte(n, '@')+1:]
				if r.Accepts(domain) {
					add(local, domain)
				}
			}
			if a.CatchAll {
				if domain := addr[strings.LastIndexByte(addr, '@')+1:]; r.Accepts(domain) {
					add("", domain)
				}
			}
		}
		if c.UnknownRecipients == "" {
			continue
		}
		for _, p := range patterns {
			p = strings.TrimSpace(p)
			switch {
			case p == ".":
				return fmt.Errorf("recipient map: connector %s takes every recipient of every domain (subdomains \".\" with unknown_recipients): no map can list that; leave the MTA's recipient check off for it", c.Name)
			case strings.HasPrefix(p, "*."):
				if format != FormatExim {
					return fmt.Errorf("recipient map: connector %s takes every recipient of any subdomain of %s (unknown_recipients): only the exim format can list that", c.Name, p[2:])
				}
				for _, d := range domainForms(importer.NormalizeDomain(p[2:])) {
					entries["*@*."+d] = true
				}
			default:
				add("", importer.NormalizeDomain(p))
			}
		}
	}
	list := make([]string, 0, len(entries))
	for e := range entries {
		if strings.ContainsFunc(e, func(r rune) bool { return r <= ' ' || r == 0x7f }) ||
			(format == FormatExim && strings.ContainsAny(e[:1], "!^#+")) {
			return fmt.Errorf("recipient map: %q cannot be written as an entry", e)
		}
		list = append(list, e)
	}
	sort.Strings(list)
	bw := bufio.NewWriter(w)
	for _, e := range list {
		if format == FormatPostfix {
			e += " OK"
		}
		bw.WriteString(e)
		bw.WriteByte('\n')
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("recipient map: write: %w", err)
	}
	return nil
}

// domainForms returns a normalised (ASCII) domain and, when it is an
// internationalised one, its Unicode form: an MTA may look up either.
func domainForms(d string) []string {
	u, err := idna.Lookup.ToUnicode(d)
	if err != nil || u == d {
		return []string{d}
	}
	return []string{d, u}
}
