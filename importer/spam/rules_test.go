package spam

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer"
)

// received is the top of a message Postfix delivered.
const received = "Return-Path: <newsletter@shop.example>\n" +
	"X-Original-To: alice@example.com\n" +
	"Delivered-To: alice@example.com\n" +
	"Received: from mail.shop.example (mail.shop.example [203.0.113.9])\n" +
	"\tby mx.example.com (Postfix) with ESMTPS id 4Tq2Xk1ZP3z9sQ\n" +
	"\tfor <alice@example.com>; Tue,  2 Jan 2024 10:15:02 +0100 (CET)\n" +
	"From: Shop <newsletter@shop.example>\n" +
	"To: alice@example.com\n" +
	"Date: Tue, 2 Jan 2024 10:15:00 +0100\n" +
	"Message-ID: <20240102091500.4711@shop.example>\n" +
	"MIME-Version: 1.0\n"

// TestWords runs the word table over real-looking messages: encoded subjects, transfer
// encodings, HTML, nesting, attachments, and words inside other words.
func TestWords(t *testing.T) {
	c, _ := newChecker(t, configs.Spam{Words: testWords})
	for _, tc := range []struct {
		name string
		raw  string
		want string // the Reason, "" for a clean message
	}{
		{"plain clean", received + lf(
			"Subject: Your order 4711 has shipped",
			"Content-Type: text/plain; charset=utf-8",
			"",
			"Hello Alice,",
			"your parcel is on its way. Cheap shipping, as always.",
			"Pills of wisdom: a casual casinos-free newsletter.",
			""), ""},
		{"plain word, mixed case", received + lf(
			"Subject: hello",
			"",
			"Get ViAgRa today!",
			""), `word "viagra" in body`},
		{"subject UTF-8 B", received + lf(
			"Subject: =?UTF-8?B?R8O8bnN0aWdlIFZJQUdSQSBoaWVyIOKAkyBudXIgaGV1dGU=?=",
			"",
			"nothing here",
			""), `word "viagra" in subject`},
		{"subject UTF-8 Q, folded", received + lf(
			"Subject: =?utf-8?q?Billige_Vi?=",
			" =?utf-8?q?agra_f=C3=BCr_Sie?=",
			"",
			"nothing here",
			""), `word "viagra" in subject`},
		{"subject ISO-8859-1 Q, non-ASCII entry", received + lf(
			"Subject: =?ISO-8859-1?Q?Die_richtige_GR=D6=DFE?=",
			"",
			"nothing here",
			""), `word "gr\u00f6\u00dfe" in subject`},
		{"subject KOI8-R B, Cyrillic entry", received + lf(
			"Subject: =?koi8-r?B?8/Xw5fIg6+H66e7vIM/OzMHKzg==?=",
			"",
			"nothing here",
			""), `word "\u043a\u0430\u0437\u0438\u043d\u043e" in subject`},
		{"subject unknown charset, ASCII word", received + lf(
			"Subject: =?x-klingon?Q?free_CASINO?=",
			"",
			"nothing here",
			""), `word "casino" in subject`},
		{"subject 8-bit raw", received + lf(
			"Subject: Größe – Viagra",
			"",
			"nothing",
			""), `word "gr\u00f6\u00dfe" in subject`},
		{"base64 body, phrase across lines", received + lf(
			"Subject: Hello friend",
			"Content-Type: text/plain; charset=UTF-8",
			"Content-Transfer-Encoding: base64",
			"",
			"SGVsbG8gZnJpZW5kLA0KDQpXZSBoYXZlIGNoZWFwDQpwaWxscyBmb3IgeW91LCBzaGlwcGVkIGRp",
			"c2NyZWV0bHkgd29ybGR3aWRlLg0KTm8gcHJlc2NyaXB0aW9uIG5lZWRlZC4NCg==",
			""), `word "cheap pills" in body`},
		{"quoted-printable soft break inside the word", received + lf(
			"Subject: offer",
			"Content-Type: text/plain; charset=iso-8859-1",
			"Content-Transfer-Encoding: quoted-printable",
			"",
			"Sehr geehrte Kundin, unser Angebot f=FCr Sie: echtes Vi=",
			"agra zum halben Preis. Gr=FC=DFe!",
			""), `word "viagra" in body`},
		{"quoted-printable, clean", received + lf(
			"Subject: offer",
			"Content-Type: text/plain; charset=iso-8859-1",
			"Content-Transfer-Encoding: quoted-printable",
			"",
			"Viele Gr=FC=DFe aus dem Casino=",
			"s-Museum",
			""), ""},
		{"quoted-printable with a long line before the word", received + lf(
			"Subject: offer",
			"Content-Type: text/plain; charset=utf-8",
			"Content-Transfer-Encoding: quoted-printable",
			"",
			strings.Repeat("padding ", 2000)+"and then casino",
			""), `word "casino" in body`},
		{"html part, tags inside the word and entities", received + lf(
			"Subject: newsletter",
			"Content-Type: text/html; charset=utf-8",
			"",
			"<html><head><style>p.viagra { color: red }</style><title>News</title></head>",
			`<body><p class="viagra">Order <b>Via</b>gra &amp; more</p></body></html>`,
			""), `word "viagra" in body`},
		{"html numeric references", received + lf(
			"Subject: newsletter",
			"Content-Type: text/html",
			"",
			"<p>&#x76;iagr&#97; for&nbsp;you</p>",
			""), `word "viagra" in body`},
		{"html: markup only, block tags separate words", received + lf(
			"Subject: newsletter",
			"Content-Type: text/html; charset=utf-8",
			"",
			`<!-- viagra --><script>var viagra = 1;</script><style>.casino{}</style>`,
			`<a href="https://casino.example/" title="viagra">our cas</a><br>ino <div>cheap</div><img alt="x">pills?`,
			`<p>cheap<br/>pills</p>`,
			""), `word "cheap pills" in body`},
		{"html: markup only, nothing", received + lf(
			"Subject: newsletter",
			"Content-Type: text/html; charset=utf-8",
			"",
			`<!-- viagra --><script>var viagra = 1;</script><style>.casino{}</style>`,
			`<a href="https://casino.example/" title="viagra">our cas</a><br>ino`,
			""), ""},
		{"soft hyphen and zero-width space inside the word", received + lf(
			"Subject: hi",
			"Content-Type: text/plain; charset=utf-8",
			"",
			"Try vi\u00adag\u200bra now",
			""), `word "viagra" in body`},
		{"substrings are not words", received + lf(
			"Subject: Viagras and aviagra and casinos",
			"",
			"viagras aviagra Viagraaa casinoroyale, xcasino, cheap-pillsbury",
			"free money later; money now",
			""), ""},
		{"phrase with another word between", received + lf(
			"Subject: hi",
			"",
			"cheap blue pills; free money, now!",
			""), `word "free money now" in body`},
		{"nested alternative inside mixed, CRLF", crlf(
			"Return-Path: <newsletter@shop.example>",
			"Delivered-To: alice@example.com",
			"From: Shop <newsletter@shop.example>",
			"Subject: Your weekly news",
			"MIME-Version: 1.0",
			`Content-Type: multipart/mixed; boundary="outer-1"`,
			"",
			"This is a multi-part message in MIME format. viagra in the preamble is not shown.",
			"",
			"--outer-1",
			`Content-Type: multipart/alternative; boundary="inner-2"`,
			"",
			"--inner-2",
			"Content-Type: text/plain; charset=us-ascii",
			"",
			"Plain text version without the word.",
			"--inner-2",
			"Content-Type: text/html; charset=windows-1252",
			"Content-Transfer-Encoding: quoted-printable",
			"",
			"<p>Caf=E9 news: win at the <i>CAS</i>INO=",
			" tonight</p>",
			"--inner-2--",
			"",
			"--outer-1",
			"Content-Type: image/png",
			"Content-Transfer-Encoding: base64",
			"",
			"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==",
			"--outer-1--",
			"epilogue viagra",
			""), `word "casino" in body`},
		{"attachments containing the words", received + lf(
			"Subject: the report you asked for",
			`Content-Type: multipart/mixed; boundary="b1"`,
			"",
			"--b1",
			"Content-Type: text/plain; charset=utf-8",
			"",
			"Please find the report attached.",
			"--b1",
			`Content-Type: application/pdf; name="report.pdf"`,
			"Content-Transfer-Encoding: base64",
			`Content-Disposition: attachment; filename="report.pdf"`,
			"",
			"JVBERi0xLjQgdmlhZ3JhIHZpYWdyYSBjaGVhcCBwaWxscw==",
			"--b1",
			"Content-Type: text/plain; charset=utf-8",
			`Content-Disposition: attachment; filename="notes.txt"`,
			"",
			"viagra casino cheap pills",
			"--b1",
			`Content-Type: text/plain; name="old-style.txt"`,
			"",
			"viagra",
			"--b1",
			"Content-Type: message/rfc822",
			"",
			"Subject: viagra",
			"",
			"viagra",
			"--b1--",
			""), ""},
		{"text after an attachment is scanned", received + lf(
			"Subject: hi",
			`Content-Type: multipart/mixed; boundary=b1`,
			"",
			"--b1",
			"Content-Type: application/octet-stream",
			"Content-Transfer-Encoding: base64",
			"",
			"AAECAwQFBgcICQ==",
			"--b1",
			"Content-Type: text/plain",
			"",
			"casino",
			"--b1--",
			""), `word "casino" in body`},
		{"truncated multipart without close delimiter", received + lf(
			"Subject: hi",
			`Content-Type: multipart/alternative; boundary="zz"`,
			"",
			"--zz",
			"Content-Type: text/plain",
			"",
			"just a casino",
			""), `word "casino" in body`},
		{"sloppy Content-Type parameters", received + lf(
			"Subject: hi",
			`Content-Type: multipart/alternative; boundary=abc def; charset=utf-8`,
			"",
			"--abc",
			"Content-Type: text/plain",
			"",
			"viagra",
			"--abc--",
			""), `word "viagra" in body`},
		{"unknown body charset, ASCII word", received + lf(
			"Subject: hi",
			"Content-Type: text/plain; charset=x-unknown-8bit",
			"",
			"viagra",
			""), `word "viagra" in body`},
		{"mbox From line", "From newsletter@shop.example Tue Jan  2 10:15:02 2024\n" + received + lf(
			"Subject: hi",
			"",
			"casino",
			""), `word "casino" in body`},
		{"header only", received + "Subject: hello", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := classify(t, c, tc.raw, nil)
			if err != nil {
				t.Fatalf("Classify: %v", err)
			}
			if v.Spam != (tc.want != "") || v.Reason != tc.want || v.Score != 0 {
				t.Errorf("verdict %+v, want reason %q", v, tc.want)
			}
		})
	}
}

