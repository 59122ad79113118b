package bounce

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mxdrop/mxdrop/configs"
)

// Sender hands one DSN to a relay. Send returns nil once the relay has accepted the
// message. An error is temporary (retry later) unless it, or an error it wraps, has a
// Temporary method that returns false.
type Sender interface {
	Send(ctx context.Context, rcpt string, data []byte) error
}

// SASLSource provides the SASL client for one relay connection: the hook for XOAUTH2,
// whose source fetches and refreshes an access token (pollers/oauth.Source). An error
// is a temporary failure of the attempt.
type SASLSource interface {
	SASLClient(ctx context.Context) (sasl.Client, error)
}

// SASLFunc adapts a function to a SASLSource.
type SASLFunc func(ctx context.Context) (sasl.Client, error)

// SASLClient calls f.
func (f SASLFunc) SASLClient(ctx context.Context) (sasl.Client, error) { return f(ctx) }

// RelayOptions complete a relay's configuration with what the configuration file
// cannot hold.
type RelayOptions struct {
	// SASL authenticates instead of auth.method plain/login; it is required for
	// auth.method xoauth2.
	SASL SASLSource
	// LocalName is the EHLO name; default the relay's reporting_mta.
	LocalName string
	// Timeout bounds connecting and then every read and write (an idle timeout per
	// command); default cfg.Timeout, else 60s.
	Timeout time.Duration
}

// Relay sends DSNs through one SMTP relay with MAIL FROM:<>. It is immutable and safe
// for concurrent use; every Send opens its own connection, as DSNs are rare.
type Relay struct {
	host      string
	addr      string
	mode      string // none | starttls | implicit
	tls       *tls.Config
	sasl      SASLSource
	localName string
	timeout   time.Duration
}

