package importer

import (
	"strings"
	"testing"

	"github.com/mxdrop/mxdrop/configs"
)

func routeAccounts() []configs.Account {
	return []configs.Account{
		{Address: "alice@example.com", Aliases: []string{"a.smith@example.com", "Info@Example.COM"}, Maildir: "/m/alice"},
		{Address: "bob@example.com", Maildir: "/m/bob"},
		{Address: "postmaster@example.com", Maildir: "/m/postmaster", CatchAll: true},
		{Address: "info@bücher.example", Aliases: []string{"kontakt@xn--bcher-kva.example"}, Maildir: "/m/buecher"},
		{Address: "eve@sub.example.net", Maildir: "/m/eve"},
		{Address: "Zoe@XN--BCHER-KVA.example", Maildir: "/m/zoe"},
	}
}

type routeCase struct {
	rcpt    string
	guessed bool
	account string // "" for no delivery
	rule    string
	status  string // enhanced status of a failure, "" for none
	ignored bool
}

func runRoutes(t *testing.T, r *Router, cases []routeCase) {
	t.Helper()
	for _, tc := range cases {
		name := tc.rcpt
		if tc.guessed {
			name += " (guessed)"
		}
		t.Run(name, func(t *testing.T) {
			got := r.Route(tc.rcpt, tc.guessed)
			if got.Recipient != tc.rcpt {
				t.Errorf("Recipient = %q, want it as it arrived", got.Recipient)
			}
			if got.Account != tc.account || got.Rule != tc.rule || got.Status.Enhanced != tc.status || got.Ignored != tc.ignored {
				t.Errorf("Route = {account %q rule %q status %q ignored %v}, want {%q %q %q %v}",
					got.Account, got.Rule, got.Status.Enhanced, got.Ignored, tc.account, tc.rule, tc.status, tc.ignored)
			}
			if tc.status != "" && (got.Status.Code < 500 || got.Status.Code > 599 || got.Status.Text == "") {
				t.Errorf("failure status %v is not a complete 5xx", got.Status)
			}
			if tc.status == "" && !got.Status.IsZero() {
				t.Errorf("status %v on a recipient that did not fail", got.Status)
			}
		})
	}
}

