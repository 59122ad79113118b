package importer

import (
	"fmt"
	"strings"

	"golang.org/x/net/idna"

	"github.com/mxdrop/mxdrop/configs"
)

// NormalizeAddress returns an address in the one form mxdrop compares: local part and
// domain lower-cased, the domain in its ASCII (punycode) form, surrounding angle
// brackets, a source route and a trailing dot removed. ok is false when the input has
// no '@' or an empty part. Matching is case-insensitive by design: mail administrators
// expect Alice@Example.com and alice@example.com to be one mailbox.
func NormalizeAddress(addr string) (norm string, ok bool) {
	a := strings.TrimSpace(addr)
	a = strings.TrimPrefix(a, "<")
	a = strings.TrimSuffix(a, ">")
	if i := strings.LastIndexByte(a, ':'); i >= 0 && strings.HasPrefix(a, "@") {
		a = a[i+1:] // RFC 5321 section 4.1.2 source route, ignored
	}
	a = strings.TrimSpace(a)
	at := strings.LastIndexByte(a, '@')
	if at <= 0 || at == len(a)-1 {
		return "", false
	}
	local, domain := strings.ToLower(a[:at]), NormalizeDomain(a[at+1:])
	if !validLocal(local) || !validDomain(domain) {
		return "", false
	}
	return local + "@" + domain, true
}

// validLocal reports whether a local part is a quoted string or free of the characters
// RFC 5322 reserves (white space, controls, specials). QUIRK: dots are not checked, as
// "a..b" and "a." exist in the wild.
func validLocal(l string) bool {
	if len(l) >= 2 && l[0] == '"' && l[len(l)-1] == '"' {
		return !strings.ContainsAny(l, "\r\n\x00")
	}
	return l != "" && !strings.ContainsFunc(l, func(r rune) bool {
		return r <= ' ' || r == 0x7f || strings.ContainsRune(`<>()[]\,;:@"`, r)
	})
}

// validDomain reports whether a normalised domain is a domain literal ("[192.0.2.1]")
// or labels of letters, digits, '-', '_' and non-ASCII characters (IDNA may reject a
// name that is still some MTA's idea of a domain), none of them empty.
func validDomain(d string) bool {
	if strings.HasPrefix(d, "[") && strings.HasSuffix(d, "]") && len(d) > 2 {
		return !strings.ContainsFunc(d[1:len(d)-1], func(r rune) bool {
			return r <= ' ' || r == 0x7f || r == '[' || r == ']' || r == '\\'
		})
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r >= 0x80) {
				return false
			}
		}
	}
	return true
}

// NormalizeDomain lower-cases a domain and converts it to ASCII, so that a domain
// written in Unicode and its punycode form compare equal. A domain IDNA rejects is
// kept lower-cased as it is.
func NormalizeDomain(d string) string {
	d = strings.TrimSpace(strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), "."))
	if a, err := idna.Lookup.ToASCII(d); err == nil {
		return a
	}
	return d
}

// Route is the routing decision for one recipient.
type Route struct {
	Recipient string // as it arrived
	Account   string // the account's address; "" unless routed
	Rule      string // address | alias | tag | catch_all | deliver_to | unknown_recipients | not_accepted | unknown | invalid
	Status    Status // for failed recipients
	Ignored   bool   // not ours: no delivery, no bounce
}

// Router maps recipients to accounts. It is immutable and safe for concurrent use.
type Router struct {
	accept    []string // normalised patterns: "." | "example.com" | "*.example.com"
	byAddr    map[string]rule
	catchAll  map[string]string // domain -> account
	deliverTo string
	unknownTo string
	// server: recipients go to a mail server (delivery: lmtp), which knows users the
	// accounts do not list: unknown recipients of accepted domains pass as they are.
	server bool
}

type rule struct {
	account string
	kind    string // address | alias
}

// NewRouter builds a router over accounts. domains are the accepted domains ("." all,
// "*.example.com" any subdomain); mailboxes, when not empty, limits which accounts are
// served. deliverTo, when set, receives every message (a single-account poller);
// unknownTo, when set, receives recipients of accepted domains that match no account.
func NewRouter(accounts []configs.Account, domains, mailboxes []string, deliverTo, unknownTo string) (*Router, error) {
	return buildRouter(accounts, domains, mailboxes, deliverTo, unknownTo, false)
}

