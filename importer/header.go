package importer

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// MaxHeaderSize bounds the header block read into memory. A larger header block is not
// a message mxdrop accepts; it is quarantined with reason header_too_large.
const MaxHeaderSize = 1 << 20

// Header is a message's header block as it arrived: every field keeps its raw bytes
// (folded continuation lines and line endings included), so a delivered copy can be
// written byte for byte, less the fields mxdrop removes.
type Header struct {
	// MboxFrom is the sender of a leading mbox "From " line, "" if there was none.
	MboxFrom string
	// Fields in file order.
	Fields []Field
	// Sep is the blank line that ended the header ("\n", "\r\n"), or nil when the
	// header ended at the end of the file or at a line that is not a field.
	Sep []byte
	// Size is the number of bytes of the file the header block occupies, separator
	// and any mbox "From " line included: the body starts at this offset.
	Size int64
	// CRLF is true when the first line ended in "\r\n".
	CRLF bool
}

// Field is one header field.
type Field struct {
	Name  string // lower case
	Value string // unfolded, leading and trailing white space removed, not decoded
	Raw   []byte // the whole field as it arrived
}

// Get returns the value of the topmost field named name (lower case) and whether there is one.
func (h *Header) Get(name string) (string, bool) {
	for _, f := range h.Fields {
		if f.Name == name {
			return f.Value, true
		}
	}
	return "", false
}

// Newline returns the line ending the message uses.
func (h *Header) Newline() string {
	if h.CRLF {
		return "\r\n"
	}
	return "\n"
}

// Errors ReadHeader returns for input that is not a message. They are permanent: the
// input is quarantined with the Reason of the error.
var (
	ErrEmpty          = &InputError{Reason: "empty", Text: "the file is empty"}
	ErrNoHeader       = &InputError{Reason: "no_header", Text: "the file does not start with a header block"}
	ErrBinary         = &InputError{Reason: "binary", Text: "the header block contains NUL bytes: not a text message"}
	ErrHeaderTooLarge = &InputError{Reason: "header_too_large", Text: fmt.Sprintf("the header block is larger than %d bytes", MaxHeaderSize)}
)

// InputError says why input is not a message mxdrop can import.
type InputError struct {
	Reason string // machine-readable, snake_case
	Text   string // for people
}

func (e *InputError) Error() string { return e.Text }

// ReadHeader reads the header block from r, leaving r at the first byte of the body.
// It is lenient where real mail is sloppy: LF or CRLF, 8-bit bytes, a leading mbox
// "From " line, a header that ends at the end of the file, or at a line that is not a
// field (QUIRK: such a line is taken as the first body line, as most MTAs do, rather
// than rejecting the message). It returns an *InputError for input that is not a
// message and any other error for a failing reader.
func ReadHeader(r *bufio.Reader) (*Header, error) {
	h := &Header{}
	var cur *Field
	// val collects the unfolded value of cur; it becomes cur.Value when the field
	// ends. Growing a string per continuation line instead cost time quadratic in the
	// length of a folded field.
	var val []byte
	endField := func() {
		if cur != nil {
			cur.Value = string(val)
		}
	}
	first := true
	for {
		if len(h.Fields) > 0 {
			// The body may start without a blank line: leave such a line in r.
			body, err := bodyAhead(r)
			if err != nil {
				return nil, err
			}
			if body {
				break
			}
		}
		line, err := readLine(r, MaxHeaderSize-h.Size)
		if err == errLineTooLong {
			return nil, ErrHeaderTooLarge
		}
		if err != nil && err != io.EOF {
			return nil, err
		}
		if len(line) == 0 { // EOF
			if first {
				return nil, ErrEmpty
			}
			break
		}
		if bytes.IndexByte(line, 0) >= 0 {
			return nil, ErrBinary
		}
		if first {
			h.CRLF = bytes.HasSuffix(line, []byte("\r\n"))
			if _, _, field := splitField(bytes.TrimRight(line, "\r\n")); bytes.HasPrefix(line, []byte("From ")) && !field {
				// QUIRK: mbox "From sender date" line written by some MTAs (Postfix
				// pipe flag F). It is not a header field; its sender is an envelope hint.
				h.MboxFrom = mboxSender(string(line[5:]))
				h.Size += int64(len(line))
				first = false
				continue
			}
		}
		trimmed := bytes.TrimRight(line, "\r\n")
		if len(trimmed) == 0 {
			if first {
				return nil, ErrNoHeader
			}
			h.Sep = line
			h.Size += int64(len(line))
			break
		}
		if (line[0] == ' ' || line[0] == '\t') && cur != nil {
			cur.Raw = append(cur.Raw, line...)
			if v := bytes.TrimSpace(trimmed); len(v) == 0 {
				// White space only: nothing to add.
			} else if len(val) == 0 {
				val = append(val, v...)
			} else {
				val = append(append(val, ' '), v...)
			}
			h.Size += int64(len(line))
			continue
		}
		name, value, ok := splitField(trimmed)
		if !ok {
			// Before the first field; later lines are checked by bodyAhead.
			return nil, ErrNoHeader
		}
		endField()
		h.Fields = append(h.Fields, Field{Name: name, Raw: line})
		cur = &h.Fields[len(h.Fields)-1]
		val = append(val[:0], value...)
		h.Size += int64(len(line))
		first = false
		if err == io.EOF {
			break
		}
	}
	endField()
	if len(h.Fields) == 0 {
		return nil, ErrNoHeader
	}
	return h, nil
}

