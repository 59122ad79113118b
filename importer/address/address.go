// Package address is mxdrop's one normalisation of mail addresses and domains, used by
// the configuration (accounts, aliases, accepted domains), the importer (routing) and
// bounce (DSN recipients, rate limits, reporting MTAs): normalise once, then compare.
package address

import (
	"errors"
	"strings"

	"golang.org/x/net/idna"
)

// Normalize returns an address in the one form mxdrop compares: local part and
// domain lower-cased, the domain in its ASCII (punycode) form, surrounding angle
// brackets, a source route and a trailing dot removed. ok is false when the input has
// no '@' or an empty part. Matching is case-insensitive by design: mail administrators
// expect Alice@Example.com and alice@example.com to be one mailbox.
func Normalize(addr string) (norm string, ok bool) {
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
	local, domain := strings.ToLower(a[:at]), Domain(a[at+1:])
	if !validLocal(local) || !validDomain(domain) {
		return "", false
	}
	return local + "@" + domain, true
}

// Untagged returns a normalised local part without its "+tag" (sub-addressing:
// "alice+news" is alice's), or local itself when it has none. QUIRK: the +tag
// convention is no RFC's; a quoted local part keeps its "+", and so does one that
// starts with it.
func Untagged(local string) string {
	if i := strings.IndexByte(local, '+'); i > 0 && !strings.HasPrefix(local, `"`) {
		return local[:i]
	}
	return local
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

// Domain lower-cases a domain and converts it to ASCII, so that a domain
// written in Unicode and its punycode form compare equal. A domain IDNA rejects is
// kept lower-cased as it is.
func Domain(d string) string {
	d = strings.TrimSpace(strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), "."))
	if a, err := idna.Lookup.ToASCII(d); err == nil {
		return a
	}
	return d
}

// ParseDomain is Domain for a domain that must be valid (a configuration's): it
// returns an error for an empty name, a leading or trailing dot, a name IDNA rejects,
// or a label longer than 63 octets.
func ParseDomain(d string) (string, error) {
	if d == "" || strings.HasSuffix(d, ".") || strings.HasPrefix(d, ".") {
		return "", errors.New("not a domain")
	}
	a, err := idna.Lookup.ToASCII(strings.ToLower(d))
	if err != nil {
		return "", err
	}
	for _, label := range strings.Split(a, ".") {
		if label == "" || len(label) > 63 {
			return "", errors.New("bad label")
		}
	}
	return a, nil
}

// HostName reports whether d is a host name as SMTP wants one in EHLO and in a DSN's
// Reporting-MTA: at most 253 octets of ASCII letters, digits, '-' and '_', in labels of
// 1 to 63.
func HostName(d string) bool {
	if d == "" || len(d) > 253 {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
