package pollers

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
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
	br := bufio.NewReaderSize(r, 4096)
	n, bol := 0, true
	for n < headerPrintMax {
		line, err := br.ReadSlice('\n')
		if len(line) > headerPrintMax-n {
			line = line[:headerPrintMax-n]
		}
		n += len(line)
		end := len(line) > 0 && line[len(line)-1] == '\n'
		if end && len(line) >= 2 && line[len(line)-2] == '\r' {
			line = append(line[:len(line)-2], '\n')
		}
		h.Write(line)
		if bol && end && len(line) == 1 {
			break // the empty line that ends the header block
		}
		bol = end
		if err == io.EOF {
			break
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
