package importer

import (
	"fmt"
	"strings"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer/address"
)

// NormalizeAddress is address.Normalize: the one form mxdrop compares addresses in.
func NormalizeAddress(addr string) (norm string, ok bool) { return address.Normalize(addr) }

// NormalizeDomain is address.Domain.
func NormalizeDomain(d string) string { return address.Domain(d) }

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
	if base := address.Untagged(local); base != local {
		if ru, ok := r.byAddr[base+"@"+domain]; ok {
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
