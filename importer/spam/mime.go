package spam

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"mime"
	"mime/quotedprintable"
	"regexp"
	"strings"

	"github.com/emersion/go-message/charset"
	"github.com/emersion/go-message/textproto"

	"github.com/mxdrop/mxdrop/importer"
)

// Bounds of the body scan. The scan streams: what it holds in memory at once is one
// line buffer (lineBuffer), one part header (maxPartHeader) and the decoders' small
// buffers, whatever the size of the message. Text beyond these bounds is not scanned.
const (
	// MaxPartText is how much decoded text of one part is scanned; the rest of the
	// part is skipped.
	MaxPartText = 4 << 20
	// MaxMessageText is how much decoded text of all parts together is scanned; the
	// scan stops there.
	MaxMessageText = 16 << 20
	// MaxParts is how many MIME parts are looked at; the scan stops at the next one.
	MaxParts = 1000
	// MaxDepth is how deeply multiparts are followed; a deeper multipart is skipped.
	MaxDepth = 16

	maxPartHeader = 64 << 10 // bytes of one part's header kept; the rest is ignored
	lineBuffer    = 64 << 10 // a longer line is read in pieces
)

// walker streams a MIME entity tree from br and scans its text parts: text/plain and
// text/html parts that are not attachments, through multipart nesting and the base64
// and quoted-printable transfer encodings, in any charset go-message knows. It keeps no
// part in memory: each part's body is read through the walker itself, which ends it at
// a delimiter line of any open multipart (RFC 2046 section 5.1.1).
type walker struct {
	ctx context.Context
	br  *bufio.Reader
	qp  *bufio.Reader
	sc  *textScanner

	bounds  [][]byte // "--boundary" of each open multipart, outermost first
	hit     int      // the index in bounds of the delimiter line that ended the body; -1 none
	hitEnd  bool     // that line was a close delimiter ("--boundary--")
	midLine bool     // the last piece read did not end its line
	pending []byte   // the unread rest of the current line
	eof     bool

	parts int
	text  int64  // decoded text scanned so far
	buf   []byte // scan buffer

	found     string // the table entry found; "" if none
	limited   bool   // a bound or the context stopped the walk before the end
	truncated bool   // a part's text was cut at MaxPartText
	// unknownCharset is called with a charset go-message does not know; the part is
	// scanned as it is (transfer-decoded), which finds words in ASCII-compatible text.
	unknownCharset func(name string)
}

// scanBuffers are the buffers of one body scan, kept in a pool between scans: a
// scan per message would otherwise allocate (and the GC clear) 80 KiB each time.
type scanBuffers struct {
	br  *bufio.Reader // the message
	qp  *bufio.Reader // under the quoted-printable decoder (see scanPart)
	buf []byte
	sc  *textScanner
}

func newScanBuffers(t *wordTable) *scanBuffers {
	return &scanBuffers{
		br: bufio.NewReaderSize(nil, lineBuffer), qp: bufio.NewReaderSize(nil, lineBuffer),
		buf: make([]byte, 16<<10), sc: newTextScanner(t),
	}
}

// newWalker returns a walker over r with the buffers b, which it uses until the walk
// is over.
func newWalker(ctx context.Context, r io.Reader, b *scanBuffers, unknownCharset func(string)) *walker {
	b.br.Reset(r)
	return &walker{ctx: ctx, br: b.br, qp: b.qp, sc: b.sc, hit: -1, buf: b.buf, unknownCharset: unknownCharset}
}

// topHeader returns the MIME fields of a message's header block (the topmost of each),
// the header of the top-level entity.
func topHeader(h *importer.Header) textproto.Header {
	var th textproto.Header
	for _, name := range []string{"content-type", "content-transfer-encoding", "content-disposition"} {
		if v, ok := h.Get(name); ok {
			th.Add(name, v)
		}
	}
	return th
}

