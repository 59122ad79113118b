package pop3

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// peer is the server side of one connection of a fake POP3 server; a script drives it.
type peer struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

// fake starts a server on 127.0.0.1:0 that runs script on the first connection it accepts
// and returns its address. The cleanup closes the listener and waits for the script, whose
// connection gives up after 10 seconds.
func fake(t *testing.T, script func(p *peer)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		script(&peer{t: t, conn: conn, r: bufio.NewReader(conn)})
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// send writes each line with CRLF.
func (p *peer) send(lines ...string) {
	for _, l := range lines {
		p.raw(l + "\r\n")
	}
}

// raw writes s as it is.
func (p *peer) raw(s string) {
	if _, err := p.conn.Write([]byte(s)); err != nil {
		p.t.Errorf("fake server: write: %v", err)
	}
}

// line reads one line from the client without its CRLF; "" on error.
func (p *peer) line() string {
	l, err := p.r.ReadString('\n')
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(strings.TrimSuffix(l, "\n"), "\r")
}

// expect reads a line and reports a mismatch with want.
func (p *peer) expect(want string) {
	p.t.Helper()
	if got := p.line(); got != want {
		p.t.Errorf("fake server: got command %q, want %q", got, want)
	}
}

// loggedIn runs a greeting and a USER/PASS login.
func (p *peer) loggedIn() {
	p.send("+OK fake ready")
	p.expect("USER u")
	p.send("+OK")
	p.expect("PASS p")
	p.send("+OK logged in")
}

// startTLS upgrades the server side with a certificate for 127.0.0.1.
func (p *peer) startTLS(cert tls.Certificate) bool {
	tc := tls.Server(p.conn, &tls.Config{Certificates: []tls.Certificate{cert}})
	if err := tc.Handshake(); err != nil {
		return false
	}
	p.conn = tc
	p.r = bufio.NewReader(tc)
	return true
}

// testCert makes a self-signed certificate for 127.0.0.1 and a pool that trusts it.
func testCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pop3 test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, pool
}
