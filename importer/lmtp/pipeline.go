package lmtp

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// QUIRK: go-smtp v0.25's client waits for the reply to MAIL and to each RCPT before it
// sends the next command: it has no PIPELINING (RFC 2920), and the accepted recipients
// that CloseWithLMTPResponse reads one reply for are private to it. So a transaction on
// a server that announces PIPELINING (an LMTP server must support it, RFC 2033) sends
// MAIL, every RCPT and DATA in one write here and reads their replies; then go-smtp's
// own Mail, Rcpt and Data run against those replies, replayed by the session's
// pipeConn while the commands they write are dropped, and go-smtp streams the message
// and reads the per-recipient replies as it always does. Two round trips per message
// instead of three plus one per recipient.

// pipeConn is a session's connection as go-smtp sees it. While replay holds bytes they
// are read before the network, one line per Read, so that go-smtp's buffered reader
// never holds a reply it will not ask for; while drop is set, writes are dropped.
type pipeConn struct {
	net.Conn
	replay []byte
	drop   bool
}

func (p *pipeConn) Read(b []byte) (int, error) {
	if len(p.replay) == 0 {
		return p.Conn.Read(b)
	}
	line := p.replay
	if i := bytes.IndexByte(line, '\n'); i >= 0 {
		line = line[:i+1]
	}
	n := copy(b, line)
	p.replay = p.replay[n:]
	return n, nil
}

func (p *pipeConn) Write(b []byte) (int, error) {
	if p.drop {
		return len(b), nil
	}
	return p.Conn.Write(b)
}

// endReplay makes the connection the network again, dropping replies go-smtp did
// not ask for (those after a refused MAIL, or to DATA without an accepted recipient).
func (p *pipeConn) endReplay() { p.replay, p.drop = nil, false }

// Bounds on a reply read here (go-smtp itself allows lines of 2000 bytes).
const (
	maxReplyLine  = 2000
	maxReplyLines = 100
)

// pipeline sends MAIL FROM, a RCPT TO per recipient and DATA as one group (RFC 2920
// section 3.1: DATA ends it), reads the replies and leaves them in s.conn for go-smtp
// to replay, with its writes dropped until endReplay. dataOpen reports that the server
// answered DATA with 354 and waits for the message. An error leaves the session
// unusable.
func (s *session) pipeline(sender string, rcpts []string) (dataOpen bool, err error) {
	var group strings.Builder
	for _, a := range append([]string{sender}, rcpts...) {
		if strings.ContainsAny(a, "\r\n") {
			return false, fmt.Errorf("address %q has a line break", a)
		}
	}
	group.WriteString("MAIL FROM:<" + sender + ">")
	if ok, _ := s.Extension("8BITMIME"); ok {
		group.WriteString(" BODY=8BITMIME") // what go-smtp's Mail sends
	}
	group.WriteString("\r\n")
	for _, r := range rcpts {
		group.WriteString("RCPT TO:<" + r + ">\r\n")
	}
	group.WriteString("DATA\r\n")

	conn := s.conn.Conn
	conn.SetDeadline(time.Now().Add(s.CommandTimeout))
	defer conn.SetDeadline(time.Time{})
	// The group is written while the replies are read: with many recipients neither
	// side may wait for the other to read (RFC 2920 section 3.1, on deadlock).
	written := make(chan error, 1)
	go func() {
		_, err := conn.Write([]byte(group.String()))
		written <- err
	}()
	br := bufio.NewReaderSize(conn, 4096)
	var replies bytes.Buffer
	code := 0
	for range len(rcpts) + 2 {
		if code, err = readReply(br, &replies); err != nil {
			conn.Close() // ends the write too
			break
		}
	}
	if werr := <-written; err == nil && werr != nil {
		err = werr
	}
	if err == nil && br.Buffered() > 0 {
		err = errors.New("more replies than commands")
	}
	if err != nil {
		return false, fmt.Errorf("pipelined mail, rcpt, data: %w", err)
	}
	s.conn.replay, s.conn.drop = replies.Bytes(), true
	return code == 354, nil
}

// readReply reads one reply (RFC 5321 section 4.2: lines "ddd-text", the last
// "ddd text", all with one code), appends its lines as they came to out and returns its
// code.
func readReply(br *bufio.Reader, out *bytes.Buffer) (int, error) {
	first := ""
	for range maxReplyLines {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) || len(line) > maxReplyLine {
			return 0, errors.New("reply line too long")
		}
		if err != nil {
			return 0, err
		}
		l := bytes.TrimRight(line, "\r\n")
		if len(l) < 3 || l[0] < '1' || l[0] > '5' || l[1] < '0' || l[1] > '9' || l[2] < '0' || l[2] > '9' || (len(l) > 3 && l[3] != ' ' && l[3] != '-') {
			return 0, fmt.Errorf("malformed reply %q", l)
		}
		// Every line of a reply has its code (RFC 5321 section 4.2.1), as go-smtp, which
		// reads these replies again, requires.
		if first == "" {
			first = string(l[:3])
		} else if string(l[:3]) != first {
			return 0, fmt.Errorf("reply lines with codes %s and %s", first, l[:3])
		}
		out.Write(line)
		if len(l) == 3 || l[3] == ' ' {
			return int(l[0]-'0')*100 + int(l[1]-'0')*10 + int(l[2]-'0'), nil
		}
	}
	return 0, fmt.Errorf("reply of more than %d lines", maxReplyLines)
}