// chunk returns the next line of the current body, or the next piece of a line longer
// than the buffer, and whether it starts a line. ok is false at a delimiter line of an
// open multipart (which sets hit) and at the end of the input. The bytes are valid
// until the next call.
func (w *walker) chunk() (b []byte, start, ok bool) {
	if w.hit >= 0 || w.eof {
		return nil, false, false
	}
	line, err := w.br.ReadSlice('\n')
	start = !w.midLine
	w.midLine = err == bufio.ErrBufferFull
	if start && len(w.bounds) > 0 && len(line) >= 2 && line[0] == '-' && line[1] == '-' {
		if i, end, ok := w.delimiter(line); ok {
			w.hit, w.hitEnd = i, end
			return nil, false, false
		}
	}
	if err != nil && err != bufio.ErrBufferFull {
		// The end of the input, or a read error the caller's reader has recorded.
		w.eof = true
		if len(line) == 0 {
			return nil, false, false
		}
	}
	return line, start, true
}

// delimiter reports whether line is a delimiter or close delimiter of an open multipart,
// the innermost first. Transport padding (white space) after the boundary is allowed.
func (w *walker) delimiter(line []byte) (level int, end, ok bool) {
	l := bytes.TrimRight(line, " \t\r\n")
	for i := len(w.bounds) - 1; i >= 0; i-- {
		b := w.bounds[i]
		if !bytes.HasPrefix(l, b) {
			continue
		}
		switch rest := l[len(b):]; string(rest) {
		case "":
			return i, false, true
		case "--":
			return i, true, true
		}
	}
	return 0, false, false
}

// Read reads the current body up to the next delimiter line or the end of the input.
func (w *walker) Read(p []byte) (int, error) {
	for len(w.pending) == 0 {
		b, _, ok := w.chunk()
		if !ok {
			return 0, io.EOF
		}
		w.pending = b
	}
	n := copy(p, w.pending)
	w.pending = w.pending[n:]
	return n, nil
}

// skip reads the rest of the current body.
func (w *walker) skip() {
	w.pending = nil
	for {
		if _, _, ok := w.chunk(); !ok {
			return
		}
	}
}

// partHeader reads a part's header, up to the blank line. Only its first maxPartHeader
// bytes are kept; a malformed field ends it (go-message's lenient parser keeps the
// fields before it).
func (w *walker) partHeader() textproto.Header {
	var buf []byte
	for {
		b, start, ok := w.chunk()
		if !ok {
			break
		}
		if start && len(bytes.TrimRight(b, "\r\n")) == 0 {
			break
		}
		buf = append(buf, b[:min(len(b), maxPartHeader-len(buf))]...)
	}
	buf = append(buf, "\r\n\r\n"...)
	h, _ := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(buf)))
	return h
}

// entity walks one entity whose header is h and whose body comes next. It returns true
// when the walk is over: a table entry was found, or a bound was reached.
func (w *walker) entity(h textproto.Header, depth int) bool {
	mt, params := parseContentType(h.Get("Content-Type"))
	if strings.HasPrefix(mt, "multipart/") && params["boundary"] != "" && depth < MaxDepth {
		return w.multipart(params["boundary"], depth)
	}
	if (mt == "text/plain" || mt == "text/html") && !isAttachment(h, params) {
		if w.scanPart(h, mt == "text/html", params["charset"]) {
			return true
		}
	}
	w.skip()
	return false
}

// multipart walks the parts of a multipart entity (RFC 2046 section 5.1).
func (w *walker) multipart(boundary string, depth int) bool {
	level := len(w.bounds)
	w.bounds = append(w.bounds, []byte("--"+boundary))
	w.skip() // the preamble
	for w.hit == level && !w.hitEnd {
		w.hit = -1
		if w.parts++; w.parts > MaxParts {
			w.limited = true
			return true
		}
		if w.entity(w.partHeader(), depth+1) {
			return true
		}
	}
	// Here hit is this multipart's close delimiter, an enclosing multipart's delimiter
	// (this one was not closed), or -1 at the end of the input.
	closed := w.hit == level
	w.bounds = w.bounds[:level]
	if closed {
		w.hit = -1
		w.skip() // the epilogue, up to a delimiter of an enclosing multipart
	}
	return false
}

