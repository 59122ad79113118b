package bounce

import (
	"mime"
	"strings"
	"time"

	"github.com/emersion/go-message/charset"
)

// lang is the wording of a DSN in one language.
type lang struct {
	code     string // RFC 5646 tag for Content-Language
	subject  string
	fromName string
	reasons  map[string]string // enhanced status -> plain explanation
	fallback string            // explanation of any other permanent status

	intro, explain, yours, subjectLabel, idLabel, dateLabel, outro string
}

var langEN = lang{
	code:     "en",
	subject:  "Undelivered Mail Returned to Sender",
	fromName: "Mail Delivery System",
	reasons: map[string]string{
		"5.1.1": "mailbox unknown: there is no such mailbox here",
		"5.1.2": "domain not accepted: this mail system does not receive mail for that domain",
		"5.1.3": "bad address: the recipient address is not valid",
		"5.3.4": "message too big for the recipient",
		"5.6.0": "message content not accepted",
	},
	fallback: "the message could not be delivered",
	intro:    "This is the mail system at %s.",
	explain: "Your message could not be delivered to the recipients below. This is a\n" +
		"permanent error: the message will not be delivered to them, and the mail\n" +
		"system will not try again.",
	yours:        "Your message:",
	subjectLabel: "Subject:   ",
	idLabel:      "Message-ID:",
	dateLabel:    "Received:  ",
	outro: "Please check the addresses before you send the message again. The\n" +
		"headers of your message are attached. This message was generated\n" +
		"automatically; please do not reply to it.",
}

var langDE = lang{
	code:     "de",
	subject:  "Unzustellbare Nachricht zurück an den Absender",
	fromName: "Mail-Zustellsystem",
	reasons: map[string]string{
		"5.1.1": "Postfach unbekannt: dieses Postfach gibt es hier nicht",
		"5.1.2": "Domain nicht angenommen: dieses Mailsystem empfängt keine Nachrichten für diese Domain",
		"5.1.3": "ungültige Adresse: die Empfängeradresse ist nicht gültig",
		"5.3.4": "die Nachricht ist für den Empfänger zu groß",
		"5.6.0": "der Inhalt der Nachricht wurde nicht angenommen",
	},
	fallback: "die Nachricht konnte nicht zugestellt werden",
	intro:    "Dies ist das Mailsystem von %s.",
	explain: "Ihre Nachricht konnte an die unten genannten Empfänger nicht\n" +
		"zugestellt werden. Der Fehler ist dauerhaft: die Nachricht wird\n" +
		"diesen Empfängern nicht zugestellt, und das Mailsystem versucht es\n" +
		"nicht erneut.",
	yours:        "Ihre Nachricht:",
	subjectLabel: "Betreff:   ",
	idLabel:      "Message-ID:",
	dateLabel:    "Empfangen: ",
	outro: "Bitte prüfen Sie die Adressen, bevor Sie die Nachricht erneut senden.\n" +
		"Die Kopfzeilen Ihrer Nachricht sind angehängt. Diese Nachricht wurde\n" +
		"automatisch erstellt; bitte antworten Sie nicht darauf.",
}

// reason returns the plain explanation of a permanent status.
func (l *lang) reason(status string) string {
	if s, ok := l.reasons[status]; ok {
		return s
	}
	return l.fallback
}

// body is the text of the human-readable part, LF line endings.
func (l *lang) body(mta string, r *Report, rcpts []recipient) string {
	var b strings.Builder
	b.WriteString(strings.Replace(l.intro, "%s", mta, 1))
	b.WriteString("\n\n")
	b.WriteString(l.explain)
	b.WriteString("\n\n")
	for _, rc := range rcpts {
		b.WriteString("  <" + printable(cut(rc.Address, maxAddress)) + ">\n")
		b.WriteString("    " + l.reason(rc.status) + " (" + rc.status + ")\n")
	}
	b.WriteString("\n" + l.yours + "\n")
	if s := decodeSubject(r.Subject); s != "" {
		b.WriteString("  " + l.subjectLabel + " " + s + "\n")
	}
	if id := cleanMessageID(r.MessageID); id != "" {
		b.WriteString("  " + l.idLabel + " " + id + "\n")
	}
	if !r.Arrived.IsZero() {
		b.WriteString("  " + l.dateLabel + " " + r.Arrived.Format(time.RFC1123Z) + "\n")
	}
	b.WriteString("\n")
	b.WriteString(l.outro)
	b.WriteString("\n")
	return b.String()
}

// decodeSubject decodes RFC 2047 encoded words for the human-readable part. An
// unknown charset or broken encoding leaves the raw text; invalid UTF-8 and control
// characters are replaced, and the result is cut to a line's length.
func decodeSubject(raw string) string {
	dec := mime.WordDecoder{CharsetReader: charset.Reader}
	s, err := dec.DecodeHeader(raw)
	if err != nil {
		s = raw // QUIRK: an undecodable subject is shown as it arrived
	}
	s = strings.TrimSpace(printable(s))
	r := []rune(s)
	if len(r) > 200 {
		s = string(r[:197]) + "..."
	}
	return s
}

// printable returns s as valid UTF-8 without control characters.
func printable(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return ' '
		}
		return r
	}, s)
}
