package bounce

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mxdrop/mxdrop/configs"
)

// recServer is a recording SMTP server on 127.0.0.1:0.
type recServer struct {
	t    *testing.T
	addr string
	port int

	mu       sync.Mutex
	msgs     []recMsg
	tlsSeen  []bool
	replies  map[string][]error // stage (mail, rcpt, data) -> errors to answer, in turn
	user     string             // when set, AUTH is required with user/pass
	pass     string
	token    string // XOAUTH2 token accepted for user
	authMech []string
}

type recMsg struct {
	from, rcpt, mech string
	data             []byte
	tls              bool
}

type serverMode int

const (
	plainServer    serverMode = iota
	startTLSServer            // STARTTLS offered
	implicitServer            // TLS from the first byte
)

// testCert returns a self-signed certificate for 127.0.0.1 and the path of its PEM,
// usable as ca_file.
func testCert(t *testing.T) (tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mxdrop test relay"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, p
}

func startServer(t *testing.T, mode serverMode, cert tls.Certificate, setup func(*recServer)) *recServer {
	t.Helper()
	rs := &recServer{t: t, replies: map[string][]error{}}
	if setup != nil {
		setup(rs)
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		_, isTLS := c.TLSConnectionState()
		return &recSession{rs: rs, conn: c, tls: isTLS}, nil
	}))
	srv.Domain = "relay.test"
	srv.ErrorLog = log.New(io.Discard, "", 0)
	srv.AllowInsecureAuth = true
	srv.ReadTimeout = 10 * time.Second
	srv.WriteTimeout = 10 * time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tcfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	switch mode {
	case startTLSServer:
		srv.TLSConfig = tcfg
	case implicitServer:
		ln = tls.NewListener(ln, tcfg)
	}
	rs.addr = ln.Addr().String()
	rs.port = ln.Addr().(*net.TCPAddr).Port
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return rs
}

// reply queues err as the answer to the next command of stage.
func (rs *recServer) reply(stage string, errs ...error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.replies[stage] = append(rs.replies[stage], errs...)
}

func (rs *recServer) next(stage string) error {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	q := rs.replies[stage]
	if len(q) == 0 {
		return nil
	}
	rs.replies[stage] = q[1:]
	return q[0]
}

func (rs *recServer) messages() []recMsg {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return append([]recMsg(nil), rs.msgs...)
}

func (rs *recServer) relayConfig() configs.SMTP {
	return configs.SMTP{Host: "127.0.0.1", Port: rs.port, ReportingMTA: "mx.example.com", Timeout: configs.Duration(5 * time.Second)}
}

type recSession struct {
	rs     *recServer
	conn   *smtp.Conn
	tls    bool
	mech   string
	authed bool
	from   string
	rcpt   string
}

func (s *recSession) AuthMechanisms() []string {
	if s.rs.user == "" {
		return nil
	}
	return []string{"PLAIN", "LOGIN", "XOAUTH2"}
}