// NewRelay checks cfg and returns its Relay. It fails for an unknown tls or auth
// method, an unreadable ca_file, xoauth2 without opts.SASL, and for authentication
// over an unencrypted connection to a host other than the loopback (a password would
// cross the network in clear text).
func NewRelay(cfg configs.SMTP, opts RelayOptions) (*Relay, error) {
	if cfg.Host == "" {
		return nil, errors.New("new relay: no host")
	}
	r := &Relay{host: cfg.Host, mode: strings.ToLower(cfg.TLS), localName: opts.LocalName, timeout: opts.Timeout}
	if r.mode == "" {
		r.mode = "none"
	}
	port := cfg.Port
	switch r.mode {
	case "none", "starttls":
		if port == 0 {
			port = 25
		}
	case "implicit":
		if port == 0 {
			port = 465
		}
	default:
		return nil, fmt.Errorf("new relay %s: tls %q is not none, starttls or implicit", cfg.Host, cfg.TLS)
	}
	r.addr = net.JoinHostPort(cfg.Host, strconv.Itoa(port))
	if r.timeout <= 0 {
		r.timeout = cfg.Timeout.D()
	}
	if r.timeout <= 0 {
		r.timeout = 60 * time.Second
	}
	if r.localName == "" {
		r.localName = cfg.ReportingMTA
	}
	if r.localName == "" {
		r.localName, _ = os.Hostname()
	}
	if r.localName == "" {
		r.localName = "localhost"
	}
	if r.mode != "none" {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if cfg.CAFile != "" {
			pem, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("new relay %s: read ca_file: %w", cfg.Host, err)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("new relay %s: ca_file %s holds no PEM certificate", cfg.Host, cfg.CAFile)
			}
		}
		// Certificates are always verified: there is no setting to skip it.
		r.tls = &tls.Config{ServerName: cfg.Host, RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	method := strings.ToLower(cfg.Auth.Method)
	switch {
	case opts.SASL != nil:
		r.sasl = opts.SASL
	case method == "" || method == "none":
	case method == "plain" || method == "login":
		if cfg.Auth.Username == "" {
			return nil, fmt.Errorf("new relay %s: auth %s needs a username", cfg.Host, method)
		}
		r.sasl = passwordSASL(method, cfg.Auth)
	case method == "xoauth2":
		return nil, fmt.Errorf("new relay %s: auth xoauth2 needs an OAuth token source", cfg.Host)
	default:
		return nil, fmt.Errorf("new relay %s: auth method %q is not none, plain, login or xoauth2", cfg.Host, cfg.Auth.Method)
	}
	if r.sasl != nil && r.mode == "none" && !isLoopback(cfg.Host) {
		return nil, fmt.Errorf("new relay %s: authentication needs tls starttls or implicit (credentials would cross the network in clear text)", cfg.Host)
	}
	return r, nil
}

// String names the relay for logs: host:port.
func (r *Relay) String() string { return r.addr }

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// passwordSASL returns the PLAIN or LOGIN client. The password is the loaded secret,
// or read from password_file at each connection when the loader left it there, so a
// rotated password is picked up.
func passwordSASL(method string, a configs.SMTPAuth) SASLSource {
	return SASLFunc(func(context.Context) (sasl.Client, error) {
		pw := a.Password.Reveal()
		if pw == "" && a.PasswordFile != "" {
			b, err := os.ReadFile(a.PasswordFile)
			if err != nil {
				return nil, fmt.Errorf("read password_file: %w", err)
			}
			pw = strings.TrimRight(string(b), "\r\n")
		}
		if method == "login" {
			return sasl.NewLoginClient(a.Username, pw), nil
		}
		return sasl.NewPlainClient("", a.Username, pw), nil
	})
}

// Stages of a relay transaction, as SendError names them.
const (
	StageConnect = "connect"
	StageTLS     = "tls"
	StageHello   = "hello"
	StageAuth    = "auth"
	StageMail    = "mail"
	StageRcpt    = "rcpt"
	StageData    = "data"
)

// SendError is a failed relay transaction. It is permanent only for a 5xx reply to
// MAIL, RCPT or DATA: the relay refuses this DSN. A 5xx before the transaction
// (greeting, EHLO, STARTTLS, AUTH) is a relay or configuration problem that an
// administrator can fix, so it is temporary like 4xx replies and network and TLS
// errors: the DSN is kept and retried until retry_for.
type SendError struct {
	Stage    string // one of the Stage constants
	Code     int    // SMTP reply code; 0 when there was no reply
	Enhanced string // RFC 3463 code of the reply, "" when it had none
	Message  string // the relay's reply text
	Err      error
}

func (e *SendError) Error() string {
	if e.Code != 0 {
		s := fmt.Sprintf("relay %s: %d", e.Stage, e.Code)
		if e.Enhanced != "" {
			s += " " + e.Enhanced
		}
		return s + " " + e.Message
	}
	return fmt.Sprintf("relay %s: %v", e.Stage, e.Err)
}

// Unwrap returns the cause.
func (e *SendError) Unwrap() error { return e.Err }

// Temporary reports whether a later attempt may succeed.
func (e *SendError) Temporary() bool {
	if e.Code >= 500 && e.Code < 600 {
		switch e.Stage {
		case StageMail, StageRcpt, StageData:
			return false
		}
	}
	return true
}

func sendErr(stage string, err error) error {
	se := &SendError{Stage: stage, Err: err}
	var ce *smtp.SMTPError
	if errors.As(err, &ce) {
		se.Code, se.Message = ce.Code, ce.Message
		if ce.EnhancedCode != smtp.NoEnhancedCode && ce.EnhancedCode != (smtp.EnhancedCode{}) {
			se.Enhanced = fmt.Sprintf("%d.%d.%d", ce.EnhancedCode[0], ce.EnhancedCode[1], ce.EnhancedCode[2])
		}
	}
	var te *tls.CertificateVerificationError
	if se.Code == 0 && errors.As(err, &te) {
		se.Stage = StageTLS
	}
	return se
}

// IsPermanent reports whether err (or an error it wraps) says that sending can never
// succeed: a Temporary method returning false.
func IsPermanent(err error) bool {
	var t interface{ Temporary() bool }
	return err != nil && errors.As(err, &t) && !t.Temporary()
}

// Send delivers data to rcpt with MAIL FROM:<>. It returns nil when the relay accepted
// the message, else a *SendError. Cancelling ctx aborts the connection.
func (r *Relay) Send(ctx context.Context, rcpt string, data []byte) error {
	d := net.Dialer{Timeout: r.timeout}
	raw, err := d.DialContext(ctx, "tcp", r.addr)
	if err != nil {
		return sendErr(StageConnect, err)
	}
	var conn net.Conn = &idleConn{Conn: raw, timeout: r.timeout}
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	defer raw.Close()

	var c *smtp.Client
	switch r.mode {
	case "implicit":
		tc := tls.Client(conn, r.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			return sendErr(StageTLS, err)
		}
		c = smtp.NewClient(tc)
	case "starttls":
		// QUIRK: go-smtp greets with EHLO localhost before STARTTLS; the EHLO that
		// counts is the one below, on the encrypted connection. A relay without
		// STARTTLS is an error: no fallback to clear text.
		c, err = smtp.NewClientStartTLS(conn, r.tls)
		if err != nil {
			return sendErr(StageTLS, err)
		}
	default:
		c = smtp.NewClient(conn)
	}
	defer c.Close()
	c.CommandTimeout = r.timeout
	c.SubmissionTimeout = r.timeout
	if err := c.Hello(r.localName); err != nil {
		return sendErr(StageHello, err)
	}
	if r.sasl != nil {
		cl, err := r.sasl.SASLClient(ctx)
		if err != nil {
			return sendErr(StageAuth, err)
		}
		if err := c.Auth(cl); err != nil {
			return sendErr(StageAuth, err)
		}
	}
	if err := c.Mail("", nil); err != nil {
		return sendErr(StageMail, err)
	}
	if err := c.Rcpt(rcpt, nil); err != nil {
		return sendErr(StageRcpt, err)
	}
	w, err := c.Data()
	if err != nil {
		return sendErr(StageData, err)
	}
	if _, err := w.Write(data); err != nil {
		return sendErr(StageData, err)
	}
	if err := w.Close(); err != nil {
		return sendErr(StageData, err)
	}
	// The relay has the message; a failing QUIT changes nothing.
	_ = c.Quit()
	return nil
}

// idleConn sets a deadline before every read and write, so a relay that stops
// answering in any phase (greeting, TLS, DATA) is given up after timeout.
type idleConn struct {
	net.Conn
	timeout time.Duration
}

func (c *idleConn) Read(p []byte) (int, error) {
	_ = c.Conn.SetReadDeadline(time.Now().Add(c.timeout))
	return c.Conn.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) {
	_ = c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	return c.Conn.Write(p)
}
