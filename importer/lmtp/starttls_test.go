package lmtp

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer"
	"github.com/mxdrop/mxdrop/internal/dovecottest"
)

// TestDovecotLMTPStartTLS delivers over Dovecot's LMTP on TCP with tls: starttls. With
// ca_file naming the server's certificate the message is delivered; without it the
// handshake fails on the certificate (so TLS was really negotiated), the delivery is a
// temporary error, and nothing reaches the mailbox.
func TestDovecotLMTPStartTLS(t *testing.T) {
	srv := startAliceLMTP(t)
	deliver := func(caFile, id string) (importer.Result, error) {
		t.Helper()
		im := newImporter(t, configs.LMTP{Address: srv.LMTPAddr(), TLS: "starttls", CAFile: caFile, Connections: 1,
			Timeout: configs.Duration(10 * time.Second)})
		raw := fmt.Sprintf("Return-Path: <sender@example.net>\r\nX-Original-To: alice@example.com\r\nFrom: sender@example.net\r\n"+
			"To: alice@example.com\r\nSubject: over TLS\r\nMessage-ID: <%s@example.net>\r\n\r\nhello\r\n", id)
		return im.Import(context.Background(), message(id, []byte(raw)))
	}

	res, err := deliver("", "untrusted")
	var unknown x509.UnknownAuthorityError
	if err == nil || !errors.As(err, &unknown) {
		t.Fatalf("without ca_file: %+v, %v: want the server's certificate refused", res, err)
	}
	if n := srv.Count(t, "alice", "INBOX"); n != 0 {
		t.Fatalf("INBOX holds %d messages after a refused handshake", n)
	}

	res, err = deliver(srv.CAFile(), "trusted")
	if err != nil || res.Outcome != importer.OutcomeDelivered {
		t.Fatalf("with ca_file: %+v, %v", res, err)
	}
	if n := srv.Count(t, "alice", "INBOX"); n != 1 {
		t.Fatalf("INBOX holds %d messages, want 1", n)
	}
}

// startAliceLMTP starts a Dovecot with LMTP (unix socket and TCP) and one user, alice.
func startAliceLMTP(t *testing.T) *dovecottest.Server {
	return dovecottest.Start(t, dovecottest.Options{
		Users: map[string]string{"alice": "pw"},
		LMTP:  true,
		ExtraConfig: `auth_username_format = %Ln
`,
	})
}