func newRouter(t *testing.T, domains, mailboxes []string, deliverTo, unknownTo string) *Router {
	t.Helper()
	r, err := NewRouter(routeAccounts(), domains, mailboxes, deliverTo, unknownTo)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRouteRules(t *testing.T) {
	r := newRouter(t, []string{"example.com", "bücher.example", "*.example.net"}, nil, "", "")
	runRoutes(t, r, []routeCase{
		{rcpt: "alice@example.com", account: "alice@example.com", rule: "address"},
		{rcpt: "ALICE@EXAMPLE.COM", account: "alice@example.com", rule: "address"},
		{rcpt: "Alice@Example.Com", account: "alice@example.com", rule: "address"},
		{rcpt: "<alice@example.com>", account: "alice@example.com", rule: "address"},
		{rcpt: " alice@example.com. ", account: "alice@example.com", rule: "address"},
		{rcpt: "@relay.example.org:alice@example.com", account: "alice@example.com", rule: "address"},
		{rcpt: "a.smith@example.com", account: "alice@example.com", rule: "alias"},
		{rcpt: "INFO@example.com", account: "alice@example.com", rule: "alias"},
		{rcpt: "alice+news@example.com", account: "alice@example.com", rule: "tag"},
		{rcpt: "Alice+News@Example.com", account: "alice@example.com", rule: "tag"},
		{rcpt: "a.smith+lists@example.com", account: "alice@example.com", rule: "tag"},
		{rcpt: "alice+a+b@example.com", account: "alice@example.com", rule: "tag"},
		{rcpt: "+alice@example.com", account: "postmaster@example.com", rule: "catch_all"},
		{rcpt: "nobody@example.com", account: "postmaster@example.com", rule: "catch_all"},
		{rcpt: "nobody+tag@example.com", account: "postmaster@example.com", rule: "catch_all"},
		{rcpt: "postmaster@example.com", account: "postmaster@example.com", rule: "address"},
		// IDN: the Unicode and the punycode form are one domain, whichever the config uses.
		{rcpt: "info@bücher.example", account: "info@xn--bcher-kva.example", rule: "address"},
		{rcpt: "info@xn--bcher-kva.example", account: "info@xn--bcher-kva.example", rule: "address"},
		{rcpt: "INFO@BÜCHER.EXAMPLE", account: "info@xn--bcher-kva.example", rule: "address"},
		{rcpt: "kontakt@bücher.example", account: "info@xn--bcher-kva.example", rule: "alias"},
		{rcpt: "zoe@bücher.example", account: "zoe@xn--bcher-kva.example", rule: "address"},
		{rcpt: "nobody@bücher.example", rule: "unknown", status: "5.1.1"},
		// Wildcard: subdomains at any depth, not the apex, not a look-alike.
		{rcpt: "eve@sub.example.net", account: "eve@sub.example.net", rule: "address"},
		{rcpt: "EVE@SUB.EXAMPLE.NET", account: "eve@sub.example.net", rule: "address"},
		{rcpt: "x@deep.sub.example.net", rule: "unknown", status: "5.1.1"},
		{rcpt: "x@example.net", rule: "not_accepted", status: "5.1.2"},
		{rcpt: "x@badexample.net", rule: "not_accepted", status: "5.1.2"},
		// An exact domain does not accept its subdomains.
		{rcpt: "alice@sub.example.com", rule: "not_accepted", status: "5.1.2"},
		// Outside the accepted domains: a real envelope recipient fails, a guessed one is
		// not ours.
		{rcpt: "someone@elsewhere.example", rule: "not_accepted", status: "5.1.2"},
		{rcpt: "someone@elsewhere.example", guessed: true, rule: "not_accepted", ignored: true},
		// Guessed recipients inside the accepted domains are routed like any other.
		{rcpt: "alice@example.com", guessed: true, account: "alice@example.com", rule: "address"},
		{rcpt: "nobody@bücher.example", guessed: true, rule: "unknown", status: "5.1.1"},
		// Not an address.
		{rcpt: "not-an-address", rule: "invalid", status: "5.1.3"},
		{rcpt: "@example.com", rule: "invalid", status: "5.1.3"},
		{rcpt: "alice@", rule: "invalid", status: "5.1.3"},
		{rcpt: "", rule: "invalid", status: "5.1.3"},
		{rcpt: "not-an-address", guessed: true, rule: "invalid", ignored: true},
	})
}

func TestRouteAcceptAll(t *testing.T) {
	r := newRouter(t, []string{"."}, nil, "", "")
	runRoutes(t, r, []routeCase{
		{rcpt: "alice@example.com", account: "alice@example.com", rule: "address"},
		{rcpt: "x@anything.example.org", rule: "unknown", status: "5.1.1"},
		{rcpt: "x@anything.example.org", guessed: true, rule: "unknown", status: "5.1.1"},
		{rcpt: "nobody@example.com", account: "postmaster@example.com", rule: "catch_all"},
	})
}

func TestRouteWildcardOnly(t *testing.T) {
	r := newRouter(t, []string{"*.Example.COM"}, nil, "", "")
	runRoutes(t, r, []routeCase{
		{rcpt: "alice@example.com", rule: "not_accepted", status: "5.1.2"},
		{rcpt: "x@mail.example.com", rule: "unknown", status: "5.1.1"},
	})
	r = newRouter(t, []string{"*.example.com", "example.com"}, nil, "", "")
	runRoutes(t, r, []routeCase{
		{rcpt: "alice@example.com", account: "alice@example.com", rule: "address"},
		{rcpt: "x@mail.example.com", rule: "unknown", status: "5.1.1"},
	})
	r = newRouter(t, []string{"*.xn--bcher-kva.example"}, nil, "", "")
	runRoutes(t, r, []routeCase{
		{rcpt: "x@shop.bücher.example", rule: "unknown", status: "5.1.1"},
		{rcpt: "info@bücher.example", rule: "not_accepted", status: "5.1.2"},
	})
}

func TestRouteNoDomains(t *testing.T) {
	r := newRouter(t, nil, nil, "", "")
	runRoutes(t, r, []routeCase{
		{rcpt: "alice@example.com", rule: "not_accepted", status: "5.1.2"},
	})
}

func TestRouteMailboxes(t *testing.T) {
	// Only alice is served: bob is unknown here, and the unserved postmaster's
	// catch-all catches nothing.
	r := newRouter(t, []string{"example.com"}, []string{"ALICE@example.com"}, "", "")
	runRoutes(t, r, []routeCase{
		{rcpt: "alice@example.com", account: "alice@example.com", rule: "address"},
		{rcpt: "a.smith@example.com", account: "alice@example.com", rule: "alias"},
		{rcpt: "alice+x@example.com", account: "alice@example.com", rule: "tag"},
		{rcpt: "bob@example.com", rule: "unknown", status: "5.1.1"},
		{rcpt: "postmaster@example.com", rule: "unknown", status: "5.1.1"},
		{rcpt: "nobody@example.com", rule: "unknown", status: "5.1.1"},
	})
	// Serving the catch-all account makes it catch again.
	r = newRouter(t, []string{"example.com"}, []string{"alice@example.com", "postmaster@example.com"}, "", "")
	runRoutes(t, r, []routeCase{
		{rcpt: "bob@example.com", account: "postmaster@example.com", rule: "catch_all"},
	})
}

func TestRouteDeliverTo(t *testing.T) {
	r := newRouter(t, []string{"example.com"}, nil, "Bob@Example.com", "")
	runRoutes(t, r, []routeCase{
		{rcpt: "alice@example.com", account: "bob@example.com", rule: "deliver_to"},
		{rcpt: "someone@elsewhere.example", account: "bob@example.com", rule: "deliver_to"},
		{rcpt: "someone@elsewhere.example", guessed: true, account: "bob@example.com", rule: "deliver_to"},
		{rcpt: "not-an-address", account: "bob@example.com", rule: "deliver_to"},
	})
}

func TestRouteUnknownRecipients(t *testing.T) {
	r := newRouter(t, []string{"example.com", "bücher.example"}, nil, "", "bob@example.com")
	runRoutes(t, r, []routeCase{
		{rcpt: "alice@example.com", account: "alice@example.com", rule: "address"},
		{rcpt: "nobody@bücher.example", account: "bob@example.com", rule: "unknown_recipients"},
		// The domain's catch-all comes first.
		{rcpt: "nobody@example.com", account: "postmaster@example.com", rule: "catch_all"},
		// Not accepted stays not accepted.
		{rcpt: "x@elsewhere.example", rule: "not_accepted", status: "5.1.2"},
	})
}

func TestNewRouterErrors(t *testing.T) {
	tests := []struct {
		name                 string
		accounts             []configs.Account
		mailboxes            []string
		deliverTo, unknownTo string
		want                 string
	}{
		{"deliver_to names no account", routeAccounts(), nil, "ghost@example.com", "", "ghost@example.com"},
		{"unknown_recipients names no account", routeAccounts(), nil, "", "ghost@example.com", "ghost@example.com"},
		{"unknown_recipients not an address", routeAccounts(), nil, "", "ghost", "ghost"},
		{"mailbox not an address", routeAccounts(), []string{"alice"}, "", "", "alice"},
		{"account not an address", []configs.Account{{Address: "alice", Maildir: "/m"}}, nil, "", "", "alice"},
		{"alias not an address", []configs.Account{{Address: "a@example.com", Aliases: []string{"@x"}, Maildir: "/m"}}, nil, "", "", "@x"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewRouter(tc.accounts, []string{"."}, tc.mailboxes, tc.deliverTo, tc.unknownTo)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one naming %q", err, tc.want)
			}
		})
	}
}

