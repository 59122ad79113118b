package importer

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

// headerCheck inspects the outcome of ReadHeader; body is what was left in the reader.
type headerCheck func(t *testing.T, h *Header, body string, err error)

func isErr(want error) headerCheck {
	return func(t *testing.T, h *Header, body string, err error) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Fatalf("err = %v, want %v", err, want)
		}
		if h != nil {
			t.Fatalf("header %+v returned with an error", h)
		}
	}
}

func noErr() headerCheck {
	return func(t *testing.T, h *Header, body string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("err = %v", err)
		}
	}
}

func hasFields(want ...string) headerCheck { // name=value pairs
	return func(t *testing.T, h *Header, body string, err error) {
		t.Helper()
		if len(h.Fields) != len(want) {
			t.Fatalf("%d fields %v, want %d", len(h.Fields), fieldNames(h), len(want))
		}
		for i, w := range want {
			name, value, _ := strings.Cut(w, "=")
			if f := h.Fields[i]; f.Name != name || f.Value != value {
				t.Errorf("field %d = %q: %q, want %q: %q", i, f.Name, short(f.Value), name, short(value))
			}
		}
	}
}

func hasRaw(i int, raw string) headerCheck {
	return func(t *testing.T, h *Header, body string, err error) {
		t.Helper()
		if got := string(h.Fields[i].Raw); got != raw {
			t.Errorf("field %d Raw = %q, want %q", i, got, raw)
		}
	}
}

func hasBody(want string) headerCheck {
	return func(t *testing.T, h *Header, body string, err error) {
		t.Helper()
		if body != want {
			t.Errorf("body = %q, want %q", short(body), short(want))
		}
	}
}

func hasSep(want string, isNil bool) headerCheck {
	return func(t *testing.T, h *Header, body string, err error) {
		t.Helper()
		if isNil != (h.Sep == nil) || string(h.Sep) != want {
			t.Errorf("Sep = %q (nil %v), want %q (nil %v)", h.Sep, h.Sep == nil, want, isNil)
		}
	}
}

func hasCRLF(want bool) headerCheck {
	return func(t *testing.T, h *Header, body string, err error) {
		t.Helper()
		if h.CRLF != want {
			t.Errorf("CRLF = %v, want %v", h.CRLF, want)
		}
		if nl := h.Newline(); (nl == "\r\n") != want {
			t.Errorf("Newline = %q", nl)
		}
	}
}

func hasMboxFrom(want string) headerCheck {
	return func(t *testing.T, h *Header, body string, err error) {
		t.Helper()
		if h.MboxFrom != want {
			t.Errorf("MboxFrom = %q, want %q", h.MboxFrom, want)
		}
	}
}

// short keeps failure messages readable.
func short(s string) string {
	if len(s) > 80 {
		return s[:60] + "..." + s[len(s)-10:]
	}
	return s
}

func fieldNames(h *Header) []string {
	var out []string
	for _, f := range h.Fields {
		out = append(out, f.Name)
	}
	return out
}

// checkHeaderInvariants holds for every header ReadHeader returns: it occupies exactly the
// first Size bytes of in, which are the mbox line (if any), the fields' raw bytes and Sep,
// and the reader is left at the body.
func checkHeaderInvariants(t testing.TB, in []byte, h *Header, rest []byte) {
	t.Helper()
	if h.Size < 0 || h.Size > int64(len(in)) {
		t.Fatalf("Size %d outside the input of %d bytes", h.Size, len(in))
	}
	if !bytes.Equal(rest, in[h.Size:]) {
		t.Fatalf("reader left at %d, Size says %d", len(in)-len(rest), h.Size)
	}
	var re []byte
	for _, f := range h.Fields {
		re = append(re, f.Raw...)
	}
	re = append(re, h.Sep...)
	if int64(len(re)) > h.Size {
		t.Fatalf("fields + Sep are %d bytes, more than Size %d", len(re), h.Size)
	}
	mbox := in[:h.Size-int64(len(re))]
	if len(mbox) > 0 {
		i := bytes.IndexByte(in, '\n')
		if !bytes.HasPrefix(mbox, []byte("From ")) || (i >= 0 && len(mbox) != i+1) || (i < 0 && len(mbox) != len(in)) {
			t.Fatalf("%q before the fields is not an mbox From line", mbox)
		}
	} else if h.MboxFrom != "" {
		t.Fatalf("MboxFrom %q without a From line", h.MboxFrom)
	}
	if !bytes.Equal(re, in[len(mbox):h.Size]) {
		t.Fatalf("fields + Sep = %q\nwant header bytes %q", re, in[len(mbox):h.Size])
	}
	if len(h.Fields) == 0 {
		t.Fatal("a header without fields")
	}
	for _, f := range h.Fields {
		if f.Name != strings.ToLower(f.Name) || f.Name == "" {
			t.Errorf("field name %q not lower case", f.Name)
		}
		if f.Value != strings.TrimSpace(f.Value) {
			t.Errorf("field %s value %q not trimmed", f.Name, f.Value)
		}
		if len(f.Raw) == 0 || (f.Raw[0] == ' ' || f.Raw[0] == '\t') {
			t.Errorf("field %s raw %q", f.Name, f.Raw)
		}
	}
	if h.Sep != nil && len(bytes.TrimRight(h.Sep, "\r\n")) != 0 {
		t.Errorf("Sep %q is not a blank line", h.Sep)
	}
}