// TestWordAcrossReads puts the word across the scanner's read boundaries, including
// inside a multi-byte character.
func TestWordAcrossReads(t *testing.T) {
	c, _ := newChecker(t, configs.Spam{Words: []string{"казино"}})
	for pad := 16<<10 - 8; pad < 16<<10+8; pad++ {
		raw := "Subject: x\n\n" + strings.Repeat("a", pad) + " КАЗИНО\n"
		v, err := classify(t, c, raw, &importer.Envelope{})
		if err != nil || v.Reason != `word "\u043a\u0430\u0437\u0438\u043d\u043e" in body` {
			t.Fatalf("pad %d: %+v %v", pad, v, err)
		}
	}
	// A word longer than any entry can be never matches, however long.
	raw := "Subject: x\n\n" + strings.Repeat("x", 1<<20) + "казино\n"
	if v, err := classify(t, c, raw, &importer.Envelope{}); err != nil || v.Spam {
		t.Fatalf("%+v %v", v, err)
	}
}

// TestScanBounds checks that the scan stops at MaxPartText per part and at MaxParts.
func TestScanBounds(t *testing.T) {
	c, _ := newChecker(t, configs.Spam{Words: []string{"viagra"}})
	big := "Subject: x\n\n" + strings.Repeat("lorem ipsum dolor sit amet\n", MaxPartText/27+10) + "viagra\n"
	if v, err := classify(t, c, big, &importer.Envelope{}); err != nil || v.Spam {
		t.Errorf("word past MaxPartText: %+v %v", v, err)
	}
	var b strings.Builder
	b.WriteString("Subject: x\nContent-Type: multipart/mixed; boundary=b\n\n")
	for i := 0; i <= MaxParts; i++ {
		b.WriteString("--b\nContent-Type: text/plain\n\nclean\n")
	}
	b.WriteString("--b\nContent-Type: text/plain\n\nviagra\n--b--\n")
	if v, err := classify(t, c, b.String(), &importer.Envelope{}); err != nil || v.Spam {
		t.Errorf("word past MaxParts: %+v %v", v, err)
	}
	if n := c.Counts().TruncatedScans; n != 2 {
		t.Errorf("TruncatedScans = %d, want 2", n)
	}
}