func TestNormalizeAddress(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"alice@example.com", "alice@example.com", true},
		{"Alice@Example.COM", "alice@example.com", true},
		{"<Alice@Example.COM>", "alice@example.com", true},
		{"  alice@example.com  ", "alice@example.com", true},
		{"alice@example.com.", "alice@example.com", true},
		{"@a.example,@b.example:alice@example.com", "alice@example.com", true},
		{"<@a.example:alice@example.com>", "alice@example.com", true},
		{"info@bücher.example", "info@xn--bcher-kva.example", true},
		{"info@BÜCHER.example", "info@xn--bcher-kva.example", true},
		{"info@XN--BCHER-KVA.EXAMPLE", "info@xn--bcher-kva.example", true},
		{"jörg@example.de", "jörg@example.de", true},
		{`"a@b"@example.com`, `"a@b"@example.com`, true},
		{"user@[192.0.2.1]", "user@[192.0.2.1]", true},
		{"alice", "", false},
		{"@example.com", "", false},
		{"alice@", "", false},
		{"alice@.", "", false},
		{"", "", false},
		{"<>", "", false},
		{"<<a@example.com>>", "", false},
		{"a b@example.com", "", false},
		{"a<b@example.com", "", false},
		{"a@b@example.com", "", false},
		{`"a b"@example.com`, `"a b"@example.com`, true},
		{"a@exa mple.com", "", false},
		{"a@example..com", "", false},
		{"a@[192.0.2.1", "", false},
		{"a..b@example.com", "a..b@example.com", true},
	}
	for _, tc := range tests {
		got, ok := NormalizeAddress(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("NormalizeAddress(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestNormalizeDomain(t *testing.T) {
	for in, want := range map[string]string{
		"Example.COM":           "example.com",
		"example.com.":          "example.com",
		"bücher.example":        "xn--bcher-kva.example",
		"xn--bcher-kva.example": "xn--bcher-kva.example",
		"ＥＸＡＭＰＬＥ.com":           "example.com", // full-width letters map to ASCII (IDNA mapping)
		"under_score.example":   "under_score.example",
	} {
		if got := NormalizeDomain(in); got != want {
			t.Errorf("NormalizeDomain(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRouterAccepts(t *testing.T) {
	r := newRouter(t, []string{"example.com", "*.example.net"}, nil, "", "")
	for d, want := range map[string]bool{
		"example.com": true, "sub.example.com": false, "example.net": false,
		"a.example.net": true, "a.b.example.net": true, "xexample.net": false, "example.org": false,
	} {
		if got := r.Accepts(d); got != want {
			t.Errorf("Accepts(%q) = %v, want %v", d, got, want)
		}
	}
}

// TestRouteServer: with a mail server as the target, accounts still map their aliases,
// +tag and catch-all to their address, every other recipient of an accepted domain
// passes as it is, and deliver_to may be any address.
func TestRouteServer(t *testing.T) {
	t.Parallel()
	accounts := []configs.Account{
		{Address: "alice@example.com", Aliases: []string{"a.smith@example.com"}},
		{Address: "postmaster@example.org", CatchAll: true},
	}
	r, err := buildRouter(accounts, []string{"example.com", "example.org"}, nil, "", "", true)
	if err != nil {
		t.Fatal(err)
	}
	for rcpt, want := range map[string][2]string{
		"A.Smith@example.com":    {"alice@example.com", "alias"},
		"alice+news@example.com": {"alice@example.com", "tag"},
		"who@example.org":        {"postmaster@example.org", "catch_all"},
		"Bob+x@Example.com":      {"bob+x@example.com", "server"},
		"x@elsewhere.test":       {"", "not_accepted"},
	} {
		rt := r.Route(rcpt, false)
		if rt.Account != want[0] || rt.Rule != want[1] {
			t.Errorf("%s: %q by %s, want %q by %s", rcpt, rt.Account, rt.Rule, want[0], want[1])
		}
	}
	if _, err := buildRouter(accounts, []string{"."}, nil, "carol@example.net", "", false); err == nil {
		t.Error("maildir delivery: deliver_to naming no account accepted")
	}
	r, err = buildRouter(accounts, []string{"."}, nil, "Carol@example.net", "", true)
	if err != nil || r.Route("x@y.test", false).Account != "carol@example.net" {
		t.Errorf("server delivery: deliver_to carol@example.net: %v", err)
	}
}
