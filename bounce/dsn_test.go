package bounce

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"io"
	"mime"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"

	"github.com/mxdrop/mxdrop/importer"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func buildFixture(t *testing.T, language string) *DSN {
	t.Helper()
	msg, res := fixture(t)
	d, err := Build(NewReport(msg, res), Options{ReportingMTA: "mx.example.com", Language: language, Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	return d
}

func TestBuildGolden(t *testing.T) {
	for _, language := range []string{"en", "de"} {
		t.Run(language, func(t *testing.T) {
			d := buildFixture(t, language)
			golden := filepath.Join("testdata", "dsn_"+language+".golden")
			if *update {
				if err := os.WriteFile(golden, d.Data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./bounce/ -run Golden -update to create it)", err)
			}
			if !bytes.Equal(d.Data, want) {
				t.Errorf("DSN differs from %s (run with -update after checking the change):\n%s", golden, d.Data)
			}
		})
	}
}

// checkWire checks the transport form: CRLF only, 7-bit, lines of at most 998 octets.
func checkWire(t *testing.T, data []byte) {
	t.Helper()
	if !bytes.HasSuffix(data, []byte("\r\n")) {
		t.Error("does not end with CRLF")
	}
	for i, line := range bytes.Split(data, []byte("\r\n")) {
		if bytes.ContainsAny(line, "\r\n") {
			t.Errorf("line %d has a bare CR or LF: %q", i+1, line)
		}
		if len(line) > 998 {
			t.Errorf("line %d is %d octets long", i+1, len(line))
		}
		for _, c := range line {
			if c >= 0x80 || c == 0 {
				t.Errorf("line %d is not 7-bit: %q", i+1, line)
				break
			}
		}
	}
}

// dsnParts parses a DSN with go-message and returns its header and the decoded parts.
func dsnParts(t *testing.T, data []byte) (mail.Header, []*message.Entity, [][]byte) {
	t.Helper()
	e, err := message.Read(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("parse DSN: %v", err)
	}
	mr := e.MultipartReader()
	if mr == nil {
		t.Fatal("DSN is not multipart")
	}
	var parts []*message.Entity
	var bodies [][]byte
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("next part: %v", err)
		}
		b, err := io.ReadAll(p.Body)
		if err != nil {
			t.Fatalf("read part: %v", err)
		}
		parts = append(parts, p)
		bodies = append(bodies, b)
	}
	return mail.Header{Header: e.Header}, parts, bodies
}

// statusBlocks splits a message/delivery-status body into its field blocks.
func statusBlocks(t *testing.T, body []byte) []textproto.Header {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(body))
	var blocks []textproto.Header
	for {
		if _, err := br.Peek(1); err == io.EOF {
			break
		}
		h, err := textproto.ReadHeader(br)
		if err != nil {
			t.Fatalf("read status block: %v", err)
		}
		if h.Len() > 0 {
			blocks = append(blocks, h)
		}
	}
	return blocks
}