// buildRouter is NewRouter; with server, recipients that match no account pass to the
// mail server as they are, and deliverTo and unknownTo may name any address.
func buildRouter(accounts []configs.Account, domains, mailboxes []string, deliverTo, unknownTo string, server bool) (*Router, error) {
	r := &Router{byAddr: map[string]rule{}, catchAll: map[string]string{}, server: server}
	for _, d := range domains {
		d = strings.TrimSpace(d)
		switch {
		case d == ".":
			r.accept = append(r.accept, ".")
		case strings.HasPrefix(d, "*."):
			r.accept = append(r.accept, "*."+NormalizeDomain(d[2:]))
		default:
			r.accept = append(r.accept, NormalizeDomain(d))
		}
	}
	serve := map[string]bool{}
	for _, m := range mailboxes {
		n, ok := NormalizeAddress(m)
		if !ok {
			return nil, fmt.Errorf("mailbox %q is not an address", m)
		}
		serve[n] = true
	}
	known := map[string]bool{}
	for _, a := range accounts {
		addr, ok := NormalizeAddress(a.Address)
		if !ok {
			return nil, fmt.Errorf("account address %q is not an address", a.Address)
		}
		known[addr] = true
		if len(serve) > 0 && !serve[addr] {
			continue
		}
		r.byAddr[addr] = rule{addr, "address"}
		for _, al := range a.Aliases {
			n, ok := NormalizeAddress(al)
			if !ok {
				return nil, fmt.Errorf("alias %q of %s is not an address", al, a.Address)
			}
			if _, dup := r.byAddr[n]; !dup {
				r.byAddr[n] = rule{addr, "alias"}
			}
		}
		if a.CatchAll {
			r.catchAll[addr[strings.LastIndexByte(addr, '@')+1:]] = addr
		}
	}
	for _, p := range []*string{&deliverTo, &unknownTo} {
		if *p == "" {
			continue
		}
		n, ok := NormalizeAddress(*p)
		if !ok || !known[n] && !server {
			return nil, fmt.Errorf("%q names no account", *p)
		}
		*p = n
	}
	r.deliverTo, r.unknownTo = deliverTo, unknownTo
	return r, nil
}

// Accepts reports whether domain (normalised) is one of the accepted domains.
func (r *Router) Accepts(domain string) bool {
	for _, p := range r.accept {
		switch {
		case p == ".":
			return true
		case strings.HasPrefix(p, "*."):
			if strings.HasSuffix(domain, p[1:]) {
				return true
			}
		case p == domain:
			return true
		}
	}
	return false
}

// Route decides where one recipient goes, in a fixed order: deliver_to, accepted
// domain, address, alias, address with +tag removed, the domain's catch-all,
// unknown_recipients, else unknown (5.1.1). guessed recipients (read from To/Cc) outside
// the accepted domains are ignored rather than failed: they were never addressed to us.
func (r *Router) Route(rcpt string, guessed bool) Route {
	rt := Route{Recipient: rcpt}
	if r.deliverTo != "" {
		rt.Account, rt.Rule = r.deliverTo, "deliver_to"
		return rt
	}
	addr, ok := NormalizeAddress(rcpt)
	if !ok {
		if guessed {
			rt.Rule, rt.Ignored = "invalid", true
			return rt
		}
		rt.Rule, rt.Status = "invalid", StatusBadAddressSyntax
		return rt
	}
	at := strings.LastIndexByte(addr, '@')
	local, domain := addr[:at], addr[at+1:]
	if !r.Accepts(domain) {
		rt.Rule = "not_accepted"
		if guessed {
			rt.Ignored = true
		} else {
			rt.Status = StatusBadDestinationSystem
		}
		return rt
	}
	if ru, ok := r.byAddr[addr]; ok {
		rt.Account, rt.Rule = ru.account, ru.kind
		return rt
	}
	if i := strings.IndexByte(local, '+'); i > 0 {
		if ru, ok := r.byAddr[local[:i]+"@"+domain]; ok {
			rt.Account, rt.Rule = ru.account, "tag"
			return rt
		}
	}
	if acct, ok := r.catchAll[domain]; ok {
		rt.Account, rt.Rule = acct, "catch_all"
		return rt
	}
	if r.unknownTo != "" {
		rt.Account, rt.Rule = r.unknownTo, "unknown_recipients"
		return rt
	}
	if r.server {
		rt.Account, rt.Rule = addr, "server"
		return rt
	}
	rt.Rule, rt.Status = "unknown", StatusUnknownMailbox
	return rt
}