// TestUnknownCharsetWarns checks the warning of an unknown charset.
func TestUnknownCharsetWarns(t *testing.T) {
	c, logs := newChecker(t, configs.Spam{Words: []string{"viagra"}})
	raw := received + lf("Subject: =?x-klingon?Q?hi?=", "Content-Type: text/plain; charset=x-unknown", "", "clean", "")
	if v, err := classify(t, c, raw, nil); err != nil || v.Spam {
		t.Fatalf("%+v %v", v, err)
	}
	evs := logs.events(t, "unknown charset: text scanned undecoded")
	if len(evs) != 2 {
		t.Fatalf("%d unknown-charset events, want 2 (subject and body)", len(evs))
	}
	for _, ev := range evs {
		if ev["level"] != "warn" || ev["component"] != "spam" || ev["message_id"] != "<20240102091500.4711@shop.example>" {
			t.Errorf("event %v", ev)
		}
	}
	if n := c.Counts().UnknownCharsets; n != 2 {
		t.Errorf("UnknownCharsets = %d, want 2", n)
	}
}

// TestCorpusClean runs the word table over the repository's corpus of real-world
// messages: none is spam, and none fails to be checked.
func TestCorpusClean(t *testing.T) {
	c, _ := newChecker(t, configs.Spam{Words: testWords, BlockedSenders: []string{"@bad.example"}})
	files, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "messages", "*.eml"))
	if len(files) < 10 {
		t.Fatalf("only %d corpus messages", len(files))
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		h, err := importer.ReadHeader(bufioReader(raw))
		if err != nil {
			continue // not a message: the importer quarantines it before any check
		}
		v, err := c.Classify(t.Context(), h, importer.ExtractEnvelope(h, nil), opener(raw, nil))
		if err != nil || v.Spam {
			t.Errorf("%s: %+v %v", filepath.Base(f), v, err)
		}
	}
}

