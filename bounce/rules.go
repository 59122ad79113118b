package bounce

import (
	"mime"
	"strings"

	"github.com/mxdrop/mxdrop/importer"
)

// The rules that suppress a DSN, as Suppress and the rate limit name them in logs.
const (
	// RuleUnknownSender: no envelope sender was found; the From field is not an
	// envelope sender and may be forged.
	RuleUnknownSender = "unknown_sender"
	// RuleNullSender: the envelope sender is <>, a DSN must never be answered
	// (RFC 5321 section 4.5.5).
	RuleNullSender = "null_sender"
	// RuleInvalidSender: the sender is not an address a DSN can be sent to (no
	// domain, a quoted or UTF-8 local part, characters that do not belong).
	RuleInvalidSender = "invalid_sender"
	// RuleMailerDaemon: the sender's local part is MAILER-DAEMON; such a sender only
	// sends bounces (RFC 3834 section 2 lists it among the addresses never to answer).
	RuleMailerDaemon = "mailer_daemon"
	// RulePostmasterBounce: the sender is postmaster@ and the message looks like a
	// bounce. Ordinary mail from a postmaster still gets its DSN.
	RulePostmasterBounce = "postmaster_bounce"
	// RuleAutoSubmitted: Auto-Submitted is present and not "no" (RFC 3834 section 5).
	RuleAutoSubmitted = "auto_submitted"
	// RuleAutoResponseSuppress: the Microsoft X-Auto-Response-Suppress field asks for
	// no non-delivery reports (NDR or All).
	RuleAutoResponseSuppress = "auto_response_suppress"
	// RuleDeliveryReport: the message is itself a report: multipart/report (DSN, MDN,
	// ARF) or report-type=delivery-status, or a bare delivery-status part.
	RuleDeliveryReport = "delivery_report"
	// RulePrecedence: Precedence is bulk, junk or list.
	RulePrecedence = "precedence"
	// RuleRateLimit: the sender already got rate_limit DSNs within rate_window.
	RuleRateLimit = "rate_limit"
	// RuleGuessedRecipients: the message carried no envelope, its recipients were read
	// from To/Cc. Those name everyone the sender addressed, not who this copy was
	// delivered to, so an unknown one is recorded in ImportFailed/ but never bounced.
	RuleGuessedRecipients = "guessed_recipients"
)

// Suppress returns the name of the first rule that forbids a DSN for a message with
// envelope env and header block h (nil: only the sender rules apply), or "" when a
// DSN may be sent. The rate limit is not part of it; see Limiter.
//
// Mailing-list mail (List-Id, List-Unsubscribe) is deliberately not suppressed: its
// envelope sender is the list's bounce address, which exists to receive DSNs and
// unsubscribes dead addresses on them. A forged envelope sender, the cause of
// backscatter, is no more likely on list mail than on other mail. Lists that also
// send Precedence: list are suppressed by RulePrecedence.
func Suppress(env importer.Envelope, h *importer.Header) string {
	if env.Guessed {
		return RuleGuessedRecipients
	}
	if !env.SenderKnown {
		return RuleUnknownSender
	}
	if strings.TrimSpace(strings.Trim(strings.TrimSpace(env.Sender), "<>")) == "" {
		return RuleNullSender
	}
	if _, ok := sendableAddress(env.Sender); !ok {
		return RuleInvalidSender
	}
	local, _, _ := splitAddress(env.Sender)
	if strings.EqualFold(local, "mailer-daemon") {
		return RuleMailerDaemon
	}
	if h == nil {
		return ""
	}
	if strings.EqualFold(local, "postmaster") && looksLikeBounce(h) {
		return RulePostmasterBounce
	}
	for _, f := range h.Fields {
		switch f.Name {
		case "auto-submitted":
			if v := firstToken(f.Value); v != "no" {
				return RuleAutoSubmitted
			}
		case "x-auto-response-suppress":
			for _, v := range strings.Split(strings.ToLower(f.Value), ",") {
				if v = strings.TrimSpace(v); v == "ndr" || v == "all" {
					return RuleAutoResponseSuppress
				}
			}
		}
	}
	if isReport(h) {
		return RuleDeliveryReport
	}
	for _, f := range h.Fields {
		if f.Name == "precedence" {
			switch firstToken(f.Value) {
			case "bulk", "junk", "list":
				return RulePrecedence
			}
		}
	}
	return ""
}

// firstToken returns a structured field's value without comments and parameters,
// lower-cased: "Auto-Replied; x=1 (comment)" gives "auto-replied".
func firstToken(v string) string {
	var b strings.Builder
	depth := 0
	for _, r := range v {
		switch {
		case r == '(':
			depth++
		case r == ')' && depth > 0:
			depth--
		case depth == 0:
			b.WriteRune(r)
		}
	}
	s := b.String()
	if i := strings.IndexByte(s, ';'); i >= 0 {
		s = s[:i]
	}
	return strings.ToLower(strings.TrimSpace(s))
}

// isReport reports whether the message is a delivery report or another
// multipart/report.
func isReport(h *importer.Header) bool {
	v, ok := h.Get("content-type")
	if !ok {
		return false
	}
	mt, params, err := mime.ParseMediaType(v)
	if err != nil {
		// QUIRK: a malformed Content-Type is still recognised by its words.
		l := strings.ToLower(v)
		return strings.Contains(l, "multipart/report") || strings.Contains(l, "delivery-status")
	}
	switch mt {
	case "multipart/report", "message/delivery-status", "message/global-delivery-status":
		return true
	}
	return strings.EqualFold(params["report-type"], "delivery-status")
}

// bounceSubjects are the starts of the subjects of common MTAs' bounces, lower-cased.
var bounceSubjects = []string{
	"undelivered mail", "undeliverable", "returned mail", "delivery status notification",
	"mail delivery failed", "mail delivery failure", "delivery failure", "failure notice",
	"non-delivery", "nondeliverable", "mail system error", "unzustellbar",
	"nicht zustellbar", "warning: could not send message",
}

// looksLikeBounce reports whether a message from postmaster is a bounce rather than
// a person writing: a report, Exim's X-Failed-Recipients, a MAILER-DAEMON From, or
// a bounce subject.
func looksLikeBounce(h *importer.Header) bool {
	if isReport(h) {
		return true
	}
	if _, ok := h.Get("x-failed-recipients"); ok {
		return true
	}
	if from, ok := h.Get("from"); ok && strings.Contains(strings.ToLower(from), "mailer-daemon@") {
		return true
	}
	if subj, ok := h.Get("subject"); ok {
		s := strings.ToLower(decodeSubject(subj))
		for _, p := range bounceSubjects {
			if strings.HasPrefix(s, p) {
				return true
			}
		}
	}
	return false
}