func TestBuildParse(t *testing.T) {
	for _, tc := range []struct {
		language, subject, from, textWant, reason string
	}{
		{"en", "Undelivered Mail Returned to Sender", "Mail Delivery System", "could not be delivered", "mailbox unknown"},
		{"de", "Unzustellbare Nachricht zurück an den Absender", "Mail-Zustellsystem", "nicht zugestellt", "Postfach unbekannt"},
	} {
		t.Run(tc.language, func(t *testing.T) {
			d := buildFixture(t, tc.language)
			checkWire(t, d.Data)
			h, parts, bodies := dsnParts(t, d.Data)

			from, err := h.AddressList("From")
			if err != nil || len(from) != 1 || from[0].Address != "MAILER-DAEMON@mx.example.com" || from[0].Name != tc.from {
				t.Errorf("From = %v, %v", from, err)
			}
			to, err := h.AddressList("To")
			if err != nil || len(to) != 1 || to[0].Address != "alice@sender.example" {
				t.Errorf("To = %v, %v", to, err)
			}
			if s, err := h.Subject(); err != nil || s != tc.subject {
				t.Errorf("Subject = %q, %v", s, err)
			}
			if date, err := h.Date(); err != nil || !date.Equal(t0) {
				t.Errorf("Date = %v, %v", date, err)
			}
			if v := h.Get("Auto-Submitted"); v != "auto-replied" {
				t.Errorf("Auto-Submitted = %q", v)
			}
			if v := h.Get("MIME-Version"); v != "1.0" {
				t.Errorf("MIME-Version = %q", v)
			}
			if v := h.Get("Message-Id"); v != d.MessageID || !strings.HasSuffix(v, "@mx.example.com>") {
				t.Errorf("Message-ID = %q, DSN.MessageID %q", v, d.MessageID)
			}
			for _, f := range []string{"In-Reply-To", "References"} {
				if v := h.Get(f); v != "<20260304045958.123@sender.example>" {
					t.Errorf("%s = %q", f, v)
				}
			}
			mt, params, err := h.ContentType()
			if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
				t.Errorf("Content-Type = %s %v, %v", mt, params, err)
			}
			if len(parts) != 3 {
				t.Fatalf("%d parts, want 3", len(parts))
			}

			// 1: the explanation.
			mt, params, _ = parts[0].Header.ContentType()
			if mt != "text/plain" || params["charset"] != "utf-8" {
				t.Errorf("part 1 Content-Type = %s %v", mt, params)
			}
			text := string(bodies[0])
			for _, want := range []string{tc.textWant, tc.reason, "<nobody@example.com>", "<ghost@example.com>", "Grüße aus Köln", "mx.example.com", "<20260304045958.123@sender.example>"} {
				if !strings.Contains(text, want) {
					t.Errorf("text part lacks %q:\n%s", want, text)
				}
			}
			if strings.Contains(text, "bob@example.com") {
				t.Error("text part names a recipient that did not fail")
			}

			// 2: the machine-readable report.
			mt, _, _ = parts[1].Header.ContentType()
			if mt != "message/delivery-status" {
				t.Errorf("part 2 Content-Type = %s", mt)
			}
			blocks := statusBlocks(t, bodies[1])
			if len(blocks) != 3 {
				t.Fatalf("%d status blocks, want 1 per-message and 2 per-recipient:\n%s", len(blocks), bodies[1])
			}
			if v := blocks[0].Get("Reporting-MTA"); v != "dns; mx.example.com" {
				t.Errorf("Reporting-MTA = %q", v)
			}
			if v := blocks[0].Get("Arrival-Date"); v != "Wed, 04 Mar 2026 05:00:00 +0100" {
				t.Errorf("Arrival-Date = %q", v)
			}
			if blocks[0].Has("Original-Envelope-Id") {
				t.Error("Original-Envelope-Id without an ENVID")
			}
			for i, rcpt := range []string{"nobody@example.com", "ghost@example.com"} {
				b := blocks[i+1]
				checks := map[string]string{
					"Final-Recipient": "rfc822; " + rcpt,
					"Action":          "failed",
					"Status":          "5.1.1",
					"Diagnostic-Code": "smtp; 550 5.1.1 <" + rcpt + ">: mailbox unknown",
				}
				for f, want := range checks {
					if v := b.Get(f); v != want {
						t.Errorf("recipient %d %s = %q, want %q", i+1, f, v, want)
					}
				}
				if b.Has("Original-Recipient") {
					t.Errorf("recipient %d: Original-Recipient without an ORCPT", i+1)
				}
			}

			// 3: the original header block, less the local envelope fields.
			mt, _, _ = parts[2].Header.ContentType()
			if mt != "text/rfc822-headers" {
				t.Errorf("part 3 Content-Type = %s", mt)
			}
			raw, _ := os.ReadFile("testdata/original.eml")
			head := string(raw[:bytes.Index(raw, []byte("\n\n"))+1])
			var want strings.Builder
			for _, line := range strings.SplitAfter(head, "\n") {
				if strings.HasPrefix(line, "X-Original-To:") || strings.HasPrefix(line, "Delivered-To:") {
					continue
				}
				want.WriteString(strings.ReplaceAll(line, "\n", "\r\n"))
			}
			if got := string(bodies[2]); got != want.String() {
				t.Errorf("rfc822-headers part:\n%q\nwant\n%q", got, want.String())
			}
		})
	}
}

