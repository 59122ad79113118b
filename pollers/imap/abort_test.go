package imap

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// failAfter is a writer that takes n bytes and then fails with errFull.
type failAfter struct{ n int }

var errFull = errors.New("spool full")

func (w *failAfter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		return 0, errFull
	}
	w.n -= len(p)
	return len(p), nil
}

// TestFetchBodiesAbort: when open refuses a body, or its writer fails midway, the
// rest of the literal is not read (its size is the server's to choose): the
// connection is closed, and the error is returned.
func TestFetchBodiesAbort(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(seq, uid uint32, size int64) (io.Writer, error)
	}{
		{"open refuses", func(seq, uid uint32, size int64) (io.Writer, error) { return nil, errFull }},
		{"writer fails", func(seq, uid uint32, size int64) (io.Writer, error) { return &failAfter{n: 100}, nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, u := memServer(t)
			add(t, u, "Message-ID: <big@x>\r\n\r\n"+strings.Repeat(strings.Repeat("b", 78)+"\r\n", 50000))
			add(t, u, "Message-ID: <next@x>\r\n\r\nnext\r\n")
			c := dial(t, addr, 5*time.Second)
			if err := c.Login("user", "secret"); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Select("INBOX"); err != nil {
				t.Fatal(err)
			}
			done := 0
			err := c.FetchBodies([]uint32{1, 2}, tc.open, func(seq, uid uint32, n int64) error {
				done++
				return nil
			})
			if !errors.Is(err, errFull) || done != 0 {
				t.Fatalf("FetchBodies: %v, %d done; want the writer's error first", err, done)
			}
			if _, err := c.UIDs(); err == nil {
				t.Fatal("the connection is still in use after a refused literal")
			}
		})
	}
}
