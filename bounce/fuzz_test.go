package bounce

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message"

	"github.com/mxdrop/mxdrop/importer"
)

// FuzzBuild feeds Build header blocks, subjects, senders and recipients from the
// outside world: whatever it accepts must stay 7-bit with CRLF lines of at most 998
// octets, and parse as a three-part multipart/report.
func FuzzBuild(f *testing.F) {
	f.Add("Subject: hi\nMessage-ID: <a@b>\n\n", "hi", "a@b.example", "x@y.example", "<a@b>")
	f.Add("Subject: Gr\xc3\xbc\xc3\x9fe\r\nX: \xff\xfe\r\n\r\n", "=?iso-8859-1?q?Gr=FC=DFe?=", "a@b\xc3\xbc.example", "j\xc3\xb6rg@example.com", "<<>>")
	f.Add("X: "+strings.Repeat("a", 3000)+"\n\n", strings.Repeat("=?utf-8?b?w7w=?= ", 100), "a@[192.0.2.1]", strings.Repeat("x", 600)+"@y", "")
	f.Add("x-sender: a@b\nx-receiver: c@d\nSubject: --=_mxdrop_\n\n", "\x00\r\n", "a@b.example", "\"q r\"@y", "<id@host> (c)")
	f.Fuzz(func(t *testing.T, header, subject, sender, rcpt, msgID string) {
		var h *importer.Header
		if hh, err := importer.ReadHeader(bufio.NewReader(strings.NewReader(header))); err == nil {
			h = hh
		}
		r := Report{ID: header, Sender: sender, Subject: subject, MessageID: msgID, Header: h, EnvelopeID: subject,
			Arrived: t0, Recipients: []Recipient{{Address: rcpt, Original: rcpt, Status: "5.1.1"}}}
		d, err := Build(r, Options{ReportingMTA: "mx.example.com", Language: "de", Now: func() time.Time { return t0 }})
		if err != nil {
			return
		}
		for i, line := range bytes.Split(bytes.TrimSuffix(d.Data, []byte("\r\n")), []byte("\r\n")) {
			if len(line) > 998 || bytes.ContainsAny(line, "\r\n\x00") {
				t.Fatalf("line %d: %q", i+1, line)
			}
			for _, c := range line {
				if c >= 0x80 {
					t.Fatalf("line %d not 7-bit: %q", i+1, line)
				}
			}
		}
		e, err := message.Read(bytes.NewReader(d.Data))
		if err != nil {
			t.Fatalf("parse: %v", err)
		}
		mr := e.MultipartReader()
		if mr == nil {
			t.Fatal("not multipart")
		}
		n := 0
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("part %d: %v", n+1, err)
			}
			io.Copy(io.Discard, p.Body)
			n++
		}
		if want := 2 + map[bool]int{true: 1}[h != nil]; n != want {
			t.Fatalf("%d parts, want %d", n, want)
		}
	})
}
