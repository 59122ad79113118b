package pollers

import (
	"bufio"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer"
)

func TestArrivedFromHeader(t *testing.T) {
	parse := func(s string) *importer.Header {
		t.Helper()
		h, err := importer.ReadHeader(bufio.NewReader(strings.NewReader(s)))
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	for _, tc := range []struct {
		header string
		want   time.Time
	}{
		{"Received: from a by b;\r\n\tTue, 4 Mar 2025 08:09:10 +0100\r\nReceived: from c by a; Mon, 3 Mar 2025 00:00:00 +0000\r\nDate: Sat, 1 Mar 2025 10:00:00 +0000\r\n\r\n",
			time.Date(2025, 3, 4, 7, 9, 10, 0, time.UTC)},
		{"Received: from a by b (no date)\r\nDate: Sat, 1 Mar 2025 10:00:00 +0000\r\n\r\n", time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)},
		{"Subject: none\r\n\r\n", time.Unix(0, 0)},
	} {
		if got := arrivedFromHeader(parse(tc.header)); !got.Equal(tc.want) {
			t.Errorf("%q: %v, want %v", tc.header, got, tc.want)
		}
	}
	if got := arrivedFromHeader(nil); !got.Equal(time.Unix(0, 0)) {
		t.Errorf("nil header: %v", got)
	}
}

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"INBOX/42":       "INBOX_42",
		"pop3/00000001a": "pop3_00000001a",
		"../x":           "_._x",
		"Ünïcode":        "__n__code",
	} {
		if got := sanitize(in); got != want {
			t.Errorf("sanitize(%q) = %q, want %q", in, got, want)
		}
	}
}

// The xoauth2 hook: whatever SASL client it returns authenticates the session.
func TestXOAUTH2Hook(t *testing.T) {
	srv := newMemIMAP(t, nil)
	e := newEnv(t, "alice@example.com")
	srv.append(t, "INBOX", message("x1@x"))
	pc := srv.pollerConfig(func(pc *configs.Poller) {
		pc.Username, pc.Auth.Method = "user", "xoauth2"
	})
	// Without a hook: a clear login error, not a crash.
	p := e.poller(pc)
	var le *LoginError
	if _, err := p.Cycle(context.Background()); !errors.As(err, &le) || !strings.Contains(err.Error(), "xoauth2") {
		t.Fatalf("without a hook: %v", err)
	}
	calls := 0
	deps := e.deps()
	deps.XOAUTH2 = func(ctx context.Context, p configs.Poller) (sasl.Client, error) {
		calls++
		// The memory server has no XOAUTH2; PLAIN stands in for the token's mechanism.
		return sasl.NewPlainClient("", p.Username, "secret"), nil
	}
	pc.Name, pc.TLS, pc.Timeout = "oauth", "none", configs.Duration(10*time.Second)
	p2, err := New(e.cfg, pc, deps)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := p2.Cycle(context.Background()); err != nil || st.Delivered != 1 || calls != 1 {
		t.Fatalf("with a hook: %+v, %v, %d calls", st, err, calls)
	}
}

func TestNewRejects(t *testing.T) {
	e := newEnv(t, "alice@example.com")
	base := configs.Poller{Name: "p", Protocol: "imap", Host: "h", Port: 1, TLS: "none", Mode: "single", DeliverTo: "alice@example.com"}
	for name, mod := range map[string]func(*configs.Poller){
		"protocol":   func(p *configs.Poller) { p.Protocol = "smtp" },
		"tls":        func(p *configs.Poller) { p.TLS = "maybe" },
		"keep":       func(p *configs.Poller) { p.Keep = "sometimes" },
		"keep_days":  func(p *configs.Poller) { p.Keep = "days" },
		"deliver_to": func(p *configs.Poller) { p.DeliverTo = "nobody@example.com" },
		"domains":    func(p *configs.Poller) { p.Mode, p.DeliverTo = "collection", "" },
		"name":       func(p *configs.Poller) { p.Name = "../x" },
		"ca_file":    func(p *configs.Poller) { p.CAFile = "/nonexistent/ca.pem" },
	} {
		pc := base
		mod(&pc)
		if _, err := New(e.cfg, pc, e.deps()); err == nil {
			t.Errorf("%s: New accepted %+v", name, pc)
		}
	}
	if _, err := New(e.cfg, base, e.deps()); err != nil {
		t.Fatalf("valid poller rejected: %v", err)
	}
}
