package importer

import (
	"net/mail"
	"regexp"
	"strings"

	"github.com/mxdrop/mxdrop/configs"
)

// Envelope is the SMTP envelope of a message: who sent it and to whom it was delivered,
// which the header block may not say (Bcc).
type Envelope struct {
	// Sender is the envelope sender; "" is the null sender (<>) when SenderKnown.
	Sender      string
	SenderKnown bool
	Recipients  []string
	// Source names where the recipients came from: one of the EnvelopeHeaders
	// conventions, "source" when the message's source gave them, or "guessed" when they
	// were read from To/Cc/Resent-To/Resent-Cc.
	Source string
	// Guessed is true when no envelope was found and the recipients come from To/Cc.
	// Guessed recipients outside the accepted domains are ignored, not bounced.
	Guessed bool
}

// The header conventions the envelope is read from, in the default order.
const (
	ConvIIS         = "x-receiver"    // IIS/Exchange pickup: x-sender/x-receiver lines at the top of the file
	ConvEnvelopeTo  = "envelope-to"   // Exim appendfile envelope_to_add
	ConvOriginalTo  = "x-original-to" // Postfix local/pipe/virtual flag O
	ConvDeliveredTo = "delivered-to"  // Postfix flag D, qmail, most delivery agents
	ConvXEnvelopeTo = "x-envelope-to" // various
	ConvReceived    = "received"      // the "for <rcpt>" clause of the topmost Received
)

// DefaultEnvelopeHeaders is the order in which envelope conventions are tried; the
// configuration validates envelope_headers against the same list.
var DefaultEnvelopeHeaders = configs.DefaultEnvelopeHeaders()

// trustedTop returns the fields the local MTA can have written: those above the first
// Received field. MTAs add their envelope fields (Return-Path, Delivered-To,
// X-Original-To, Envelope-to) on top of the message they received, so a field of the
// same name further down was written by someone else, possibly the sender, and is
// never trusted. A message without any Received field (local submission) trusts the
// topmost instance of each field.
func trustedTop(h *Header) []Field {
	for i, f := range h.Fields {
		if f.Name == "received" {
			return h.Fields[:i]
		}
	}
	return h.Fields
}

// iisBlock returns the leading run of x-sender/x-receiver lines an IIS or Exchange
// pickup writer puts at the very top of the file, and how many fields it spans. A run
// without any x-receiver is not such a block (n is 0): some mail programs (Eudora, PHP
// scripts) write an X-Sender field of their own, and it may end up first.
func iisBlock(h *Header) (sender string, rcpts []string, n int) {
	receivers := 0
loop:
	for _, f := range h.Fields {
		switch f.Name {
		case "x-sender":
			sender = f.Value
		case "x-receiver":
			receivers++
			rcpts = append(rcpts, parseAddrList(f.Value)...)
		default:
			break loop
		}
		n++
	}
	if receivers == 0 {
		return "", nil, 0
	}
	return sender, rcpts, n
}