// bodyAhead reports whether the next line of r is the first line of a body that follows
// the header without a blank line: neither the blank separator, nor a continuation
// line, nor a field. It does not consume input. QUIRK: a line with no colon within the
// reader's buffer is taken as body, so a field name longer than the buffer (64 KiB in
// the importer; RFC 5322 limits a line to 998 bytes) ends the header.
func bodyAhead(r *bufio.Reader) (bool, error) {
	n := 1
	for {
		n = max(n, r.Buffered()) // look at whatever is buffered already
		b, err := r.Peek(n)
		if err != nil && err != io.EOF {
			return false, err
		}
		line, complete := b, err == io.EOF || n >= r.Size()
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, complete = b[:i+1], true
		}
		if len(line) == 0 || line[0] == ' ' || line[0] == '\t' {
			return false, nil // the end of the input, or a continuation line
		}
		if !complete {
			n = min(2*n, r.Size())
			continue
		}
		trimmed := bytes.TrimRight(line, "\r\n")
		if len(trimmed) == 0 {
			return false, nil // the separator
		}
		_, _, ok := splitField(trimmed)
		return !ok, nil
	}
}

var errLineTooLong = errors.New("line too long")

// readLine returns the next line with its ending, or the rest of the input at EOF. It
// fails with errLineTooLong when more than max bytes would be needed.
func readLine(r *bufio.Reader, max int64) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if int64(len(line)+len(chunk)) > max {
			return nil, errLineTooLong
		}
		line = append(line, chunk...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF && len(line) > 0 {
			return line, io.EOF
		}
		return line, err
	}
}

// splitField splits "Name: value" and checks the name (RFC 5322 section 3.6.8: printable
// US-ASCII except colon). QUIRK: white space before the colon is accepted, as RFC 822
// allowed it.
func splitField(line []byte) (name, value string, ok bool) {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return "", "", false
	}
	n := bytes.TrimRight(line[:i], " \t")
	if len(n) == 0 {
		return "", "", false
	}
	for _, c := range n {
		if c < 33 || c > 126 {
			return "", "", false
		}
	}
	return strings.ToLower(string(n)), strings.TrimSpace(string(line[i+1:])), true
}

func mboxSender(rest string) string {
	rest = strings.TrimSpace(rest)
	if i := strings.IndexAny(rest, " \t"); i >= 0 {
		rest = rest[:i]
	}
	if rest == "MAILER-DAEMON" {
		return ""
	}
	return plainToken(strings.Trim(rest, "<>"))
}