// TestSenders checks blocked senders by address and by @domain, in the envelope and in
// From.
func TestSenders(t *testing.T) {
	c, _ := newChecker(t, configs.Spam{
		BlockedSenders: []string{"Spam@Bad.Example", "@junk.example", "@bücher.example", "offers@[192.0.2.7]"},
	})
	msg := func(from string) string {
		return lf("Received: from x by mx.example.com; Tue, 2 Jan 2024 10:15:02 +0100",
			"From: "+from, "To: alice@example.com", "Subject: hello", "", "hello", "")
	}
	env := func(sender string) *importer.Envelope {
		return &importer.Envelope{Sender: sender, SenderKnown: true, Recipients: []string{"alice@example.com"}}
	}
	for _, tc := range []struct {
		name string
		raw  string
		env  *importer.Envelope
		want string
	}{
		{"clean", msg("Bob <bob@ok.example>"), env("bob@ok.example"), ""},
		{"address in envelope", msg("Bob <bob@ok.example>"), env("SPAM@bad.example"), "blocked sender spam@bad.example (envelope sender)"},
		{"address in From", msg(`"Spam Team" <spam@BAD.example>`), env("bounces@ok.example"), "blocked sender spam@bad.example (From)"},
		{"envelope is looked at first", msg("offers@mx.junk.example"), env("spam@bad.example"), "blocked sender spam@bad.example (envelope sender)"},
		{"null sender, From blocked", msg("spam@bad.example"), env(""), "blocked sender spam@bad.example (From)"},
		{"second From address", msg("Bob <bob@ok.example>, Eve <eve@junk.example>"), env("bob@ok.example"), "blocked sender eve@junk.example (From, @junk.example)"},
		{"domain", msg("x@junk.example"), env("x@ok.example"), "blocked sender x@junk.example (From, @junk.example)"},
		{"subdomain", msg("ok@ok.example"), env("bounce-1@mail.eu.JUNK.example."), "blocked sender bounce-1@mail.eu.junk.example (envelope sender, @junk.example)"},
		{"other domain ending alike", msg("x@notjunk.example"), env("x@junk.example.org"), ""},
		{"address rule is not a domain rule", msg("other@bad.example"), env("spam@sub.bad.example"), ""},
		{"IDN Unicode sender", msg("x@ok.example"), env("info@BÜCHER.example"), "blocked sender info@xn--bcher-kva.example (envelope sender, @xn--bcher-kva.example)"},
		{"IDN punycode From", msg("=?utf-8?q?B=C3=BCcher?= <info@xn--bcher-kva.example>"), env("x@ok.example"), "blocked sender info@xn--bcher-kva.example (From, @xn--bcher-kva.example)"},
		{"domain literal", msg("offers@[192.0.2.7]"), env("x@ok.example"), "blocked sender offers@[192.0.2.7] (From)"},
		{"malformed From", msg("Spam <<spam@bad.example>> (((("), env("x@ok.example"), "blocked sender spam@bad.example (From)"},
		{"display name in an unknown charset", msg("=?x-klingon?q?qapla?= <spam@bad.example>"), env("x@ok.example"), "blocked sender spam@bad.example (From)"},
		{"envelope from the header", lf("Return-Path: <spam@bad.example>", "Delivered-To: alice@example.com",
			"From: ok@ok.example", "Subject: x", "", "x", ""), nil, "blocked sender spam@bad.example (envelope sender)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := classify(t, c, tc.raw, tc.env)
			if err != nil {
				t.Fatal(err)
			}
			if v.Spam != (tc.want != "") || v.Reason != tc.want || v.Score != 0 {
				t.Errorf("verdict %+v, want reason %q", v, tc.want)
			}
		})
	}
	if got := c.Counts(); got.Checked != 16 || got.Spam != 13 || got.BySender != 13 || got.Unchecked != 0 {
		t.Errorf("counts %+v", got)
	}
}