// scanPart scans the decoded text of the current body.
func (w *walker) scanPart(h textproto.Header, isHTML bool, cs string) bool {
	budget := min(MaxPartText, MaxMessageText-w.text)
	if budget <= 0 {
		w.limited = true
		return true
	}
	var r io.Reader = w
	switch strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding"))) {
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, base64Filter{w})
	case "quoted-printable":
		// The decoder reads lines through a bufio.Reader and stops at a line longer
		// than its buffer; it takes ours (lineBuffer) instead of its own 4 KiB, so that
		// only a line longer than RFC 2045's 76 characters by three orders of magnitude
		// ends the part's text early.
		w.qp.Reset(w)
		r = quotedprintable.NewReader(w.qp)
	}
	switch cs = strings.ToLower(strings.Trim(strings.TrimSpace(cs), `"'`)); cs {
	case "", "us-ascii", "utf-8", "utf8":
	default:
		if cr, err := charset.Reader(cs, r); err != nil {
			w.unknownCharset(cs)
		} else {
			r = cr
		}
	}
	w.sc.reset(isHTML)
	var n int64
	for n < budget {
		if w.ctx.Err() != nil {
			w.limited = true
			return true
		}
		m, err := r.Read(w.buf[:min(int64(len(w.buf)), budget-n)])
		w.sc.write(w.buf[:m])
		n += int64(m)
		if w.sc.hit != "" || err != nil {
			// err is the end of the part, or a decoding error: malformed base64 or a
			// broken charset ends the text of this part, not the check.
			break
		}
	}
	w.text += n
	if n >= budget {
		w.truncated = true
	}
	if w.found = w.sc.end(); w.found != "" {
		return true
	}
	return false
}

// base64Filter drops every byte that is not of the base64 alphabet: line breaks, and
// the stray spaces and garbage that RFC 2045 section 6.8 says a decoder must ignore.
type base64Filter struct{ r io.Reader }

func (f base64Filter) Read(p []byte) (int, error) {
	for {
		n, err := f.r.Read(p)
		j := 0
		for _, c := range p[:n] {
			if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '=' {
				p[j] = c
				j++
			}
		}
		if j > 0 || err != nil {
			return j, err
		}
	}
}

// parseContentType returns the lower-case media type and parameters of a Content-Type
// value: text/plain when there is none (RFC 2045 section 5.2). QUIRK: a value
// mime.ParseMediaType rejects is read crudely, its type up to the first ';' or blank and
// its boundary and charset parameters by pattern, so that a sloppy sender's multipart
// is still walked; a type without a slash is text/plain, as RFC 2045 asks.
func parseContentType(v string) (string, map[string]string) {
	if strings.TrimSpace(v) == "" {
		return "text/plain", nil
	}
	mt, params, err := mime.ParseMediaType(v)
	if err == nil {
		return mt, params
	}
	if mt == "" {
		mt = strings.ToLower(strings.TrimSpace(v))
		if i := strings.IndexAny(mt, "; \t"); i >= 0 {
			mt = mt[:i]
		}
	}
	if !strings.Contains(mt, "/") {
		return "text/plain", nil
	}
	params = map[string]string{}
	for _, m := range crudeParamRE.FindAllStringSubmatch(v, -1) {
		name := strings.ToLower(m[1])
		if _, seen := params[name]; !seen {
			params[name] = m[2] + m[3]
		}
	}
	return mt, params
}

var crudeParamRE = regexp.MustCompile(`(?i)\b(boundary|charset)\s*=\s*(?:"([^"]*)"|([^;\s"]+))`)

// isAttachment reports whether a text part is a file rather than the message's text: a
// Content-Disposition of attachment, or a file name (RFC 2183 filename, or the older
// Content-Type name parameter).
func isAttachment(h textproto.Header, params map[string]string) bool {
	if params["name"] != "" {
		return true
	}
	d := h.Get("Content-Disposition")
	if d == "" {
		return false
	}
	disp, dp, err := mime.ParseMediaType(d)
	if err != nil {
		l := strings.ToLower(d)
		return strings.HasPrefix(strings.TrimSpace(l), "attachment") || strings.Contains(l, "filename")
	}
	return disp == "attachment" || dp["filename"] != ""
}