func TestReadHeader(t *testing.T) {
	long := strings.Repeat("x", 100_000)
	bigHeader := strings.Repeat("X-Filler: "+strings.Repeat("y", 1000)+"\n", 1100) + "\nbody"
	almostBig := strings.Repeat("X-Filler: "+strings.Repeat("y", 1000)+"\n", 1000) + "\nbody"
	tests := []struct {
		name   string
		in     string
		bufSz  int // bufio buffer size; 0 = 64 KiB as the importer uses
		checks []headerCheck
	}{
		{"lf", lf("From: a@example.org", "To: b@example.com", "", "body", ""), 0, []headerCheck{
			noErr(), hasFields("from=a@example.org", "to=b@example.com"), hasCRLF(false),
			hasSep("\n", false), hasBody("body\n"), hasRaw(0, "From: a@example.org\n"),
		}},
		{"crlf", crlf("From: a@example.org", "To: b@example.com", "", "body", ""), 0, []headerCheck{
			noErr(), hasFields("from=a@example.org", "to=b@example.com"), hasCRLF(true),
			hasSep("\r\n", false), hasBody("body\r\n"), hasRaw(1, "To: b@example.com\r\n"),
		}},
		{"folded", lf("Subject: one", " two", "\tthree", "X-A:  spaced  ", "", "b"), 0, []headerCheck{
			noErr(), hasFields("subject=one two three", "x-a=spaced"),
			hasRaw(0, "Subject: one\n two\n\tthree\n"), hasBody("b"),
		}},
		{"folded crlf", crlf("To: a@example.com,", "  b@example.com", "", "b"), 0, []headerCheck{
			noErr(), hasFields("to=a@example.com, b@example.com"), hasRaw(0, "To: a@example.com,\r\n  b@example.com\r\n"),
		}},
		{"value on the continuation line only", lf("Message-ID:", " <id@example.org>", "", ""), 0, []headerCheck{
			noErr(), hasFields("message-id=<id@example.org>"),
		}},
		{"white space only continuation", lf("Subject: a", " ", "X: y", "", ""), 0, []headerCheck{
			noErr(), hasFields("subject=a", "x=y"),
		}},
		{"8-bit header bytes", "Subject: Gr\xc3\xbc\xc3\x9fe caf\xe9\nFrom: J\xf6rg <j@example.de>\n\nb", 0, []headerCheck{
			noErr(), hasFields("subject=Gr\xc3\xbc\xc3\x9fe caf\xe9", "from=J\xf6rg <j@example.de>"),
		}},
		{"encoded words left raw", lf("Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=", "\t=?ISO-8859-1?B?Y2Fm6Q==?=", "", ""), 0, []headerCheck{
			noErr(), hasFields("subject==?UTF-8?Q?Gr=C3=BC=C3=9Fe?= =?ISO-8859-1?B?Y2Fm6Q==?="),
		}},
		{"white space before colon", lf("Subject : old style", "", ""), 0, []headerCheck{
			noErr(), hasFields("subject=old style"),
		}},
		{"mbox From line", lf("From bob@example.org  Tue Jan  2 10:15:02 2024", "Return-Path: <bob@example.org>", "", "b"), 0, []headerCheck{
			noErr(), hasMboxFrom("bob@example.org"), hasFields("return-path=<bob@example.org>"), hasBody("b"),
		}},
		{"mbox From line crlf", crlf("From <bob@example.org> Tue Jan  2 10:15:02 2024", "Subject: x", "", "b"), 0, []headerCheck{
			noErr(), hasMboxFrom("bob@example.org"), hasCRLF(true), hasFields("subject=x"),
		}},
		{"mbox From MAILER-DAEMON", lf("From MAILER-DAEMON Tue Jan  2 10:15:02 2024", "Subject: x", "", "b"), 0, []headerCheck{
			noErr(), hasMboxFrom(""), hasFields("subject=x"),
		}},
		{"From with space before colon is a field", lf("From : bob@example.org", "To: a@example.com", "", "b"), 0, []headerCheck{
			noErr(), hasMboxFrom(""), hasFields("from=bob@example.org", "to=a@example.com"),
		}},
		{"header ends at EOF with newline", lf("A: 1", "B: 2", ""), 0, []headerCheck{
			noErr(), hasFields("a=1", "b=2"), hasSep("", true), hasBody(""),
		}},
		{"header ends at EOF without newline", lf("A: 1", "B: 2"), 0, []headerCheck{
			noErr(), hasFields("a=1", "b=2"), hasSep("", true), hasRaw(1, "B: 2"), hasBody(""),
		}},
		{"folded field at EOF", lf("A: 1", " 2"), 0, []headerCheck{
			noErr(), hasFields("a=1 2"), hasRaw(0, "A: 1\n 2"),
		}},
		{"body starts at a non-field line", lf("A: 1", "B: 2", "this is the body", "more", ""), 0, []headerCheck{
			noErr(), hasFields("a=1", "b=2"), hasSep("", true), hasBody("this is the body\nmore\n"),
		}},
		{"body starts at a line with a bad field name", lf("A: 1", "hello world: x", ""), 0, []headerCheck{
			noErr(), hasFields("a=1"), hasSep("", true), hasBody("hello world: x\n"),
		}},
		{"body starts at a long non-field line", "A: 1\n" + long + "\n", 16, []headerCheck{
			noErr(), hasFields("a=1"), hasBody(long + "\n"),
		}},
		{"body starts at a non-field line at EOF", "A: 1\n--boundary", 0, []headerCheck{
			noErr(), hasFields("a=1"), hasBody("--boundary"),
		}},
		{"bare CR line is body", "A: 1\n\rX\nb", 0, []headerCheck{
			noErr(), hasFields("a=1"), hasBody("\rX\nb"),
		}},
		{"line longer than the bufio buffer", "Subject: " + long + "\nTo: a@example.com\n\nb", 16, []headerCheck{
			noErr(), hasFields("subject="+long, "to=a@example.com"), hasBody("b"),
		}},
		{"line longer than the importer's buffer", "References: " + long + "\n\nb", 0, []headerCheck{
			noErr(), hasFields("references=" + long),
		}},
		{"NUL in the body is fine", "A: 1\n\nbin\x00ary", 0, []headerCheck{noErr(), hasBody("bin\x00ary")}},
		{"empty", "", 0, []headerCheck{isErr(ErrEmpty)}},
		{"binary", "\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", 0, []headerCheck{isErr(ErrNoHeader)}},
		{"NUL in a field", "Subject: a\x00b\n\nx", 0, []headerCheck{isErr(ErrBinary)}},
		{"NUL in the first line", "\x00\x00\x00\x00", 0, []headerCheck{isErr(ErrBinary)}},
		{"blank first line", lf("", "Subject: x", ""), 0, []headerCheck{isErr(ErrNoHeader)}},
		{"plain text", lf("Dear Sir,", "", "hello"), 0, []headerCheck{isErr(ErrNoHeader)}},
		{"continuation first", lf(" Subject: x", ""), 0, []headerCheck{isErr(ErrNoHeader)}},
		{"mbox From line only", lf("From bob@example.org Tue Jan  2 10:15:02 2024", ""), 0, []headerCheck{isErr(ErrNoHeader)}},
		{"mbox From line then blank", lf("From bob@example.org Tue Jan  2 10:15:02 2024", "", "b"), 0, []headerCheck{isErr(ErrNoHeader)}},
		{"header over 1 MiB", bigHeader, 0, []headerCheck{isErr(ErrHeaderTooLarge)}},
		{"header line over 1 MiB", "X: " + strings.Repeat("z", MaxHeaderSize+1) + "\n\nb", 0, []headerCheck{isErr(ErrHeaderTooLarge)}},
		{"header just under 1 MiB", almostBig, 0, []headerCheck{noErr(), hasBody("body")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sz := tc.bufSz
			if sz == 0 {
				sz = 64 << 10
			}
			r := bufio.NewReaderSize(strings.NewReader(tc.in), sz)
			h, err := ReadHeader(r)
			rest, rerr := io.ReadAll(r)
			if rerr != nil {
				t.Fatal(rerr)
			}
			if err == nil {
				checkHeaderInvariants(t, []byte(tc.in), h, rest)
			} else {
				var ie *InputError
				if !errors.As(err, &ie) || ie.Reason == "" {
					t.Errorf("error %v is not an *InputError with a reason", err)
				}
			}
			for _, c := range tc.checks {
				c(t, h, string(rest), err)
			}
		})
	}
}

