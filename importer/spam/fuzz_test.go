package spam

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer"
)

// FuzzClassify runs the built-in rules over arbitrary messages: no panic, no error from
// an in-memory message, and a Reason for every spam verdict.
func FuzzClassify(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "messages", "*.eml"))
	more, _ := filepath.Glob(filepath.Join("testdata", "*.eml"))
	for _, p := range append(files, more...) {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("Subject: =?utf-8?b?Y2FzaW5v?=\n\nx"))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=a\n\n--a\nContent-Type: multipart/alternative; boundary=b\n\n--b\n" +
		"Content-Type: text/html; charset=koi8-r\nContent-Transfer-Encoding: quoted-printable\n\n<p>vi=\nag<b>ra</b>&amp;<!-- x --></p>\n--b--\n--a--\n"))
	f.Add([]byte("Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\nY2hlYXAgcGlsbHM=\n"))
	c, err := New(configs.Spam{Words: testWords, BlockedSenders: []string{"@bad.example", "spam@x.example"}}, zerolog.Nop())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		h, err := importer.ReadHeader(bufioReader(raw))
		if err != nil {
			return
		}
		v, err := c.Classify(t.Context(), h, importer.ExtractEnvelope(h, nil), opener(raw, nil))
		if err != nil {
			t.Fatalf("Classify: %v", err)
		}
		if v.Spam && v.Reason == "" {
			t.Fatalf("spam without a reason: %+v", v)
		}
	})
}

// FuzzScannerPieces checks that the text scanner finds the same entry however the text
// is cut into pieces: words and UTF-8 sequences across reads.
func FuzzScannerPieces(f *testing.F) {
	f.Add([]byte("Buy VIAGRA now"), uint16(6), false)
	f.Add([]byte("СУПЕР КАЗИНО"), uint16(13), false)
	f.Add([]byte("<p>Vi<b>ag</b>ra &amp; cheap&nbsp;pills</p>"), uint16(7), true)
	f.Add([]byte("gr\xc3\xb6\xc3\x9fe"), uint16(3), false)
	f.Add([]byte("free money now"), uint16(5), true)
	tbl := newWordTable()
	for _, w := range testWords {
		if err := tbl.add(w); err != nil {
			f.Fatal(err)
		}
	}
	scan := func(html bool, pieces ...[]byte) string {
		s := newTextScanner(tbl)
		s.reset(html)
		for _, p := range pieces {
			s.write(p)
		}
		return s.end()
	}
	f.Fuzz(func(t *testing.T, text []byte, cut uint16, html bool) {
		i := int(cut) % (len(text) + 1)
		whole := scan(html, text)
		if got := scan(html, text[:i], text[i:]); got != whole {
			t.Fatalf("cut at %d: %q, whole: %q", i, got, whole)
		}
		var bytewise [][]byte
		for j := range text {
			bytewise = append(bytewise, text[j:j+1])
		}
		if got := scan(html, bytewise...); got != whole {
			t.Fatalf("byte by byte: %q, whole: %q", got, whole)
		}
	})
}
