package spam

import (
	"fmt"
	"io"
	"mime"
	"net/mail"
	"regexp"
	"strings"

	"github.com/emersion/go-message/charset"

	"github.com/mxdrop/mxdrop/importer"
)

// senderList is the compiled blocked_senders list. It is immutable.
type senderList struct {
	addrs   map[string]string // normalised address -> the entry as configured
	domains map[string]string // normalised domain -> the entry as configured ("@bad.example")
}

func newSenderList() *senderList {
	return &senderList{addrs: map[string]string{}, domains: map[string]string{}}
}

func (l *senderList) empty() bool { return len(l.addrs) == 0 && len(l.domains) == 0 }

// add adds one entry: an address (spammer@bad.example) or a domain (@bad.example).
func (l *senderList) add(entry string) error {
	e := strings.TrimSpace(entry)
	if d, ok := strings.CutPrefix(e, "@"); ok {
		// The domain rules of addresses: importer.NormalizeAddress checks them.
		n, ok := importer.NormalizeAddress("x@" + d)
		if !ok {
			return fmt.Errorf("%q is not a domain", entry)
		}
		if n = n[2:]; l.domains[n] == "" {
			l.domains[n] = e
		}
		return nil
	}
	n, ok := importer.NormalizeAddress(e)
	if !ok {
		if !strings.Contains(e, "@") && strings.Contains(e, ".") {
			return fmt.Errorf("%q is not an address or @domain (a whole domain is written @%s)", entry, strings.TrimPrefix(e, "*."))
		}
		return fmt.Errorf("%q is not an address or @domain", entry)
	}
	if l.addrs[n] == "" {
		l.addrs[n] = e
	}
	return nil
}

// match returns the entry that blocks addr, if any. An @domain entry blocks the domain
// and every subdomain of it: @bad.example blocks x@bad.example and x@mx1.bad.example,
// but not x@notbad.example. Comparison is case-insensitive and IDN-aware (both sides
// are normalised by importer.NormalizeAddress and importer.NormalizeDomain).
func (l *senderList) match(addr string) (norm, entry string, ok bool) {
	norm, valid := importer.NormalizeAddress(addr)
	if !valid {
		return "", "", false
	}
	if e, ok := l.addrs[norm]; ok {
		return norm, e, true
	}
	d := norm[strings.LastIndexByte(norm, '@')+1:]
	if strings.HasPrefix(d, "[") {
		e, ok := l.domains[d] // a domain literal has no parent domains
		return norm, e, ok
	}
	for {
		if e, ok := l.domains[d]; ok {
			return norm, e, true
		}
		i := strings.IndexByte(d, '.')
		if i < 0 {
			return "", "", false
		}
		d = d[i+1:]
	}
}

// check returns the Reason when the envelope sender or a From address is blocked, ""
// otherwise. The envelope sender is looked at first.
func (l *senderList) check(h *importer.Header, env importer.Envelope) string {
	if l.empty() {
		return ""
	}
	if env.Sender != "" {
		if norm, entry, ok := l.match(env.Sender); ok {
			return blockedReason(norm, entry, "envelope sender")
		}
	}
	for _, f := range h.Fields {
		if f.Name != "from" {
			continue
		}
		for _, a := range fromAddresses(f.Value) {
			if norm, entry, ok := l.match(a); ok {
				return blockedReason(norm, entry, "From")
			}
		}
	}
	return ""
}

// blockedReason says which rule fired: "blocked sender spam@bad.example (From)", with
// the entry when it is a domain: "blocked sender x@mx.bad.example (From, @bad.example)".
// The address is the normalised one: IDN domains in their ASCII form, so the Reason is
// 7-bit like every header field.
func blockedReason(addr, entry, where string) string {
	if strings.HasPrefix(entry, "@") {
		return fmt.Sprintf("blocked sender %s (%s, @%s)", addr, where, importer.NormalizeDomain(entry[1:]))
	}
	return fmt.Sprintf("blocked sender %s (%s)", addr, where)
}

// headerDecoder decodes RFC 2047 encoded words in any charset go-message knows, and
// passes the bytes of others through undecoded (see lenientCharset).
var headerDecoder = &mime.WordDecoder{CharsetReader: lenientCharset(nil)}

// lenientCharset returns a CharsetReader for mime.WordDecoder that never fails: a
// charset go-message does not know is reported to unknown (when not nil) and its bytes
// are taken as they are, so ASCII words in it are still found.
func lenientCharset(unknown func(string)) func(string, io.Reader) (io.Reader, error) {
	return func(name string, r io.Reader) (io.Reader, error) {
		cr, err := charset.Reader(name, r)
		if err != nil {
			if unknown != nil {
				unknown(name)
			}
			return r, nil
		}
		return cr, nil
	}
}

var bareAddrRE = regexp.MustCompile(`[^\x00-\x20\x7f<>,;:"()\[\]]+@[^\x00-\x20\x7f<>,;:"()\[\]]+`)

// fromAddresses returns the addresses of a From value: RFC 5322 syntax where net/mail
// accepts it, else (QUIRK: spam is rarely well-formed) every token that looks like
// local@domain.
func fromAddresses(v string) []string {
	p := mail.AddressParser{WordDecoder: headerDecoder}
	if list, err := p.ParseList(v); err == nil {
		out := make([]string, 0, len(list))
		for _, a := range list {
			out = append(out, a.Address)
		}
		return out
	}
	return bareAddrRE.FindAllString(v, -1)
}
