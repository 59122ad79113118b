package lmtp

import (
	"bufio"
	"bytes"
	"strconv"
	"testing"
)

// FuzzReadReply reads a pipelined group's replies from arbitrary server bytes: no panic;
// a reply accepted has a code from 100 to 599 and is kept exactly as it came, a prefix
// of the input, with lines no longer than maxReplyLine and no more than maxReplyLines.
func FuzzReadReply(f *testing.F) {
	f.Add([]byte("250 2.1.0 OK\r\n250 2.1.5 OK\r\n354 OK\r\n"))
	f.Add([]byte("250-first\r\n250-second\r\n250 last\r\n"))
	f.Add([]byte("550 5.1.1 <nobody@example.com> User doesn't exist\r\n452 4.2.2 full\r\n"))
	f.Add([]byte("25\r\n"))
	f.Add([]byte("250x\r\n"))
	f.Add(bytes.Repeat([]byte("250-"), 700))
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(in), 4096)
		var out bytes.Buffer
		for range 8 {
			before := out.Len()
			code, err := readReply(br, &out)
			if err != nil {
				return
			}
			if code < 100 || code > 599 {
				t.Fatalf("code %d", code)
			}
			reply := out.Bytes()[before:]
			if !bytes.HasPrefix(reply, []byte(strconv.Itoa(code))) {
				t.Fatalf("reply %q does not start with its code %d", reply, code)
			}
			lines := bytes.SplitAfter(reply, []byte("\n"))
			if len(lines) > maxReplyLines+1 {
				t.Fatalf("%d lines", len(lines))
			}
			for _, l := range lines {
				if len(l) > maxReplyLine {
					t.Fatalf("line of %d bytes", len(l))
				}
			}
			if !bytes.HasPrefix(in, out.Bytes()) {
				t.Fatalf("replies kept %q are not the input as it came", out.Bytes())
			}
		}
	})
}
