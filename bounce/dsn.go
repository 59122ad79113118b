package bounce

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"regexp"
	"strings"
	"time"

	"github.com/mxdrop/mxdrop/importer"
	"github.com/mxdrop/mxdrop/importer/address"
)

// Report is what a DSN is built from: one message and all of its failed recipients.
type Report struct {
	// ID is the message's stable identity at its source (importer.Message.ID). The
	// DSN's Message-ID derives from it, so every DSN built for one message carries the
	// same Message-ID and a receiver can recognise a repeated one. "" gives a random
	// Message-ID.
	ID string
	// Sender is the original envelope sender: the DSN's To and its RCPT TO.
	Sender string
	// EnvelopeID is the RFC 3461 ENVID of the original transaction, "" when unknown
	// (a drop file never tells it).
	EnvelopeID string
	// Arrived is when the message arrived; the zero time omits Arrival-Date.
	Arrived time.Time
	// MessageID and Subject are the original's field values as they arrived.
	MessageID string
	Subject   string
	// Header is the original header block for the text/rfc822-headers part; nil
	// leaves the part out.
	Header *importer.Header
	// Recipients lists the failed recipients; at least one.
	Recipients []Recipient
}

// Recipient is one failed recipient of a Report.
type Recipient struct {
	// Address is the recipient as mxdrop received it (Final-Recipient).
	Address string
	// Original is the RFC 3461 ORCPT address. RFC 3464 section 2.3.1 forbids an
	// Original-Recipient field without an ORCPT, so it stays "" unless the source
	// knows the ORCPT; X-Original-To is not one.
	Original string
	// Status is the RFC 3463 enhanced status code, a permanent one ("5.1.1"); ""
	// means 5.0.0.
	Status string
	// Diagnostic is the reply of the mail server that refused the recipient (LMTP);
	// "" gives mxdrop's own wording for Status.
	Diagnostic string `json:",omitempty"`
}

// NewReport returns the Report of a message's failed recipients, from what the source
// handed the importer and what the importer returned.
func NewReport(msg importer.Message, res importer.Result) Report {
	r := Report{
		ID:        msg.ID,
		Sender:    res.Envelope.Sender,
		Arrived:   msg.Arrived,
		MessageID: res.MessageID,
		Subject:   res.Subject,
		Header:    res.Header,
	}
	for _, f := range res.Failed {
		r.Recipients = append(r.Recipients, Recipient{Address: f.Recipient, Status: f.Status, Diagnostic: f.Diagnostic})
	}
	return r
}

// Options shape the DSNs Build writes.
type Options struct {
	// ReportingMTA is the host name in Reporting-MTA and in From:
	// MAILER-DAEMON@<ReportingMTA>. Required.
	ReportingMTA string
	// Language of the human-readable part and the Subject: "en" (default) or "de".
	Language string
	// Now returns the DSN's Date; nil uses time.Now.
	Now func() time.Time
}

// DSN is a built delivery status notification, ready to be sent with MAIL FROM:<>.
type DSN struct {
	// MessageID is the DSN's own Message-ID, with angle brackets.
	MessageID string
	// Sender is the original envelope sender: the one RCPT TO of the DSN.
	Sender string
	// Failed lists the failed recipients the DSN reports, for logs.
	Failed []string
	// Data is the whole message: CRLF line endings, 7-bit, no line longer than 998
	// octets.
	Data []byte
}

// Errors Build returns for a Report it cannot turn into a DSN. They are permanent:
// building the same Report again fails the same way.
var (
	ErrNoRecipients = errors.New("no failed recipients")
	ErrBadSender    = errors.New("sender is not an address a DSN can be sent to")
	ErrNotPermanent = errors.New("status is not a permanent failure (5.x.x)")
)

// languages known to Build.
var languages = map[string]*lang{"": &langEN, "en": &langEN, "de": &langDE}

// ValidLanguage reports whether Build knows language ("" is English).
func ValidLanguage(language string) bool { return languages[strings.ToLower(language)] != nil }

// maxHeaderCopy bounds the text/rfc822-headers part. Real header blocks are a few KiB;
// the rest of a pathological one is left out at a field boundary.
const maxHeaderCopy = 64 << 10

// maxAddress bounds an address written into a DSN (RFC 5321 section 4.5.3.1.3 allows a
// path of 256 octets); longer ones are cut, so no line can exceed 998 octets.
const maxAddress = 320

var statusRE = regexp.MustCompile(`^([245])\.[0-9]{1,3}\.[0-9]{1,3}$`)

