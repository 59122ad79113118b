package pollers

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strings"

	"github.com/mxdrop/mxdrop/importer"
)

// headerPrintMax bounds the bytes of a header block that headerPrint reads. Both sides
// of a comparison read the same bound, so a longer header still compares alike.
const headerPrintMax = 1 << 20

// headerPrint is the hex SHA-256 of a message's header block: its bytes up to and
// including the first empty line (or the end, or headerPrintMax), with CR LF read as
// LF. It is what a poller records for a message it delivered, and compares with the
// server's copy (POP3 TOP n 0) before it deletes a message on the state's word alone:
// a POP3 server may give a UIDL to a new message in an old slot, and the header block
// tells the two apart (its Received, Message-ID and Date fields differ) while being as
// cheap to fetch as it gets. The size alone is not enough: two notifications of one
// kind often have the same size.
func headerPrint(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := hashLines(bufio.NewReaderSize(r, 4096), h, headerPrintMax, true); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// contentPrint is the hex SHA-256 of what every copy of one message has alike: the
// From, Date and Subject fields and the body (CR LF read as LF). Providers that keep one
// copy per recipient vary the trace fields of each copy (Received, Delivered-To,
// X-Original-To, Return-Path), so the header block as a whole is not compared; a
// forgery that reuses a Message-ID differs in its sender or its body. It is recorded
// with each dup key, and a message is suppressed as a duplicate only when its
// Message-ID and its content print both match. Empty when the message cannot be read
// (it is then never a duplicate).
func contentPrint(g spooled, hdr *importer.Header) string {
	if hdr == nil {
		return ""
	}
	r, err := g.open()
	if err != nil {
		return ""
	}
	defer r.Close()
	h := sha256.New()
	for _, name := range []string{"from", "date", "subject"} {
		v, _ := hdr.Get(name)
		io.WriteString(h, name+"\x00"+strings.Join(strings.Fields(v), " ")+"\x00")
	}
	br := bufio.NewReaderSize(r, 32<<10)
	if _, err := hashLines(br, io.Discard, headerPrintMax, true); err != nil {
		return ""
	}
	if _, err := hashLines(br, h, -1, false); err != nil {
		return ""
	}
	return hex.EncodeToString(h.Sum(nil))
}

// hashLines writes the lines of br to w, CR LF as LF, until the end, max bytes (max < 0:
// no bound) or, when header is true, the empty line that ends a header block
// (included). It returns the bytes read.
func hashLines(br *bufio.Reader, w io.Writer, max int, header bool) (int, error) {
	n, bol := 0, true
	for max < 0 || n < max {
		line, err := br.ReadSlice('\n')
		if max >= 0 && len(line) > max-n {
			line = line[:max-n]
		}
		n += len(line)
		end := len(line) > 0 && line[len(line)-1] == '\n'
		if end && len(line) >= 2 && line[len(line)-2] == '\r' {
			line = append(line[:len(line)-2], '\n')
		}
		w.Write(line)
		if header && bol && end && len(line) == 1 {
			break // the empty line that ends the header block
		}
		bol = end
		if err == io.EOF {
			break
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return n, err
		}
	}
	return n, nil
}
