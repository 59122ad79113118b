package imap

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	goimap "github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
)

type nopLogger struct{}

func (nopLogger) Printf(string, ...any) {}

type literal struct{ *bytes.Reader }

// memServer starts go-imap's in-memory server with user "user"/"secret" and returns its
// address and user.
func memServer(t *testing.T) (string, *imapmemserver.User) {
	t.Helper()
	mem := imapmemserver.New()
	u := imapmemserver.NewUser("user", "secret")
	u.Create("INBOX", nil)
	mem.AddUser(u)
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		Caps:         goimap.CapSet{goimap.CapIMAP4rev1: {}, goimap.CapIMAP4rev2: {}},
		InsecureAuth: true,
		Logger:       nopLogger{},
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), u
}

func add(t *testing.T, u *imapmemserver.User, raw string) {
	t.Helper()
	if _, err := u.Append("INBOX", literal{bytes.NewReader([]byte(raw))}, &goimap.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
}

func dial(t *testing.T, addr string, timeout time.Duration) *Client {
	t.Helper()
	c, err := Dial(context.Background(), Options{Addr: addr, TLS: TLSNone, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestFetchAndDelete(t *testing.T) {
	addr, u := memServer(t)
	add(t, u, "Message-ID: <a@x>\r\n\r\nfirst\r\n")
	add(t, u, "Message-ID: <b@x>\r\n\r\nsecond\r\n")
	c := dial(t, addr, 5*time.Second)
	if err := c.Login("user", "secret"); err != nil {
		t.Fatal(err)
	}
	mb, err := c.Select("INBOX")
	if err != nil || mb.NumMessages != 2 || mb.UIDValidity == 0 || mb.UIDNext != 3 {
		t.Fatalf("select: %+v, %v", mb, err)
	}
	uids, err := c.UIDs()
	if err != nil || len(uids) != 2 || uids[0] != 1 || uids[1] != 2 {
		t.Fatalf("uids %v, %v", uids, err)
	}
	infos, err := c.Infos(uids)
	if err != nil || len(infos) != 2 || infos[0].Size != int64(len("Message-ID: <a@x>\r\n\r\nfirst\r\n")) || infos[1].InternalDate.IsZero() {
		t.Fatalf("infos %+v, %v", infos, err)
	}
	ids, err := c.MessageIDs(uids)
	if err != nil || ids[1] != "<a@x>" || ids[2] != "<b@x>" {
		t.Fatalf("message ids %v, %v", ids, err)
	}
	bufs := map[uint32]*bytes.Buffer{}
	got := map[uint32]string{}
	err = c.FetchBodies(uids,
		func(seq, uid uint32, size int64) (io.Writer, error) {
			if size <= 0 || uid == 0 {
				t.Errorf("message %d: uid %d, size %d", seq, uid, size)
			}
			bufs[seq] = &bytes.Buffer{}
			return bufs[seq], nil
		},
		func(seq, uid uint32, n int64) error {
			if int64(bufs[seq].Len()) != n {
				t.Errorf("uid %d: %d bytes written, %d reported", uid, bufs[seq].Len(), n)
			}
			got[uid] = bufs[seq].String()
			return nil
		})
	if err != nil || !strings.HasSuffix(got[1], "first\r\n") || !strings.HasSuffix(got[2], "second\r\n") {
		t.Fatalf("bodies %v, %v", got, err)
	}
	// BODY.PEEK[] leaves \Seen alone.
	st, _ := u.Status("INBOX", &goimap.StatusOptions{NumUnseen: true})
	if *st.NumUnseen != 2 {
		t.Fatalf("fetch marked messages seen: %d unseen", *st.NumUnseen)
	}
	if ok, err := c.Delete([]uint32{1}, nil); !ok || err != nil {
		t.Fatalf("delete: %v, %v", ok, err)
	}
	if uids, _ := c.UIDs(); len(uids) != 1 || uids[0] != 2 {
		t.Fatalf("after delete: %v", uids)
	}
	if err := c.Logout(); err != nil {
		t.Fatal(err)
	}
}

func TestLoginRefused(t *testing.T) {
	addr, _ := memServer(t)
	c := dial(t, addr, 5*time.Second)
	err := c.Login("user", "wrong")
	var ae *AuthError
	if !errors.As(err, &ae) || strings.Contains(err.Error(), "wrong") {
		t.Fatalf("login error %v: not an AuthError, or it shows the password", err)
	}
}

// A server that stops answering is given up after the timeout, not waited for forever.
func TestInactivityTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte("* OK ready\r\n"))
		bufio.NewReader(c).ReadString('\n') // the command, never answered
		time.Sleep(5 * time.Second)
	}()
	c := dial(t, ln.Addr().String(), 300*time.Millisecond)
	start := time.Now()
	if _, err := c.Select("INBOX"); err == nil {
		t.Fatal("select on a silent server succeeded")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("gave up after %v, want about the 300ms timeout", d)
	}
}

// IDLE may stay quiet far longer than the timeout; a new message ends it.
func TestIdle(t *testing.T) {
	addr, u := memServer(t)
	c := dial(t, addr, 200*time.Millisecond)
	if err := c.Login("user", "secret"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX"); err != nil {
		t.Fatal(err)
	}
	if !c.CanIdle() {
		t.Fatal("no IDLE")
	}
	newMail, err := c.Idle(context.Background(), 700*time.Millisecond)
	if err != nil || newMail {
		t.Fatalf("quiet idle: %v, %v", newMail, err)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		add(t, u, "Message-ID: <n@x>\r\n\r\nnew\r\n")
	}()
	start := time.Now()
	newMail, err = c.Idle(context.Background(), 10*time.Second)
	if err != nil || !newMail || time.Since(start) > 5*time.Second {
		t.Fatalf("idle with new mail: %v, %v after %v", newMail, err, time.Since(start))
	}
	// The connection still works after IDLE.
	if uids, err := c.UIDs(); err != nil || len(uids) != 1 {
		t.Fatalf("after idle: %v, %v", uids, err)
	}
}

func TestStartTLSRefused(t *testing.T) {
	addr, _ := memServer(t) // no TLS configured: STARTTLS is refused
	_, err := Dial(context.Background(), Options{Addr: addr, TLS: TLSStartTLS, TLSConfig: nil, Timeout: time.Second})
	if err == nil {
		t.Fatal("dial without a TLS configuration succeeded")
	}
	_, err = Dial(context.Background(), Options{Addr: addr, TLS: TLSStartTLS, TLSConfig: &tls.Config{ServerName: "localhost"}, Timeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "starttls") {
		t.Fatalf("dial with a refused STARTTLS: %v", err)
	}
}