// Build writes the DSN of r: a multipart/report (RFC 6522) with a text/plain
// explanation in o.Language, a message/delivery-status part (RFC 3464) with one block
// per failed recipient, and the original's header block as text/rfc822-headers. It
// fails with ErrNoRecipients, ErrBadSender or ErrNotPermanent (wrapped) for a Report
// that cannot become a DSN, and with an error for bad Options.
func Build(r Report, o Options) (*DSN, error) {
	l := languages[strings.ToLower(o.Language)]
	if l == nil {
		return nil, fmt.Errorf("build dsn: unknown language %q", o.Language)
	}
	mta := importer.NormalizeDomain(o.ReportingMTA)
	if !address.HostName(mta) {
		return nil, fmt.Errorf("build dsn: reporting_mta %q is not a host name", o.ReportingMTA)
	}
	if len(r.Recipients) == 0 {
		return nil, fmt.Errorf("build dsn: %w", ErrNoRecipients)
	}
	to, ok := sendableAddress(r.Sender)
	if !ok {
		return nil, fmt.Errorf("build dsn: %w", ErrBadSender)
	}
	rcpts := make([]recipient, 0, len(r.Recipients))
	for _, rc := range r.Recipients {
		st := strings.TrimSpace(rc.Status)
		if st == "" {
			st = "5.0.0"
		}
		if m := statusRE.FindStringSubmatch(st); m == nil || m[1] != "5" {
			return nil, fmt.Errorf("build dsn: %s for %s: %w", st, rc.Address, ErrNotPermanent)
		}
		rcpts = append(rcpts, recipient{Recipient: rc, status: st, code: replyCode(st)})
	}
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	date := now()

	d := &DSN{Sender: to, MessageID: dsnMessageID(r.ID, mta)}
	for _, rc := range rcpts {
		d.Failed = append(d.Failed, rc.Address)
	}

	origID := cleanMessageID(r.MessageID)
	parts := [][]byte{
		textPart(l, &r, rcpts, mta, date),
		statusPart(&r, rcpts, mta),
	}
	if r.Header != nil {
		parts = append(parts, headersPart(r.Header))
	}
	boundary := pickBoundary(d.MessageID, parts)

	var b bytes.Buffer
	field(&b, "From", l.fromName+" <MAILER-DAEMON@"+mta+">")
	field(&b, "To", "<"+to+">")
	field(&b, "Subject", mime.QEncoding.Encode("utf-8", l.subject))
	field(&b, "Date", date.Format(time.RFC1123Z))
	field(&b, "Message-ID", d.MessageID)
	if origID != "" {
		field(&b, "In-Reply-To", origID)
		field(&b, "References", origID)
	}
	// RFC 3834 section 5: a DSN is a reply generated automatically.
	field(&b, "Auto-Submitted", "auto-replied")
	field(&b, "MIME-Version", "1.0")
	field(&b, "Content-Type", `multipart/report; report-type=delivery-status; boundary="`+boundary+`"`)
	b.WriteString("\r\n")
	b.WriteString("This is a MIME-encapsulated message.\r\n")
	for _, p := range parts {
		b.WriteString("\r\n--" + boundary + "\r\n")
		b.Write(p)
	}
	b.WriteString("\r\n--" + boundary + "--\r\n")
	d.Data = b.Bytes()
	return d, nil
}

// recipient is a Recipient with its checked status.
type recipient struct {
	Recipient
	status string
	code   int
}

// replyCode returns the SMTP reply code that goes with a permanent enhanced status.
func replyCode(status string) int {
	switch status {
	case "5.1.3":
		return 553
	case "5.3.4", "5.2.2", "5.2.3":
		return 552
	case "5.6.0", "5.7.0", "5.7.1":
		return 554
	}
	return 550
}

// dsnMessageID derives the DSN's Message-ID from the message identity.
func dsnMessageID(id, mta string) string {
	var sum []byte
	if id != "" {
		s := sha256.Sum256([]byte("mxdrop-dsn\x00" + id))
		sum = s[:12]
	} else {
		sum = make([]byte, 12)
		_, _ = rand.Read(sum) // crypto/rand.Read never fails (Go 1.24+)
	}
	return "<" + hex.EncodeToString(sum) + ".dsn@" + mta + ">"
}

var msgIDRE = regexp.MustCompile(`<[!-;=?-~]{1,250}@[!-;=?-~]{1,250}>`)

// cleanMessageID returns the first <id@host> of a Message-ID field value, or "" when
// there is none fit to be repeated in In-Reply-To (7-bit, no white space).
func cleanMessageID(v string) string {
	m := msgIDRE.FindString(v)
	if len(m) > 300 {
		return ""
	}
	return m
}

// pickBoundary returns a boundary derived from seed that occurs in no part.
func pickBoundary(seed string, parts [][]byte) string {
	s := sha256.Sum256([]byte(seed))
	base := "=_mxdrop_" + hex.EncodeToString(s[:8])
	b := base
	for i := 1; ; i++ {
		clash := false
		for _, p := range parts {
			if bytes.Contains(p, []byte("--"+b)) {
				clash = true
				break
			}
		}
		if !clash {
			return b
		}
		b = fmt.Sprintf("%s_%d", base, i)
	}
}