func TestReadHeaderFixtures(t *testing.T) {
	for _, name := range fixtureNames(t) {
		t.Run(name, func(t *testing.T) {
			in := fixture(t, name)
			r := bufio.NewReaderSize(bytes.NewReader(in), 64<<10)
			h, err := ReadHeader(r)
			if err != nil {
				t.Fatal(err)
			}
			rest, _ := io.ReadAll(r)
			checkHeaderInvariants(t, in, h, rest)
			if want := bytes.HasSuffix(bytes.SplitN(in, []byte("\n"), 2)[0], []byte("\r")); h.CRLF != want {
				t.Errorf("CRLF = %v, want %v", h.CRLF, want)
			}
		})
	}
}

func TestReadHeaderReaderError(t *testing.T) {
	boom := errors.New("disk on fire")
	r := bufio.NewReader(io.MultiReader(strings.NewReader("Subject: x\nTo: a@exa"), iotest.ErrReader(boom)))
	_, err := ReadHeader(r)
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the reader's error", err)
	}
	var ie *InputError
	if errors.As(err, &ie) {
		t.Fatalf("a reader failure must not be an InputError (it would quarantine a good message)")
	}
}

func TestHeaderGet(t *testing.T) {
	h := parse(t, lf("Received: one", "Subject: s", "Received: two", "", ""))
	if v, ok := h.Get("received"); !ok || v != "one" {
		t.Errorf("Get(received) = %q, %v; want the topmost", v, ok)
	}
	if _, ok := h.Get("cc"); ok {
		t.Error("Get(cc) found a field that does not exist")
	}
}