// TestSenderBeforeWords checks the order of the rules: a blocked sender decides without
// reading the body.
func TestSenderBeforeWords(t *testing.T) {
	c, _ := newChecker(t, configs.Spam{Words: []string{"viagra"}, BlockedSenders: []string{"@bad.example"}})
	raw := lf("From: a@bad.example", "Subject: viagra", "", "viagra", "")
	h := parse(t, raw)
	opens := 0
	v, err := c.Classify(t.Context(), h, importer.Envelope{}, opener([]byte(raw), &opens))
	if err != nil || v.Reason != "blocked sender a@bad.example (From, @bad.example)" || opens != 0 {
		t.Errorf("%+v %v, %d opens", v, err, opens)
	}
	// Word in the subject: the body is not read either.
	raw = lf("From: a@ok.example", "Subject: viagra", "", "viagra", "")
	v, err = c.Classify(t.Context(), parse(t, raw), importer.Envelope{}, opener([]byte(raw), &opens))
	if err != nil || v.Reason != `word "viagra" in subject` || opens != 0 {
		t.Errorf("%+v %v, %d opens", v, err, opens)
	}
}

// TestNoRules checks that a Checker without rules judges everything clean without
// reading the message.
func TestNoRules(t *testing.T) {
	c, _ := newChecker(t, configs.Spam{})
	raw := lf("From: a@bad.example", "Subject: viagra", "", "viagra", "")
	opens := 0
	v, err := c.Classify(t.Context(), parse(t, raw), importer.Envelope{}, opener([]byte(raw), &opens))
	if err != nil || v.Spam || opens != 0 {
		t.Errorf("%+v %v, %d opens", v, err, opens)
	}
}

