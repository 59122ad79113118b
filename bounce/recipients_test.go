package bounce

import (
	"bytes"
	"strings"
	"testing"

	"github.com/mxdrop/mxdrop/configs"
)

func recipientConfig() *configs.Config {
	off := false
	return &configs.Config{
		Accounts: []configs.Account{
			{Address: "Alice@Example.com", Aliases: []string{"a.smith@example.com", "alice@example.net"}},
			{Address: "postmaster@example.com", CatchAll: true},
			{Address: "bob@example.org"},
			{Address: "carol@sub.example.org", CatchAll: true},
			{Address: "info@bücher.example"},
			{Address: "dave@hidden.example"},
		},
		Connectors: []configs.Connector{
			// Accepts example.com and example.net; every account it can route.
			{Name: "mx", Subdomains: []string{"example.com", "example.net", "bücher.example"}},
			// Only bob; any subdomain of example.org (not example.org itself).
			{Name: "org", Subdomains: []string{"example.org", "*.example.org"}, Mailboxes: []string{"bob@example.org"}},
			// Every domain, but only carol: her catch-all domain.
			{Name: "all", Subdomains: []string{"."}, Mailboxes: []string{"carol@sub.example.org"}},
			// Inactive: dave is not served.
			{Name: "old", Active: &off, Subdomains: []string{"."}},
		},
	}
}

func TestWriteRecipientMap(t *testing.T) {
	for _, tc := range []struct {
		format string
		want   []string
	}{
		{FormatPostfix, []string{
			"@example.com OK",
			"@sub.example.org OK",
			"a.smith@example.com OK",
			"alice@example.com OK",
			"alice@example.net OK",
			"bob@example.org OK",
			"carol@sub.example.org OK",
			"info@bücher.example OK",
			"info@xn--bcher-kva.example OK",
			"postmaster@example.com OK",
		}},
		{FormatExim, []string{
			"*@example.com",
			"*@sub.example.org",
			"a.smith@example.com",
			"alice@example.com",
			"alice@example.net",
			"bob@example.org",
			"carol@sub.example.org",
			"info@bücher.example",
			"info@xn--bcher-kva.example",
			"postmaster@example.com",
		}},
		{FormatPlain, []string{
			"@example.com",
			"@sub.example.org",
			"a.smith@example.com",
			"alice@example.com",
			"alice@example.net",
			"bob@example.org",
			"carol@sub.example.org",
			"info@bücher.example",
			"info@xn--bcher-kva.example",
			"postmaster@example.com",
		}},
	} {
		t.Run(tc.format, func(t *testing.T) {
			var b bytes.Buffer
			if err := WriteRecipientMap(&b, recipientConfig(), tc.format); err != nil {
				t.Fatal(err)
			}
			want := strings.Join(tc.want, "\n") + "\n"
			if b.String() != want {
				t.Errorf("map:\n%s\nwant:\n%s", b.String(), want)
			}
			var again bytes.Buffer
			WriteRecipientMap(&again, recipientConfig(), tc.format)
			if again.String() != b.String() {
				t.Error("output is not deterministic")
			}
		})
	}
}

func TestWriteRecipientMapUnknownRecipients(t *testing.T) {
	cfg := &configs.Config{
		Accounts: []configs.Account{{Address: "all@example.com"}},
		Connectors: []configs.Connector{
			{Name: "mx", Subdomains: []string{"example.com", "*.example.net"}, UnknownRecipients: "all@example.com"},
		},
	}
	var b bytes.Buffer
	if err := WriteRecipientMap(&b, cfg, FormatExim); err != nil {
		t.Fatal(err)
	}
	if want := "*@*.example.net\n*@example.com\nall@example.com\n"; b.String() != want {
		t.Errorf("exim map:\n%s\nwant:\n%s", b.String(), want)
	}
	for _, format := range []string{FormatPostfix, FormatPlain} {
		if err := WriteRecipientMap(&bytes.Buffer{}, cfg, format); err == nil || !strings.Contains(err.Error(), "example.net") {
			t.Errorf("%s map of a subdomain wildcard = %v", format, err)
		}
	}
	cfg.Connectors[0].Subdomains = []string{"."}
	for _, format := range []string{FormatPostfix, FormatExim, FormatPlain} {
		if err := WriteRecipientMap(&bytes.Buffer{}, cfg, format); err == nil || !strings.Contains(err.Error(), "mx") {
			t.Errorf("%s map of a connector that takes everything = %v", format, err)
		}
	}
	// The embedded default's shape, but the connector switched off: an empty map.
	off := false
	cfg.Connectors[0].Active = &off
	b.Reset()
	if err := WriteRecipientMap(&b, cfg, FormatPostfix); err != nil || b.Len() != 0 {
		t.Errorf("map without active connectors = %q, %v", b.String(), err)
	}
}

func TestWriteRecipientMapErrors(t *testing.T) {
	if err := WriteRecipientMap(&bytes.Buffer{}, recipientConfig(), "sendmail"); err == nil {
		t.Error("unknown format accepted")
	}
	cfg := recipientConfig()
	cfg.Accounts[0].Aliases = append(cfg.Accounts[0].Aliases, "not an address")
	if err := WriteRecipientMap(&bytes.Buffer{}, cfg, FormatPostfix); err == nil {
		t.Error("bad alias accepted")
	}
	cfg = recipientConfig()
	cfg.Accounts[0].Aliases = append(cfg.Accounts[0].Aliases, "a b@example.com")
	if err := WriteRecipientMap(&bytes.Buffer{}, cfg, FormatPostfix); err == nil {
		t.Error("alias with a space accepted")
	}
	cfg = recipientConfig()
	cfg.Accounts[0].Aliases = append(cfg.Accounts[0].Aliases, "!root@example.com")
	if err := WriteRecipientMap(&bytes.Buffer{}, cfg, FormatExim); err == nil {
		t.Error("an exim negation accepted as an address")
	}
}
