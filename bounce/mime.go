package bounce

import (
	"bytes"
	"fmt"
	"mime/quotedprintable"
	"strings"
	"unicode/utf8"

	"github.com/mxdrop/mxdrop/importer"
	"github.com/mxdrop/mxdrop/importer/address"
)

// field writes one header field, folded at white space so that lines stay within 78
// characters where the value allows (RFC 5322 section 2.1.1), and ends it with CRLF.
func field(b *bytes.Buffer, name, value string) {
	b.WriteString(fold(name + ": " + value))
	b.WriteString("\r\n")
}

// fold folds a header line at spaces. It never breaks right after the field name, and
// a word longer than a line stays whole (the inputs are bounded far below 998).
func fold(s string) string {
	if len(s) <= 78 {
		return s
	}
	words := strings.Split(s, " ")
	var b strings.Builder
	n := 0
	for i, w := range words {
		switch {
		case i == 0:
			b.WriteString(w)
			n = len(w)
		case i > 1 && n+1+len(w) > 78:
			b.WriteString("\r\n ")
			b.WriteString(w)
			n = 1 + len(w)
		default:
			b.WriteByte(' ')
			b.WriteString(w)
			n += 1 + len(w)
		}
	}
	return b.String()
}

// encodeText returns a text body with CRLF line endings and the transfer encoding
// that keeps it 7-bit: "7bit" when it is US-ASCII with lines of at most 998 octets and
// no bare CR, else "quoted-printable" (RFC 2045 section 6.7).
func encodeText(raw []byte) (cte string, body []byte) {
	t := bytes.ReplaceAll(raw, []byte("\r\n"), []byte("\n"))
	seven := true
	line := 0
	for _, c := range t {
		if c == '\n' {
			line = 0
			continue
		}
		line++
		if c >= 0x80 || c == '\r' || c == 0 || line > 998 {
			seven = false
			break
		}
	}
	if seven {
		return "7bit", bytes.ReplaceAll(t, []byte("\n"), []byte("\r\n"))
	}
	var b bytes.Buffer
	w := quotedprintable.NewWriter(&b)
	// Writes to a bytes.Buffer cannot fail.
	_, _ = w.Write(t)
	_ = w.Close()
	return "quoted-printable", b.Bytes()
}

// splitAddress splits an address at its last '@' after removing white space, angle
// brackets and an RFC 5321 source route.
func splitAddress(a string) (local, domain string, ok bool) {
	a = strings.TrimSpace(a)
	a = strings.TrimSuffix(strings.TrimPrefix(a, "<"), ">")
	if i := strings.LastIndexByte(a, ':'); i >= 0 && strings.HasPrefix(a, "@") {
		a = a[i+1:]
	}
	at := strings.LastIndexByte(a, '@')
	if at <= 0 || at == len(a)-1 {
		return a, "", false
	}
	return a[:at], a[at+1:], true
}

// typedAddress returns an address as an RFC 3464 typed address: "rfc822; a@b" for an
// ASCII address (the domain in its ASCII form), else the RFC 6533 section 3 "utf-8"
// type with the address in utf-8-addr-xtext, which stays 7-bit.
func typedAddress(addr string) string {
	local, domain, ok := splitAddress(addr)
	a := local
	if ok {
		a = local + "@" + importer.NormalizeDomain(domain)
	}
	ascii := true
	for i := 0; i < len(a); i++ {
		if a[i] < 0x20 || a[i] > 0x7e {
			ascii = false
			break
		}
	}
	if ascii {
		return "rfc822; " + cut(a, maxAddress)
	}
	// The escaped form is what must stay short: one rune can take 10 octets.
	var b strings.Builder
	for _, r := range a {
		if b.Len() > maxAddress {
			b.WriteString("...")
			break
		}
		if r > 0x20 && r < 0x7f && r != '+' && r != '=' && r != '\\' {
			b.WriteRune(r)
			continue
		}
		fmt.Fprintf(&b, `\x{%X}`, r)
	}
	return "utf-8; " + b.String()
}

// xtext encodes s as RFC 3461 section 4 xtext.
func xtext(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '!' || c > '~' || c == '+' || c == '=' {
			fmt.Fprintf(&b, "+%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// atext reports whether c may appear in a dot-atom local part (RFC 5322 section 3.2.3).
func atext(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~.", c) >= 0
}

// sendableAddress returns the envelope sender in the form a DSN is sent to (the
// domain lower-cased and in ASCII), or false when it is not a plain dot-atom address
// with a host name or address literal, within RFC 5321's length limits. Quoted local parts and UTF-8 local parts
// (SMTPUTF8) are refused: they would need RFC 6531/6533 handling mxdrop does not do.
func sendableAddress(s string) (string, bool) {
	local, domain, ok := splitAddress(s)
	// RFC 5321 section 4.5.3.1: a local part of at most 64 octets, a path of at
	// most 256 including the angle brackets.
	if !ok || len(local) > 64 || len(local)+1+len(domain) > 254 || strings.HasPrefix(local, ".") || strings.HasSuffix(local, ".") || strings.Contains(local, "..") {
		return "", false
	}
	for i := 0; i < len(local); i++ {
		if !atext(local[i]) {
			return "", false
		}
	}
	if strings.HasPrefix(domain, "[") && strings.HasSuffix(domain, "]") {
		lit := domain[1 : len(domain)-1]
		for i := 0; i < len(lit); i++ {
			if c := lit[i]; c <= ' ' || c > '~' || c == '[' || c == ']' || c == '\\' {
				return "", false
			}
		}
		return local + "@" + domain, lit != ""
	}
	d := importer.NormalizeDomain(domain)
	if !address.HostName(d) {
		return "", false
	}
	return local + "@" + d, true
}

// cut shortens s to at most n bytes, at a rune boundary, marking the cut with "...".
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n - 3
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "..."
}