// textPart is the human-readable explanation (RFC 6522 section 3, first part).
func textPart(l *lang, r *Report, rcpts []recipient, mta string, date time.Time) []byte {
	text := l.body(mta, r, rcpts)
	cte, body := encodeText([]byte(text))
	var b bytes.Buffer
	field(&b, "Content-Type", "text/plain; charset=utf-8")
	field(&b, "Content-Language", l.code)
	field(&b, "Content-Description", "Notification")
	field(&b, "Content-Transfer-Encoding", cte)
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

// statusPart is the message/delivery-status part (RFC 3464 section 2).
func statusPart(r *Report, rcpts []recipient, mta string) []byte {
	var b bytes.Buffer
	field(&b, "Content-Type", "message/delivery-status")
	field(&b, "Content-Description", "Delivery report")
	b.WriteString("\r\n")
	// Per-message fields (section 2.2).
	field(&b, "Reporting-MTA", "dns; "+mta)
	if r.EnvelopeID != "" {
		field(&b, "Original-Envelope-Id", xtext(cut(r.EnvelopeID, 100)))
	}
	if !r.Arrived.IsZero() {
		field(&b, "Arrival-Date", r.Arrived.Format(time.RFC1123Z))
	}
	// Per-recipient fields (section 2.3), each block after a blank line.
	for _, rc := range rcpts {
		b.WriteString("\r\n")
		field(&b, "Final-Recipient", typedAddress(rc.Address))
		if rc.Original != "" {
			field(&b, "Original-Recipient", typedAddress(rc.Original))
		}
		field(&b, "Action", "failed")
		field(&b, "Status", rc.status)
		field(&b, "Diagnostic-Code", "smtp; "+diagnostic(rc))
	}
	return b.Bytes()
}

// diagnostic is the Diagnostic-Code text: mxdrop's own fixed wording for the status,
// never the text of an internal error.
func diagnostic(rc recipient) string {
	if d := serverReply(rc.Diagnostic); d != "" {
		return d
	}
	addr := typedAddress(rc.Address)
	if i := strings.IndexByte(addr, ' '); i >= 0 {
		addr = addr[i+1:]
	}
	text, ok := diagnosticText[rc.status]
	if !ok {
		text = "delivery failed"
	}
	return fmt.Sprintf("%d %s <%s>: %s", rc.code, rc.status, addr, text)
}

// serverReply returns a mail server's reply as a Diagnostic-Code text: printable
// ASCII on one line, at most 400 octets.
func serverReply(s string) string {
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= 400 {
			break
		}
		switch {
		case r == '\r' || r == '\n' || r == '\t':
			b.WriteByte(' ')
		case r >= ' ' && r < 0x7f:
			b.WriteRune(r)
		default:
			b.WriteByte('?')
		}
	}
	return strings.TrimSpace(b.String())
}

// diagnosticText is the reply text of the Diagnostic-Code by status, the wording an MTA
// would have used at SMTP time.
var diagnosticText = map[string]string{
	"5.1.1": "mailbox unknown",
	"5.1.2": "domain not accepted here",
	"5.1.3": "bad recipient address syntax",
	"5.2.2": "mailbox full",
	"5.3.4": "message too big",
	"5.6.0": "message content not accepted",
}

// headersPart is the original's header block as text/rfc822-headers (RFC 6522
// section 4). Fields only the local delivery added (see localFields) are left out.
func headersPart(h *importer.Header) []byte {
	var raw []byte
	for _, f := range visibleFields(h) {
		if len(raw)+len(f.Raw) > maxHeaderCopy {
			break
		}
		raw = append(raw, f.Raw...)
		if !bytes.HasSuffix(f.Raw, []byte("\n")) {
			raw = append(raw, '\n') // the last field of a header that ended at EOF
		}
	}
	cte, body := encodeText(raw)
	var b bytes.Buffer
	field(&b, "Content-Type", "text/rfc822-headers")
	field(&b, "Content-Description", "Undelivered Message Headers")
	field(&b, "Content-Transfer-Encoding", cte)
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

// localFields are the envelope fields a local delivery agent puts on top of a message.
// They name the local recipients (Bcc included), which a DSN must not reveal to a
// sender who may be forged; a copy of the original header in a DSN leaves them out.
var localFields = map[string]bool{
	"delivered-to": true, "x-original-to": true, "envelope-to": true, "x-envelope-to": true,
}

// visibleFields returns the fields of h that a DSN repeats: all but an IIS/Exchange
// pickup block (x-sender/x-receiver lines at the very top, never part of a message)
// and the local envelope fields above the first Received.
func visibleFields(h *importer.Header) []importer.Field {
	out := make([]importer.Field, 0, len(h.Fields))
	top, pickup := true, true
	for _, f := range h.Fields {
		if pickup && (f.Name == "x-sender" || f.Name == "x-receiver") {
			continue
		}
		pickup = false
		if f.Name == "received" {
			top = false
		}
		if top && localFields[f.Name] {
			continue
		}
		out = append(out, f)
	}
	return out
}
