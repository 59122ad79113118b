package lmtp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer"
)

// fakeServer is an LMTP server on loopback that records every delivery per recipient
// and answers what refuse says for a recipient at the end of DATA.
type fakeServer struct {
	mu        sync.Mutex
	delivered map[string]int // recipient -> deliveries
	sessions  int
	mails     int
	refuse    func(rcpt string) error // nil: accept
	addr      string
}

type fakeSession struct {
	s     *fakeServer
	rcpts []string
}

func (f *fakeSession) Reset()        { f.rcpts = nil }
func (f *fakeSession) Logout() error { return nil }
func (f *fakeSession) Mail(string, *smtp.MailOptions) error {
	f.s.mu.Lock()
	f.s.mails++
	f.s.mu.Unlock()
	return nil
}
func (f *fakeSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if strings.HasPrefix(to, "nobody@") {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: to + " User doesn't exist"}
	}
	f.rcpts = append(f.rcpts, to)
	return nil
}
func (f *fakeSession) Data(r io.Reader) error { return errors.New("LMTPData only") }
func (f *fakeSession) LMTPData(r io.Reader, st smtp.StatusCollector) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	for _, rc := range f.rcpts {
		var err error
		if f.s.refuse != nil {
			err = f.s.refuse(rc)
		}
		if err == nil {
			f.s.delivered[rc]++
		}
		st.SetStatus(rc, err)
	}
	return nil
}

func startFake(t *testing.T) *fakeServer {
	t.Helper()
	fs := &fakeServer{delivered: map[string]int{}}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		fs.mu.Lock()
		fs.sessions++
		fs.mu.Unlock()
		return &fakeSession{s: fs}, nil
	}))
	srv.LMTP = true
	srv.Domain = "fake.test"
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fs.addr = l.Addr().String()
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return fs
}

func rawMessage(id string, rcpts ...string) []byte {
	return []byte(fmt.Sprintf("Return-Path: <sender@example.net>\r\nX-Original-To: %s\r\nFrom: sender@example.net\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@example.net>\r\n\r\nHello.\r\n", strings.Join(rcpts, ", "), strings.Join(rcpts, ", "), id, id))
}

func message(id string, raw []byte) importer.Message {
	return importer.Message{ID: id, Name: id, Size: int64(len(raw)), Arrived: time.Unix(1704186901, 0),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil }}
}

// TestTemporaryFailureRetried: the server answers 451 for one recipient; Import returns
// a temporary error, and the retry sends only that recipient: nothing lost, nothing
// delivered twice. An unknown user fails with the server's 5.1.1 and its words.
func TestTemporaryFailureRetried(t *testing.T) {
	fs := startFake(t)
	first := true
	fs.refuse = func(rcpt string) error {
		if rcpt == "bob@example.com" && first {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
		}
		return nil
	}
	im := newImporter(t, configs.LMTP{Address: fs.addr, Connections: 2, Timeout: configs.Duration(5 * time.Second)})
	msg := message("m1", rawMessage("m1", "alice@example.com", "bob@example.com", "nobody@example.com"))
	_, err := im.Import(context.Background(), msg)
	if err == nil || !importer.IsTemporary(err) {
		t.Fatalf("first attempt: %v, want a temporary error", err)
	}
	first = false
	msg.Recovered = true
	res, err := im.Import(context.Background(), msg)
	if err != nil {
		t.Fatal(err)
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.delivered["alice@example.com"] != 1 || fs.delivered["bob@example.com"] != 1 {
		t.Errorf("deliveries %v, want alice and bob once each", fs.delivered)
	}
	if res.Outcome != importer.OutcomePartial || len(res.Delivered) != 2 || len(res.Failed) != 1 {
		t.Fatalf("result %+v", res)
	}
	f := res.Failed[0]
	if f.Recipient != "nobody@example.com" || f.Status != "5.1.1" || !strings.Contains(f.Diagnostic, "550 5.1.1 nobody@example.com User doesn't exist") {
		t.Errorf("failure %+v", f)
	}
	if fs.sessions > 2 {
		t.Errorf("%d sessions for 2 transactions with 2 connections: not reused", fs.sessions)
	}
}

// TestFinishedNotedWithoutFilePerMessage: a message the server accepted for every
// recipient is noted as finished, so that a retry after a crash before its
// acknowledgement (Recovered) sends nothing again; the notes of many messages share one
// journal instead of a file each.
func TestFinishedNotedWithoutFilePerMessage(t *testing.T) {
	fs := startFake(t)
	cl, err := New(configs.LMTP{Address: fs.addr, Connections: 2, Timeout: configs.Duration(5 * time.Second)}, "mx.test")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	progress := t.TempDir()
	im, err := importer.New(importer.Options{Domains: []string{"example.com"}, Target: cl, ProgressDir: progress})
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	msgs := make([]importer.Message, n)
	for i := range msgs {
		id := fmt.Sprintf("f%02d", i)
		msgs[i] = message(id, rawMessage(id, "alice@example.com", "bob@example.com"))
		if _, err := im.Import(context.Background(), msgs[i]); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	for i := range msgs {
		msgs[i].Recovered = true
		res, err := im.Import(context.Background(), msgs[i])
		if err != nil {
			t.Fatalf("message %d again: %v", i, err)
		}
		if len(res.Delivered) != 2 || !res.Delivered[0].Existing || !res.Delivered[1].Existing {
			t.Errorf("message %d again: delivered %+v, want both recipients as existing", i, res.Delivered)
		}
	}
	fs.mu.Lock()
	if fs.delivered["alice@example.com"] != n || fs.delivered["bob@example.com"] != n || fs.mails != n {
		t.Errorf("deliveries %v in %d transactions, want %d each in %d", fs.delivered, fs.mails, n, n)
	}
	fs.mu.Unlock()
	ents, err := os.ReadDir(progress)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) > 1 {
		t.Errorf("%d files in the progress folder for %d finished messages, want one journal", len(ents), n)
	}
}

// newImporter returns an Importer for example.com that delivers through a new Client of
// cfg, closed when the test ends.
func newImporter(t *testing.T, cfg configs.LMTP) *importer.Importer {
	t.Helper()
	cl, err := New(cfg, "mx.test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	im, err := importer.New(importer.Options{Domains: []string{"example.com"}, Target: cl, ProgressDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return im
}