// foldedHeader is one field folded over continuation lines, "X-Long: a" then " b"
// lines, about size bytes, then a blank line and a body.
func foldedHeader(size int) []byte {
	var b bytes.Buffer
	b.WriteString("X-Long: a\n")
	for b.Len() < size {
		b.WriteString(" b\n")
	}
	b.WriteString("Subject: after\n\nbody\n")
	return b.Bytes()
}

// unfold is the value of a field as ReadHeader should give it, worked out from its raw
// bytes independently: each line's white space trimmed, the non-empty ones joined with
// one space.
func unfold(raw []byte) string {
	_, rest, _ := bytes.Cut(raw, []byte(":"))
	var parts []string
	for _, l := range strings.Split(string(rest), "\n") {
		if v := strings.TrimSpace(l); v != "" {
			parts = append(parts, v)
		}
	}
	return strings.Join(parts, " ")
}

// TestReadHeaderLongFoldLinear reads a field folded over some 20,000 lines. The work
// must grow with the header's size, not its square: growing the value string per
// continuation line allocated about 450 MB for this 64 KiB header. The bound is on
// bytes allocated, which does not depend on the machine's speed.
func TestReadHeaderLongFoldLinear(t *testing.T) {
	in := foldedHeader(64 << 10)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	h, err := ReadHeader(bufio.NewReaderSize(bytes.NewReader(in), 64<<10))
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > uint64(32*len(in)) {
		t.Errorf("reading a %d-byte header allocated %d bytes, more than 32 times its size", len(in), alloc)
	}
	if len(h.Fields) != 2 || h.Fields[1].Name != "subject" {
		t.Fatalf("fields %d, want X-Long and Subject", len(h.Fields))
	}
	if got, want := h.Fields[0].Value, unfold(h.Fields[0].Raw); got != want {
		t.Errorf("X-Long value of %d bytes, want %d", len(got), len(want))
	}
	checkHeaderInvariants(t, in, h, in[h.Size:])
}

// BenchmarkReadHeaderFolded reads one field folded over ever more lines, and a folded
// header just over MaxHeaderSize that is rejected. ns/byte should stay about the same
// from size to size: reading is linear in the header's size.
func BenchmarkReadHeaderFolded(b *testing.B) {
	for _, size := range []int{64 << 10, 256 << 10, 1 << 20, MaxHeaderSize + 1<<10} {
		in := foldedHeader(size)
		b.Run(strconv.Itoa(size>>10)+"KiB", func(b *testing.B) {
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				ReadHeader(bufio.NewReaderSize(bytes.NewReader(in), 64<<10))
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(in)), "ns/byte")
		})
	}
}