func TestBuildNonASCII(t *testing.T) {
	// 8-bit subject as SMTPUTF8 mail carries it, an IDN sender domain, a UTF-8
	// recipient, an IIS pickup block, an ENVID and an ORCPT.
	hdr := "x-sender: <sender@bücher.example>\r\nx-receiver: <jörg@example.com>\r\n" +
		"From: sender@bücher.example\r\nSubject: Grüße\r\nMessage-ID: <a b>\r\n\r\n"
	h := parseHeader(t, hdr)
	r := Report{
		ID: "x", Sender: "sender@bücher.example", EnvelopeID: "env+1 x", Subject: "Grüße", MessageID: "<a b>",
		Header: h,
		Recipients: []Recipient{
			{Address: "jörg@example.com", Status: "5.1.1"},
			{Address: "Bob@Example.COM", Original: "bob@old.example", Status: "5.1.2"},
		},
	}
	d, err := Build(r, Options{ReportingMTA: "MX.Example.com", Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	checkWire(t, d.Data)
	h2, parts, bodies := dsnParts(t, d.Data)
	if to, err := h2.AddressList("To"); err != nil || to[0].Address != "sender@xn--bcher-kva.example" {
		t.Errorf("To = %v, %v", to, err)
	}
	if d.Sender != "sender@xn--bcher-kva.example" {
		t.Errorf("Sender = %q", d.Sender)
	}
	if h2.Has("In-Reply-To") {
		t.Error("In-Reply-To from a Message-ID that is not one")
	}
	if !strings.Contains(h2.Get("From"), "MAILER-DAEMON@mx.example.com") {
		t.Errorf("From = %q", h2.Get("From"))
	}
	if !strings.Contains(string(bodies[0]), "<jörg@example.com>") || !strings.Contains(string(bodies[0]), "Grüße") {
		t.Errorf("text part:\n%s", bodies[0])
	}
	blocks := statusBlocks(t, bodies[1])
	if v := blocks[0].Get("Original-Envelope-Id"); v != "env+2B1+20x" {
		t.Errorf("Original-Envelope-Id = %q", v)
	}
	if blocks[0].Has("Arrival-Date") {
		t.Error("Arrival-Date without an arrival time")
	}
	if v := blocks[1].Get("Final-Recipient"); v != `utf-8; j\x{F6}rg@example.com` {
		t.Errorf("Final-Recipient = %q", v)
	}
	if v := blocks[2].Get("Original-Recipient"); v != "rfc822; bob@old.example" {
		t.Errorf("Original-Recipient = %q", v)
	}
	if v := blocks[2].Get("Status"); v != "5.1.2" {
		t.Errorf("Status = %q", v)
	}
	if v := parts[2].Header.Get("Content-Transfer-Encoding"); v != "quoted-printable" {
		t.Errorf("8-bit headers sent as %q", v)
	}
	if want := "From: sender@bücher.example\r\nSubject: Grüße\r\nMessage-ID: <a b>\r\n"; string(bodies[2]) != want {
		t.Errorf("headers part %q, want %q (the pickup block left out)", bodies[2], want)
	}
}

func TestBuildErrors(t *testing.T) {
	ok := Report{Sender: "a@b.example", Recipients: []Recipient{{Address: "x@y.example", Status: "5.1.1"}}}
	opts := Options{ReportingMTA: "mx.example.com"}
	for _, tc := range []struct {
		name string
		edit func(*Report, *Options)
		want error
	}{
		{"no recipients", func(r *Report, _ *Options) { r.Recipients = nil }, ErrNoRecipients},
		{"null sender", func(r *Report, _ *Options) { r.Sender = "" }, ErrBadSender},
		{"header injection", func(r *Report, _ *Options) { r.Sender = "a@b.example\r\nBcc: x@y" }, ErrBadSender},
		{"quoted local part", func(r *Report, _ *Options) { r.Sender = `"a b"@b.example` }, ErrBadSender},
		{"temporary status", func(r *Report, _ *Options) { r.Recipients[0].Status = "4.2.2" }, ErrNotPermanent},
		{"garbage status", func(r *Report, _ *Options) { r.Recipients[0].Status = "550" }, ErrNotPermanent},
		{"language", func(_ *Report, o *Options) { o.Language = "fr" }, nil},
		{"reporting mta", func(_ *Report, o *Options) { o.ReportingMTA = "" }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, o := ok, opts
			r.Recipients = append([]Recipient(nil), ok.Recipients...)
			tc.edit(&r, &o)
			_, err := Build(r, o)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Errorf("Build = %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := Build(ok, opts); err != nil {
		t.Errorf("Build of a good report: %v", err)
	}
}

func TestBuildMessageID(t *testing.T) {
	r := Report{ID: "one", Sender: "a@b.example", Recipients: []Recipient{{Address: "x@y.example"}}}
	o := Options{ReportingMTA: "mx.example.com"}
	d1, _ := Build(r, o)
	d2, _ := Build(r, o)
	if d1.MessageID != d2.MessageID {
		t.Errorf("one message, two Message-IDs: %s %s", d1.MessageID, d2.MessageID)
	}
	r.ID = "two"
	d3, _ := Build(r, o)
	if d3.MessageID == d1.MessageID {
		t.Error("two messages, one Message-ID")
	}
	r.ID = ""
	d4, _ := Build(r, o)
	d5, _ := Build(r, o)
	if d4.MessageID == d5.MessageID {
		t.Error("random Message-IDs repeat")
	}
	if !bytes.Contains(d1.Data, []byte("Status: 5.0.0\r\n")) {
		t.Error("an empty status is not reported as 5.0.0")
	}
}

func TestPickBoundary(t *testing.T) {
	b := pickBoundary("seed", nil)
	if got := pickBoundary("seed", [][]byte{[]byte("x\r\n--" + b + "\r\n")}); got == b {
		t.Errorf("boundary %q occurs in a part", got)
	}
}

func TestFold(t *testing.T) {
	long := "Diagnostic-Code: smtp; 550 5.1.1 <" + strings.Repeat("a", 60) + "@example.com>: mailbox unknown"
	f := fold(long)
	for _, l := range strings.Split(f, "\r\n") {
		if len(l) > 78 && strings.Contains(l, " ") && !strings.HasPrefix(l, " <") {
			t.Errorf("line not folded: %q", l)
		}
	}
	if strings.ReplaceAll(f, "\r\n", "") != long {
		t.Errorf("folding changed the value: %q", f)
	}
	if s := mime.QEncoding.Encode("utf-8", langDE.subject); !strings.HasPrefix(s, "=?utf-8?q?") {
		t.Errorf("German subject not encoded: %q", s)
	}
}

func TestVisibleFields(t *testing.T) {
	h := parseHeader(t, "x-sender: a@b\nx-receiver: c@d\nDelivered-To: c@d\nReceived: x\nDelivered-To: e@f\nSubject: s\n\n")
	var names []string
	for _, f := range visibleFields(h) {
		names = append(names, f.Name)
	}
	if got := strings.Join(names, ","); got != "received,delivered-to,subject" {
		t.Errorf("visible fields %s", got)
	}
	_ = importer.Header{}
}

// TestBuildServerDiagnostic: a recipient a mail server refused over LMTP carries the
// server's reply as its Diagnostic-Code, made one printable line; a mailbox full without
// one gets mxdrop's own wording.
func TestBuildServerDiagnostic(t *testing.T) {
	msg, res := fixture(t)
	res.Failed = []importer.Failure{
		{Recipient: "carol@example.com", Status: "5.2.2", Diagnostic: "552 5.2.2 <carol@example.com> Quota exceeded\r\n(mailbox for user is full)\x01"},
		{Recipient: "dave@example.com", Status: "5.2.2"},
	}
	d, err := Build(NewReport(msg, res), Options{ReportingMTA: "mx.example.com", Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Diagnostic-Code: smtp; 552 5.2.2 <carol@example.com> Quota exceeded  (mailbox for user is full)?\r\n",
		"Diagnostic-Code: smtp; 552 5.2.2 <dave@example.com>: mailbox full\r\n",
	} {
		unfolded := bytes.ReplaceAll(d.Data, []byte("\r\n "), []byte(" "))
		if !bytes.Contains(unfolded, []byte(want)) {
			t.Errorf("DSN lacks %q:\n%s", want, d.Data)
		}
	}
}