// ExtractEnvelope reads the envelope from the header block, trying the conventions in
// order (DefaultEnvelopeHeaders when order is empty). Only the topmost instance of a
// field above the first Received counts (see trustedTop). When no convention yields a
// recipient, the recipients are read from To, Cc, Resent-To and Resent-Cc and the
// envelope is marked Guessed.
func ExtractEnvelope(h *Header, order []string) Envelope {
	if len(order) == 0 {
		order = DefaultEnvelopeHeaders
	}
	var env Envelope
	top := trustedTop(h)
	iisSender, iisRcpts, iisN := iisBlock(h)

	// Sender: the IIS x-sender (the pickup writer's MAIL FROM; a Return-Path below it is
	// part of the message it was given), else the topmost Return-Path above the first
	// Received, else an mbox From line.
	if iisN > 0 && iisSender != "" {
		env.Sender, env.SenderKnown = firstAddr(iisSender), true
	} else if v, ok := topmost(top, "return-path"); ok {
		env.Sender, env.SenderKnown = parseReturnPath(v), true
	} else if h.MboxFrom != "" {
		env.Sender, env.SenderKnown = h.MboxFrom, true
	}

	for _, conv := range order {
		// Names come from configuration, where "Delivered-To" is as likely as "delivered-to".
		conv = strings.ToLower(strings.TrimSpace(conv))
		var rcpts []string
		switch conv {
		case ConvIIS:
			rcpts = iisRcpts
		case ConvEnvelopeTo, ConvOriginalTo, ConvDeliveredTo, ConvXEnvelopeTo:
			if v, ok := topmost(top, conv); ok {
				rcpts = parseAddrList(v)
			}
		case ConvReceived:
			if v, ok := h.Get("received"); ok {
				if a := receivedFor(v); a != "" {
					rcpts = []string{a}
				}
			}
		}
		if len(rcpts) > 0 {
			env.Recipients = dedupAddrs(rcpts)
			env.Source = conv
			return env
		}
	}
	var rcpts []string
	for _, name := range []string{"to", "cc", "resent-to", "resent-cc"} {
		for _, f := range h.Fields {
			if f.Name == name {
				rcpts = append(rcpts, parseAddrList(f.Value)...)
			}
		}
	}
	env.Recipients = dedupAddrs(rcpts)
	env.Source = "guessed"
	env.Guessed = true
	return env
}

func topmost(fields []Field, name string) (string, bool) {
	for _, f := range fields {
		if f.Name == name {
			return f.Value, true
		}
	}
	return "", false
}

// parseReturnPath returns the address of a Return-Path value; "<>" is the null sender.
func parseReturnPath(v string) string {
	v = strings.TrimSpace(v)
	if v == "<>" || v == "" {
		return ""
	}
	return firstAddr(v)
}

var receivedForRE = regexp.MustCompile(`(?i)\bfor\s+<?([^\s<>;]+@[^\s<>;]+?)>?\s*;`)

// receivedFor returns the address of the "for <addr>;" clause of a Received field (RFC
// 5321 section 4.4), "" if there is none.
func receivedFor(v string) string {
	m := receivedForRE.FindStringSubmatch(v)
	if m == nil {
		return ""
	}
	// The same address syntax as every other envelope field.
	if l := parseAddrList(m[1]); len(l) > 0 {
		return l[0]
	}
	return ""
}

var bareAddrRE = regexp.MustCompile(`[^\x00-\x20\x7f<>,;:"()\[\]]+@[^\x00-\x20\x7f<>,;:"()\[\]]+`)

// parseAddrList parses an address list leniently: RFC 5322 syntax where net/mail
// accepts it, else every token that looks like local@domain (QUIRK: envelope fields
// written by MTAs and 8-bit display names are often not strict RFC 5322).
func parseAddrList(v string) []string {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil
	}
	if list, err := mail.ParseAddressList(v); err == nil {
		out := make([]string, 0, len(list))
		for _, a := range list {
			// net/mail unquotes the local part ("a b"@x becomes a b@x); quote it again
			// where needed, so that the address can be written into a field, a
			// Return-Path or a DSN and be read back as one address.
			s := (&mail.Address{Address: a.Address}).String()
			out = append(out, strings.TrimSuffix(strings.TrimPrefix(s, "<"), ">"))
		}
		return out
	}
	// Source routes (@a,@b:user@d) and stray brackets.
	return bareAddrRE.FindAllString(v, -1)
}

// firstAddr returns the first address of v; failing that, v itself when it is one
// plausible token (a local name such as "root"), else "".
func firstAddr(v string) string {
	l := parseAddrList(v)
	if len(l) == 0 {
		return plainToken(strings.Trim(strings.TrimSpace(v), "<>"))
	}
	return l[0]
}

// plainToken returns s when it can stand between angle brackets on one header line (no
// white space, control characters or angle brackets), else "".
func plainToken(s string) string {
	if strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '<' || r == '>' }) {
		return ""
	}
	return s
}

func dedupAddrs(in []string) []string {
	seen := make(map[string]bool, len(in))
	out := in[:0]
	for _, a := range in {
		k := strings.ToLower(a)
		if a == "" || seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, a)
	}
	return out
}
