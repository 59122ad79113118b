package pop3

import (
	"context"
	"io"
	"testing"
	"time"
)

// FuzzServerReplies lets a server answer a logged-in session (STAT, LIST, UIDL, RETR 1,
// TOP 1 0, QUIT) with arbitrary bytes: then hangs up: the client must not panic or hang, and whatever it
// accepts is well formed: message numbers from 1, sizes not negative, unique-ids of
// printable characters and at most 255 bytes, a message no longer than what was sent.
func FuzzServerReplies(f *testing.F) {
	f.Add([]byte("+OK 2 320\r\n+OK\r\n1 120\r\n2 200\r\n.\r\n+OK\r\n1 a\r\n2 b\r\n.\r\n+OK\r\nSubject: x\r\n\r\n..dot\r\n.\r\n+OK\r\nSubject: x\r\n\r\n.\r\n+OK bye\r\n"))
	f.Add([]byte("+OK 1 5\r\n+OK\r\n0 5\r\n.\r\n-ERR [SYS/TEMP] no\r\n+OK\r\n1 \x01\r\n.\r\n"))
	f.Add([]byte("+OK\r\n+OK\r\n1 -5\r\n1 99999999999999999999\r\n.\r\n+OK\r\n.\r\n"))
	f.Add([]byte("+OK 1 1\r\n+OK\r\n1 1\r\n.\r\n+OK\r\n1 u\r\n.\r\n+OK\r\nno end"))
	f.Fuzz(func(t *testing.T, replies []byte) {
		addr := fake(t, func(p *peer) {
			p.loggedIn()
			p.raw(string(replies))
			// Then the server hangs up: the client meets the end of the replies at once
			// (a server that stops answering is TestIdleTimeout's).
		})
		c, err := Dial(context.Background(), Options{Addr: addr, Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Login("u", "p"); err != nil {
			return // only on a machine too loaded for the timeout
		}
		if _, size, err := c.Stat(); err == nil && size < 0 {
			t.Errorf("STAT size %d", size)
		}
		if sizes, err := c.List(); err == nil {
			for _, m := range sizes {
				if m.Num < 1 || m.Size < 0 {
					t.Errorf("LIST entry %+v", m)
				}
			}
		}
		if uids, err := c.UIDL(); err == nil {
			for _, u := range uids {
				if u.Num < 1 || !validUID(u.UID) {
					t.Errorf("UIDL entry %+v", u)
				}
			}
		}
		for _, open := range []func() (io.ReadCloser, error){
			func() (io.ReadCloser, error) { return c.Retr(1) },
			func() (io.ReadCloser, error) { return c.Top(1, 0) },
		} {
			r, err := open()
			if err != nil {
				continue
			}
			n, _ := io.Copy(io.Discard, r)
			r.Close()
			if n > int64(len(replies)) {
				t.Errorf("read %d bytes of a message from %d bytes of replies", n, len(replies))
			}
		}
		c.Quit()
	})
}