// TestReadError checks that a message that cannot be read is an error, not a verdict.
func TestReadError(t *testing.T) {
	c, logs := newChecker(t, configs.Spam{Words: []string{"viagra"}})
	raw := lf("From: a@ok.example", "Subject: hi", "", "hello", "")
	open := func() (io.ReadCloser, error) {
		return io.NopCloser(io.MultiReader(strings.NewReader(raw), iotest.ErrReader(errors.New("disk on fire")))), nil
	}
	_, err := c.Classify(t.Context(), parse(t, raw), importer.Envelope{}, open)
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("err = %v", err)
	}
	if n := c.Counts().Unchecked; n != 1 {
		t.Errorf("Unchecked = %d", n)
	}
	if evs := logs.events(t, "spam check failed; the message goes to the inbox unchecked"); len(evs) != 1 || evs[0]["component"] != "spam" {
		t.Errorf("events %v", evs)
	}
}

// repeatReader repeats its pattern without end.
type repeatReader struct {
	pattern string
	off     int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = r.pattern[r.off]
		r.off = (r.off + 1) % len(r.pattern)
	}
	return len(p), nil
}

// repeated returns the pattern repeated to about n bytes, in whole patterns.
func repeated(pattern string, n int64) io.Reader {
	return io.LimitReader(&repeatReader{pattern: pattern}, n/int64(len(pattern))*int64(len(pattern)))
}

// TestMemoryBounded scans a message of 36 MB streamed from a generator: a 12 MB text
// line, a part header with a 1 MB field, a 20 MB attachment, and the word in the last
// part. The word is found, and what the scan allocates does not grow with the message.
func TestMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("scans 36 MB")
	}
	c, _ := newChecker(t, configs.Spam{Words: []string{"casino"}})
	head := received + "Subject: big\nContent-Type: multipart/mixed; boundary=big\n\n"
	open := func() (io.ReadCloser, error) {
		return io.NopCloser(io.MultiReader(
			strings.NewReader(head+"--big\nContent-Type: text/plain\n\n"),
			repeated("lorem ipsum ", 12<<20), // one line, no line break
			strings.NewReader("\n--big\nContent-Type: text/plain\nX-Long: "),
			repeated("x", 1<<20),
			strings.NewReader("\n\nshort\n--big\nContent-Type: application/zip\nContent-Transfer-Encoding: base64\n\n"),
			repeated("UEsDBBQAAAAIAAAAIQB4bWwgY2FzaW5vIGNhc2lubyBjYXNpbm8gY2FzaW5vIGNhc2lubyBjYXNp\n", 20<<20),
			strings.NewReader("--big\nContent-Type: text/plain\n\nthe casino at the end\n--big--\n"),
		)), nil
	}
	h := parse(t, head)
	c.Classify(t.Context(), h, importer.Envelope{}, open) // fill the buffer pool
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	v, err := c.Classify(t.Context(), h, importer.Envelope{}, open)
	runtime.ReadMemStats(&after)
	if err != nil || v.Reason != `word "casino" in body` {
		t.Fatalf("%+v %v", v, err)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("scanning 36 MB allocated %d KiB in %d objects", alloc>>10, after.Mallocs-before.Mallocs)
	if alloc > 2<<20 {
		t.Errorf("the scan allocated %d KiB: not streamed", alloc>>10)
	}
}