func (s *recSession) Auth(mech string) (sasl.Server, error) {
	s.mech = mech
	check := func(user, pass string) error {
		if user != s.rs.user || pass != s.rs.pass {
			return errors.New("invalid credentials")
		}
		s.authed = true
		return nil
	}
	switch mech {
	case "PLAIN":
		return sasl.NewPlainServer(func(_, user, pass string) error { return check(user, pass) }), nil
	case "LOGIN":
		return &loginServer{check: check}, nil
	case "XOAUTH2":
		return &xoauth2Server{want: "user=" + s.rs.user + "\x01auth=Bearer " + s.rs.token + "\x01\x01", ok: func() { s.authed = true }}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (s *recSession) Mail(from string, _ *smtp.MailOptions) error {
	if s.rs.user != "" && !s.authed {
		return smtp.ErrAuthRequired
	}
	if err := s.rs.next(StageMail); err != nil {
		return err
	}
	s.from = from
	return nil
}

func (s *recSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if err := s.rs.next(StageRcpt); err != nil {
		return err
	}
	s.rcpt = to
	return nil
}

func (s *recSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if err := s.rs.next(StageData); err != nil {
		return err
	}
	_, isTLS := s.conn.TLSConnectionState()
	s.rs.mu.Lock()
	s.rs.msgs = append(s.rs.msgs, recMsg{from: s.from, rcpt: s.rcpt, mech: s.mech, data: b, tls: isTLS})
	s.rs.mu.Unlock()
	return nil
}

func (s *recSession) Reset()        {}
func (s *recSession) Logout() error { return nil }

// loginServer is the server side of SASL LOGIN, which go-sasl does not provide.
type loginServer struct {
	check      func(user, pass string) error
	step       int
	user, pass string
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		l.step = 1
		if len(resp) > 0 { // initial response carries the user name
			l.user = string(resp)
			l.step = 2
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 1:
		l.user = string(resp)
		l.step = 2
		return []byte("Password:"), false, nil
	default:
		l.pass = string(resp)
		return nil, true, l.check(l.user, l.pass)
	}
}

type xoauth2Server struct {
	want string
	ok   func()
}

func (x *xoauth2Server) Next(resp []byte) ([]byte, bool, error) {
	if string(resp) != x.want {
		return nil, true, errors.New("invalid token")
	}
	x.ok()
	return nil, true, nil
}

func newRelay(t *testing.T, cfg configs.SMTP, opts RelayOptions) *Relay {
	t.Helper()
	r, err := NewRelay(cfg, opts)
	if err != nil {
		t.Fatalf("new relay: %v", err)
	}
	return r
}

func testDSN(t *testing.T) *DSN {
	t.Helper()
	d, err := Build(Report{ID: "m1", Sender: "alice@sender.example", Recipients: []Recipient{{Address: "nobody@example.com", Status: "5.1.1"}}},
		Options{ReportingMTA: "mx.example.com", Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// checkDelivered checks that the server got exactly d, once, from <>.
func checkDelivered(t *testing.T, rs *recServer, d *DSN, wantTLS bool) recMsg {
	t.Helper()
	msgs := rs.messages()
	if len(msgs) != 1 {
		t.Fatalf("server got %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.from != "" {
		t.Errorf("MAIL FROM:<%s>, want <>", m.from)
	}
	if m.rcpt != d.Sender {
		t.Errorf("RCPT TO:<%s>, want <%s>", m.rcpt, d.Sender)
	}
	if !bytes.Equal(m.data, d.Data) {
		t.Errorf("data differs:\n%q\nwant\n%q", m.data, d.Data)
	}
	if m.tls != wantTLS {
		t.Errorf("TLS = %v, want %v", m.tls, wantTLS)
	}
	return m
}

func TestRelaySend(t *testing.T) {
	cert, _ := testCert(t)
	rs := startServer(t, plainServer, cert, nil)
	d := testDSN(t)
	r := newRelay(t, rs.relayConfig(), RelayOptions{})
	if err := r.Send(context.Background(), d.Sender, d.Data); err != nil {
		t.Fatalf("send: %v", err)
	}
	checkDelivered(t, rs, d, false)
}

func TestRelayTLS(t *testing.T) {
	cert, caFile := testCert(t)
	for _, tc := range []struct {
		name string
		mode serverMode
		tls  string
	}{
		{"starttls", startTLSServer, "starttls"},
		{"implicit", implicitServer, "implicit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := startServer(t, tc.mode, cert, nil)
			d := testDSN(t)
			cfg := rs.relayConfig()
			cfg.TLS = tc.tls

			// Without the private CA the certificate is not trusted: no mail.
			err := newRelay(t, cfg, RelayOptions{}).Send(context.Background(), d.Sender, d.Data)
			var se *SendError
			if err == nil || !errors.As(err, &se) || se.Stage != StageTLS || IsPermanent(err) {
				t.Fatalf("send to an untrusted relay = %v, want a temporary tls error", err)
			}
			var cv *tls.CertificateVerificationError
			if !errors.As(err, &cv) {
				t.Errorf("error %v does not wrap the certificate verification failure", err)
			}
			if n := len(rs.messages()); n != 0 {
				t.Fatalf("an untrusted relay got %d messages", n)
			}

			cfg.CAFile = caFile
			if err := newRelay(t, cfg, RelayOptions{}).Send(context.Background(), d.Sender, d.Data); err != nil {
				t.Fatalf("send with ca_file: %v", err)
			}
			checkDelivered(t, rs, d, true)
		})
	}
}

func TestRelayStartTLSMissing(t *testing.T) {
	cert, caFile := testCert(t)
	rs := startServer(t, plainServer, cert, nil)
	cfg := rs.relayConfig()
	cfg.TLS, cfg.CAFile = "starttls", caFile
	d := testDSN(t)
	err := newRelay(t, cfg, RelayOptions{}).Send(context.Background(), d.Sender, d.Data)
	if err == nil || IsPermanent(err) {
		t.Fatalf("send without STARTTLS = %v, want a temporary error", err)
	}
	if len(rs.messages()) != 0 {
		t.Fatal("sent in clear text when STARTTLS was required")
	}
}

func TestRelayAuth(t *testing.T) {
	cert, caFile := testCert(t)
	for _, mech := range []string{"plain", "login"} {
		t.Run(mech, func(t *testing.T) {
			rs := startServer(t, startTLSServer, cert, func(rs *recServer) { rs.user, rs.pass = "relayuser", "s3cret pass" })
			cfg := rs.relayConfig()
			cfg.TLS, cfg.CAFile = "starttls", caFile
			cfg.Auth = configs.SMTPAuth{Method: mech, Username: "relayuser", Password: "wrong"}
			d := testDSN(t)

			err := newRelay(t, cfg, RelayOptions{}).Send(context.Background(), d.Sender, d.Data)
			var se *SendError
			if !errors.As(err, &se) || se.Stage != StageAuth || se.Code/100 != 4 && se.Code/100 != 5 || IsPermanent(err) {
				t.Fatalf("send with a wrong password = %v, want a temporary auth error", err)
			}
			if strings.Contains(err.Error(), "wrong") {
				t.Errorf("the error shows the password: %v", err)
			}

			cfg.Auth.Password = ""
			cfg.Auth.PasswordFile = filepath.Join(t.TempDir(), "pw")
			os.WriteFile(cfg.Auth.PasswordFile, []byte("s3cret pass\n"), 0o600)
			if err := newRelay(t, cfg, RelayOptions{}).Send(context.Background(), d.Sender, d.Data); err != nil {
				t.Fatalf("send: %v", err)
			}
			m := checkDelivered(t, rs, d, true)
			if m.mech != strings.ToUpper(mech) {
				t.Errorf("server saw AUTH %s, want %s", m.mech, strings.ToUpper(mech))
			}
		})
	}
	t.Run("xoauth2 hook", func(t *testing.T) {
		rs := startServer(t, implicitServer, cert, func(rs *recServer) { rs.user, rs.token = "relayuser", "tok123" })
		cfg := rs.relayConfig()
		cfg.TLS, cfg.CAFile = "implicit", caFile
		cfg.Auth = configs.SMTPAuth{Method: "xoauth2", Username: "relayuser"}
		if _, err := NewRelay(cfg, RelayOptions{}); err == nil {
			t.Error("xoauth2 without a token source accepted")
		}
		calls := 0
		src := SASLFunc(func(context.Context) (sasl.Client, error) {
			calls++
			return testXOAuth2{user: "relayuser", token: "tok123"}, nil
		})
		d := testDSN(t)
		if err := newRelay(t, cfg, RelayOptions{SASL: src}).Send(context.Background(), d.Sender, d.Data); err != nil {
			t.Fatalf("send: %v", err)
		}
		if m := checkDelivered(t, rs, d, true); m.mech != "XOAUTH2" || calls != 1 {
			t.Errorf("mechanism %s, token source called %d times", m.mech, calls)
		}
	})
}

func TestRelayReplies(t *testing.T) {
	cert, _ := testCert(t)
	temp := &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
	perm := &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	for _, tc := range []struct {
		stage     string
		err       *smtp.SMTPError
		permanent bool
	}{
		{StageMail, temp, false},
		{StageMail, perm, true},
		{StageRcpt, temp, false},
		{StageRcpt, perm, true},
		{StageData, temp, false},
		{StageData, &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "content rejected"}, true},
	} {
		t.Run(tc.stage+" "+tc.err.Message, func(t *testing.T) {
			rs := startServer(t, plainServer, cert, nil)
			rs.reply(tc.stage, tc.err)
			d := testDSN(t)
			err := newRelay(t, rs.relayConfig(), RelayOptions{}).Send(context.Background(), d.Sender, d.Data)
			var se *SendError
			if !errors.As(err, &se) {
				t.Fatalf("send = %v, want a *SendError", err)
			}
			if se.Stage != tc.stage || se.Code != tc.err.Code || IsPermanent(err) != tc.permanent {
				t.Errorf("error %v: stage %s code %d permanent %v", err, se.Stage, se.Code, IsPermanent(err))
			}
			if !strings.Contains(err.Error(), tc.err.Message) {
				t.Errorf("error %q lacks the relay's text %q", err, tc.err.Message)
			}
			if tc.err.Code/100 == 5 && se.Enhanced == "" {
				t.Errorf("enhanced code lost: %v", err)
			}
		})
	}
}

func TestRelayNetworkErrors(t *testing.T) {
	d := testDSN(t)

	// Nothing listens.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	err := newRelay(t, configs.SMTP{Host: "127.0.0.1", Port: port}, RelayOptions{}).Send(context.Background(), d.Sender, d.Data)
	var se *SendError
	if !errors.As(err, &se) || se.Stage != StageConnect || IsPermanent(err) {
		t.Errorf("send to a closed port = %v, want a temporary connect error", err)
	}

	// A relay that accepts the connection and never greets.
	ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	port = ln.Addr().(*net.TCPAddr).Port
	start := time.Now()
	err = newRelay(t, configs.SMTP{Host: "127.0.0.1", Port: port}, RelayOptions{Timeout: 200 * time.Millisecond}).
		Send(context.Background(), d.Sender, d.Data)
	if err == nil || IsPermanent(err) {
		t.Errorf("send to a silent relay = %v, want a temporary error", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("the timeout took %v", time.Since(start))
	}

	// Cancelling the context aborts the transaction.
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(100 * time.Millisecond); cancel() }()
	start = time.Now()
	err = newRelay(t, configs.SMTP{Host: "127.0.0.1", Port: port}, RelayOptions{Timeout: time.Minute}).Send(ctx, d.Sender, d.Data)
	if err == nil || time.Since(start) > 5*time.Second {
		t.Errorf("send with a cancelled context = %v after %v", err, time.Since(start))
	}
}

func TestNewRelayErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.pem")
	os.WriteFile(bad, []byte("not a certificate"), 0o600)
	for _, tc := range []struct {
		name string
		cfg  configs.SMTP
	}{
		{"no host", configs.SMTP{}},
		{"unknown tls", configs.SMTP{Host: "relay.example", TLS: "maybe"}},
		{"missing ca_file", configs.SMTP{Host: "relay.example", TLS: "starttls", CAFile: "/nonexistent/ca.pem"}},
		{"ca_file without certificate", configs.SMTP{Host: "relay.example", TLS: "implicit", CAFile: bad}},
		{"unknown auth", configs.SMTP{Host: "relay.example", TLS: "starttls", Auth: configs.SMTPAuth{Method: "cram-md5", Username: "u"}}},
		{"plain without user", configs.SMTP{Host: "relay.example", TLS: "starttls", Auth: configs.SMTPAuth{Method: "plain"}}},
		{"password in clear text", configs.SMTP{Host: "relay.example", Auth: configs.SMTPAuth{Method: "login", Username: "u", Password: "p"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewRelay(tc.cfg, RelayOptions{}); err == nil {
				t.Error("NewRelay accepted it")
			} else if strings.Contains(err.Error(), "p\"") {
				t.Errorf("error shows a secret: %v", err)
			}
		})
	}
	r, err := NewRelay(configs.SMTP{Host: "relay.example", TLS: "implicit"}, RelayOptions{})
	if err != nil || r.String() != "relay.example:465" {
		t.Errorf("implicit default port: %v %v", r, err)
	}
	r, err = NewRelay(configs.SMTP{Host: "::1", Auth: configs.SMTPAuth{Method: "plain", Username: "u"}}, RelayOptions{})
	if err != nil || r.String() != "[::1]:25" {
		t.Errorf("loopback relay with auth in clear text: %v %v", r, err)
	}
}

func TestSendErrorTemporary(t *testing.T) {
	for _, tc := range []struct {
		err  *SendError
		temp bool
	}{
		{&SendError{Stage: StageConnect, Err: errors.New("refused")}, true},
		{&SendError{Stage: StageTLS, Err: errors.New("bad certificate")}, true},
		{&SendError{Stage: StageHello, Code: 554}, true},
		{&SendError{Stage: StageAuth, Code: 535}, true},
		{&SendError{Stage: StageMail, Code: 451}, true},
		{&SendError{Stage: StageMail, Code: 553}, false},
		{&SendError{Stage: StageRcpt, Code: 450}, true},
		{&SendError{Stage: StageRcpt, Code: 550}, false},
		{&SendError{Stage: StageData, Code: 452}, true},
		{&SendError{Stage: StageData, Code: 552}, false},
	} {
		if got := tc.err.Temporary(); got != tc.temp {
			t.Errorf("%s %d: Temporary = %v, want %v", tc.err.Stage, tc.err.Code, got, tc.temp)
		}
		if IsPermanent(tc.err) == tc.temp {
			t.Errorf("%s %d: IsPermanent disagrees", tc.err.Stage, tc.err.Code)
		}
	}
	if IsPermanent(errors.New("plain")) || IsPermanent(nil) {
		t.Error("an error without Temporary is permanent")
	}
}

// testXOAuth2 is a minimal XOAUTH2 client for the relay's SASL hook; mxdrop's own lives
// in pollers/oauth.
type testXOAuth2 struct{ user, token string }

func (c testXOAuth2) Start() (string, []byte, error) {
	return "XOAUTH2", []byte("user=" + c.user + "\x01auth=Bearer " + c.token + "\x01\x01"), nil
}

func (c testXOAuth2) Next([]byte) ([]byte, error) { return []byte{}, nil }
