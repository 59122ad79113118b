package importer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer/durable"
	"github.com/mxdrop/mxdrop/internal/testenv"
)

// testSetup is a set of accounts with Maildirs under a temporary root.
type testSetup struct {
	root     string
	accounts []configs.Account
}

func newSetup(t testing.TB) *testSetup {
	t.Helper()
	root := t.TempDir()
	s := &testSetup{root: root}
	s.accounts = []configs.Account{
		account(root, "alice@example.com", "a.smith@example.com"),
		account(root, "bob@example.com"),
		account(root, "carol@example.com"),
		account(root, "dave@example.com"),
		account(root, "erin@example.com"),
		account(root, "ops@example.com"),
		account(root, "oncall@example.com"),
		account(root, "info@bücher.example"),
		account(root, "frank@example.org"),
	}
	pm := account(root, "postmaster@example.com")
	pm.CatchAll = true
	s.accounts = append(s.accounts, pm)
	return s
}

// maildir returns the Maildir of the account whose local part is local.
func (s *testSetup) maildir(local string) string { return filepath.Join(s.root, "mail", local) }

func (s *testSetup) importer(t testing.TB, mod func(*Options)) *Importer {
	t.Helper()
	opts := Options{Accounts: s.accounts, Domains: []string{"example.com", "example.org", "bücher.example"}}
	if mod != nil {
		mod(&opts)
	}
	return newImporter(t, opts)
}

// dropFile writes b as a drop folder file and returns its Message.
func (s *testSetup) dropFile(t testing.TB, name string, b []byte) (Message, string) {
	t.Helper()
	dir := filepath.Join(s.root, "drop")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return fileMessage(t, p), p
}

// withoutFields removes the header fields (with their continuation lines) whose raw
// text starts with one of prefixes, and a leading mbox From line.
func withoutFields(in []byte, prefixes ...string) []byte {
	h, err := ReadHeader(bufioReader(in))
	if err != nil {
		panic(err)
	}
	var out []byte
	for _, f := range h.Fields {
		drop := false
		for _, p := range prefixes {
			if bytes.HasPrefix(f.Raw, []byte(p)) {
				drop = true
			}
		}
		if !drop {
			out = append(out, f.Raw...)
		}
	}
	out = append(out, h.Sep...)
	return append(out, in[h.Size:]...)
}

// sameBytes fails with a readable diff position when got != want.
func sameBytes(t testing.TB, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	lo := max(i-120, 0)
	t.Fatalf("copy differs at byte %d (got %d bytes, want %d)\n got: %q\nwant: %q",
		i, len(got), len(want), got[lo:min(i+80, len(got))], want[lo:min(i+80, len(want))])
}

func TestImportCopies(t *testing.T) {
	type want struct {
		local string // Maildir
		copy  func(in []byte) []byte
	}
	tests := []struct {
		name     string
		in       string // message, or "@fixture"
		envelope *Envelope
		opts     func(*Options)
		want     []want
		outcome  Outcome
		failed   []string
		ignored  []string
	}{
		{
			name: "postfix virtual delivery: identical bytes",
			in:   "@postfix-virtual.eml",
			want: []want{{"alice", func(in []byte) []byte { return in }}},
		},
		{
			name: "postfix alias: Delivered-To naming the account is kept, not duplicated",
			in: lf("Return-Path: <bob@example.org>",
				"X-Original-To: a.smith@example.com",
				"Delivered-To: alice@example.com",
				"Received: from x by mx.example.com (Postfix) with ESMTP id 1",
				"To: a.smith@example.com", "Subject: alias", "", "body", ""),
			want: []want{{"alice", func(in []byte) []byte { return in }}},
		},
		{
			name: "postfix pipe: mbox From line dropped, else identical",
			in:   "@postfix-pipe-mbox.eml",
			want: []want{{"carol", func(in []byte) []byte { return withoutFields(in) }}},
		},
		{
			name: "IDN recipient: Unicode and punycode fields are the account's own",
			in:   "@idn.eml",
			want: []want{{"info", func(in []byte) []byte { return in }}},
		},
		{
			name: "null sender",
			in:   "@null-sender-dsn.eml",
			want: []want{{"alice", func(in []byte) []byte { return in }}},
		},
		{
			name: "forged envelope fields below Received stay, and deliver nothing",
			in:   "@forged-original-to.eml",
			want: []want{{"alice", func(in []byte) []byte { return in }}},
		},
		{
			name: "exim Envelope-to with several recipients is removed from every copy",
			in:   "@exim-envelope-to.eml",
			opts: func(o *Options) { o.Domains = []string{"example.com"} },
			want: []want{
				{"alice", func(in []byte) []byte {
					return append([]byte("Delivered-To: alice@example.com\n"), withoutFields(in, "Envelope-to:")...)
				}},
				{"bob", func(in []byte) []byte {
					return append([]byte("Delivered-To: bob@example.com\n"), withoutFields(in, "Envelope-to:")...)
				}},
				{"postmaster", func(in []byte) []byte { // secret-bcc@ via the catch-all
					return append([]byte("Delivered-To: secret-bcc@example.com\n"), withoutFields(in, "Envelope-to:")...)
				}},
			},
		},
		{
			name: "exim appendfile single recipient: Envelope-to kept, From line dropped",
			in:   "@exim-mbox-single.eml",
			want: []want{{"dave", func(in []byte) []byte {
				return append([]byte("Delivered-To: dave@example.com\n"), withoutFields(in)...)
			}}},
		},
		{
			name: "IIS pickup: x-sender/x-receiver removed, Return-Path prepended, CRLF kept",
			in:   "@iis-pickup-crlf.eml",
			want: []want{
				{"alice", func(in []byte) []byte {
					return append([]byte("Return-Path: <bob@example.org>\r\nDelivered-To: alice@example.com\r\n"), withoutFields(in, "x-")...)
				}},
				{"bob", func(in []byte) []byte {
					return append([]byte("Return-Path: <bob@example.org>\r\nDelivered-To: bob@example.com\r\n"), withoutFields(in, "x-")...)
				}},
				{"postmaster", func(in []byte) []byte {
					return append([]byte("Return-Path: <bob@example.org>\r\nDelivered-To: hidden-bcc@example.com\r\n"), withoutFields(in, "x-")...)
				}},
			},
		},
		{
			name: "System.Net.Mail pickup",
			in:   "@netmail-pickup-crlf.eml",
			want: []want{
				{"ops", func(in []byte) []byte {
					return append([]byte("Return-Path: <app@example.com>\r\nDelivered-To: ops@example.com\r\n"), withoutFields(in, "X-Sender:", "X-Receiver:")...)
				}},
				{"oncall", func(in []byte) []byte {
					return append([]byte("Return-Path: <app@example.com>\r\nDelivered-To: oncall@example.com\r\n"), withoutFields(in, "X-Sender:", "X-Receiver:")...)
				}},
			},
		},
		{
			name: "one copy per account: address, alias, tag and case variants",
			in: lf("Return-path: <bob@example.org>",
				"Envelope-to: alice@example.com, a.smith@example.com, alice+tag@example.com, ALICE@EXAMPLE.COM, bob@example.com",
				"Received: from x by mx.example.com with esmtp (Exim 4.97) id 1",
				"Subject: many addresses", "", "body", ""),
			want: []want{
				{"alice", func(in []byte) []byte {
					return append([]byte("Delivered-To: alice@example.com\n"), withoutFields(in, "Envelope-to:")...)
				}},
				{"bob", func(in []byte) []byte {
					return append([]byte("Delivered-To: bob@example.com\n"), withoutFields(in, "Envelope-to:")...)
				}},
			},
		},
		{
			name: "Envelope-to naming only this account's addresses is kept",
			in: lf("Return-path: <bob@example.org>",
				"Envelope-to: alice@example.com, a.smith@example.com",
				"Received: from x by mx.example.com with esmtp (Exim 4.97) id 1",
				"Subject: own addresses", "", "body", ""),
			want: []want{{"alice", func(in []byte) []byte {
				return append([]byte("Delivered-To: alice@example.com\n"), in...)
			}}},
		},
		{
			name: "each copy carries only its own Delivered-To",
			in: lf("Return-Path: <bob@example.org>",
				"Delivered-To: alice@example.com",
				"Delivered-To: bob@example.com",
				"Received: from x by mx.example.com (Postfix) with ESMTP id 1",
				"Subject: two delivered-to", "", "body", ""),
			envelope: &Envelope{Sender: "bob@example.org", SenderKnown: true, Recipients: []string{"alice@example.com", "bob@example.com"}},
			want: []want{
				{"alice", func(in []byte) []byte { return withoutFields(in, "Delivered-To: bob") }},
				{"bob", func(in []byte) []byte { return withoutFields(in, "Delivered-To: alice") }},
			},
		},
		{
			name: "Return-Path prepended from the mbox From line",
			in:   lf("From bob@example.org  Tue Jan  2 10:15:02 2024", "To: alice@example.com", "Subject: x", "", "b", ""),
			want: []want{{"alice", func(in []byte) []byte {
				return append([]byte("Return-Path: <bob@example.org>\nDelivered-To: alice@example.com\n"), withoutFields(in)...)
			}}},
		},
		{
			name:     "a Return-Path that is not the envelope sender gets one on top",
			in:       lf("Return-Path: <old@example.org>", "Delivered-To: alice@example.com", "Subject: x", "", "b"),
			envelope: &Envelope{Sender: "new@example.org", SenderKnown: true, Recipients: []string{"alice@example.com"}},
			want: []want{{"alice", func(in []byte) []byte {
				return append([]byte("Return-Path: <new@example.org>\n"), in...)
			}}},
		},
		{
			name:     "the source's null sender",
			in:       lf("Subject: x", "", "b"),
			envelope: &Envelope{Sender: "", SenderKnown: true, Recipients: []string{"alice@example.com"}},
			want: []want{{"alice", func(in []byte) []byte {
				return append([]byte("Return-Path: <>\nDelivered-To: alice@example.com\n"), in...)
			}}},
		},
		{
			name: "guessed recipients: outside the accepted domains ignored",
			in:   "@guessed-to-cc.eml",
			want: []want{
				{"alice", func(in []byte) []byte { return append([]byte("Delivered-To: alice@example.com\n"), in...) }},
				{"bob", func(in []byte) []byte { return append([]byte("Delivered-To: bob@example.com\n"), in...) }},
				{"postmaster", func(in []byte) []byte { return append([]byte("Delivered-To: postmaster@example.com\n"), in...) }},
			},
			ignored: []string{"someone@elsewhere.example"},
		},
		{
			name: "header only, no newline at the end: nothing added",
			in:   "@header-only-eof.eml",
			want: []want{{"alice", func(in []byte) []byte { return in }}},
		},
		{
			name: "body without a blank line: nothing added",
			in:   "@no-blank-line.eml",
			want: []want{{"alice", func(in []byte) []byte { return in }}},
		},
		{
			name: "8-bit header, no Message-ID",
			in:   "@no-message-id-8bit.eml",
			want: []want{{"alice", func(in []byte) []byte { return in }}},
		},
		{
			name: "long header lines",
			in:   "@long-header-line.eml",
			want: []want{{"alice", func(in []byte) []byte { return in }}},
		},
		{
			name: "partial: one known, one unknown",
			in: lf("Return-Path: <bob@example.org>", "Envelope-to: alice@example.com, nobody@example.org",
				"Received: from x by y", "Subject: partial", "", "b"),
			want: []want{{"alice", func(in []byte) []byte {
				return append([]byte("Delivered-To: alice@example.com\n"), withoutFields(in, "Envelope-to:")...)
			}}},
			outcome: OutcomePartial,
			failed:  []string{"nobody@example.org"},
		},
		{
			name:     "deliver_to without any recipient",
			in:       lf("Return-Path: <bob@example.org>", "Subject: fetched", "", "b"),
			envelope: &Envelope{Sender: "bob@example.org", SenderKnown: true},
			opts:     func(o *Options) { o.DeliverTo = "frank@example.org" },
			want: []want{{"frank", func(in []byte) []byte {
				return append([]byte("Delivered-To: frank@example.org\n"), in...)
			}}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSetup(t)
			in := []byte(tc.in)
			if strings.HasPrefix(tc.in, "@") {
				in = fixture(t, tc.in[1:])
			}
			msg, src := s.dropFile(t, "msg", in)
			msg.Envelope = tc.envelope
			res, err := s.importer(t, tc.opts).Import(context.Background(), msg)
			if err != nil {
				t.Fatalf("Import: %v", err)
			}
			wantOutcome := tc.outcome
			if wantOutcome == "" {
				wantOutcome = OutcomeDelivered
			}
			if res.Outcome != wantOutcome {
				t.Fatalf("Outcome = %q (%s), want %q", res.Outcome, res.Reason, wantOutcome)
			}
			if got := res.FailedRecipients(); !slices.Equal(got, tc.failed) {
				t.Errorf("Failed = %q, want %q", got, tc.failed)
			}
			if !slices.Equal(res.Ignored, tc.ignored) {
				t.Errorf("Ignored = %q, want %q", res.Ignored, tc.ignored)
			}
			if len(res.Delivered) != len(tc.want) {
				t.Errorf("%d deliveries %v, want %d", len(res.Delivered), res.SortedAccounts(), len(tc.want))
			}
			for _, w := range tc.want {
				got := onlyCopy(t, s.maildir(w.local))
				sameBytes(t, got, w.copy(in))
			}
			// Accounts that should get nothing got nothing.
			for _, a := range s.accounts {
				local := filepath.Base(a.Maildir)
				if !slices.ContainsFunc(tc.want, func(w want) bool { return w.local == local }) {
					if d := delivered(t, a.Maildir); len(d) > 0 {
						t.Errorf("%s got %d unexpected copies", a.Address, len(d))
					}
				}
			}
			// The source is the importer's to read, never to change.
			if b, err := os.ReadFile(src); err != nil || !bytes.Equal(b, in) {
				t.Errorf("source changed: %v", err)
			}
		})
	}
}

func TestImportResult(t *testing.T) {
	s := newSetup(t)
	in := fixture(t, "exim-envelope-to.eml")
	msg, _ := s.dropFile(t, "1704186901.V801I2M3.mx", in)
	res, err := s.importer(t, nil).Import(context.Background(), msg)
	if err != nil {
		t.Fatal(err)
	}
	if res.MessageID != "<digest-2024-01@news.example.net>" || res.Subject != "Your weekly digest" {
		t.Errorf("MessageID %q Subject %q", res.MessageID, res.Subject)
	}
	if res.Size != int64(len(in)) || res.Header == nil || res.Envelope.Source != ConvEnvelopeTo {
		t.Errorf("Size %d Header %v Source %q", res.Size, res.Header != nil, res.Envelope.Source)
	}
	if got := res.SortedAccounts(); !slices.Equal(got, []string{"alice@example.com", "bob@example.com", "postmaster@example.com"}) {
		t.Errorf("accounts %q", got)
	}
	for _, d := range res.Delivered {
		if len(d.Recipients) != 1 || d.Existing {
			t.Errorf("delivery %+v", d)
		}
		if want := filepath.Join(s.maildir(strings.Split(d.Account, "@")[0]), "new", DeliveryName(msg, d.Account)); d.Path != want {
			t.Errorf("Path = %s, want %s", d.Path, want)
		}
	}
}

func TestImportMaildirLayout(t *testing.T) {
	s := newSetup(t)
	msg, _ := s.dropFile(t, "m", fixture(t, "postfix-virtual.eml"))
	if _, err := s.importer(t, nil).Import(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	md := s.maildir("alice")
	for _, d := range []string{md, filepath.Join(md, "tmp"), filepath.Join(md, "new"), filepath.Join(md, "cur")} {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v, want a 0700 folder", d, fi.Mode())
		}
	}
	if tmp := testenv.ListDir(t, filepath.Join(md, "tmp")); len(tmp) != 0 {
		t.Errorf("tmp/ holds %v", tmp)
	}
	names := testenv.ListDir(t, filepath.Join(md, "new"))
	if len(names) != 1 || names[0] != DeliveryName(msg, "alice@example.com") {
		t.Fatalf("new/ = %v", names)
	}
	fi, err := os.Stat(filepath.Join(md, "new", names[0]))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("delivered file mode %v (%v), want 0600", fi.Mode(), err)
	}
}

func TestDeliveryName(t *testing.T) {
	a := Message{ID: "drop/m1/1234/1704186901000000000", Arrived: time.Unix(1704186901, 5)}
	b := a
	b.Name, b.Size = "other label", 99 // neither is part of the identity
	if DeliveryName(a, "alice@example.com") != DeliveryName(b, "alice@example.com") {
		t.Error("one identity, two names")
	}
	if DeliveryName(a, "alice@example.com") == DeliveryName(a, "bob@example.com") {
		t.Error("two accounts share a name")
	}
	c := a
	c.ID += "x"
	if DeliveryName(a, "alice@example.com") == DeliveryName(c, "alice@example.com") {
		t.Error("two identities share a name")
	}
	// The ID and account are hashed apart: ("a", "b\x00c") is not ("a\x00b", "c").
	name := DeliveryName(a, "alice@example.com")
	if !strings.HasPrefix(name, "1704186901.X") || !strings.HasSuffix(name, ".mxdrop") || strings.ContainsAny(name, "/:") {
		t.Errorf("name %q is not a Maildir unique name", name)
	}
	if n := DeliveryName(Message{ID: "x", Arrived: time.Unix(-5, 0)}, "a@b"); !strings.HasPrefix(n, "0.") {
		t.Errorf("a negative time gives %q", n)
	}

	// Two imports of one message into two fresh trees give the same file name.
	var got []string
	for range 2 {
		s := newSetup(t)
		in := fixture(t, "postfix-virtual.eml")
		msg := bytesMessage("fixed-id", in)
		if _, err := s.importer(t, nil).Import(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
		got = append(got, testenv.ListDir(t, filepath.Join(s.maildir("alice"), "new"))...)
	}
	if len(got) != 2 || got[0] != got[1] {
		t.Errorf("names %v", got)
	}
}

func TestImportRecovered(t *testing.T) {
	in := fixture(t, "exim-envelope-to.eml")
	tests := []struct {
		name string
		// after the first import, before the recovered one
		move func(t *testing.T, md, name string) string // returns where the copy now is
	}{
		{"still in new", func(t *testing.T, md, name string) string { return filepath.Join(md, "new", name) }},
		{"moved to cur by a reader", func(t *testing.T, md, name string) string {
			return mv(t, filepath.Join(md, "new", name), filepath.Join(md, "cur", name+":2,S"))
		}},
		{"in cur without info", func(t *testing.T, md, name string) string {
			return mv(t, filepath.Join(md, "new", name), filepath.Join(md, "cur", name))
		}},
		{"in cur with a Dovecot size suffix", func(t *testing.T, md, name string) string {
			return mv(t, filepath.Join(md, "new", name), filepath.Join(md, "cur", name+",S=748,W=760:2,RS"))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSetup(t)
			msg, _ := s.dropFile(t, "m", in)
			im := s.importer(t, nil)
			if _, err := im.Import(context.Background(), msg); err != nil {
				t.Fatal(err)
			}
			md := s.maildir("alice")
			where := tc.move(t, md, DeliveryName(msg, "alice@example.com"))
			msg.Recovered = true
			// The copies found are made durable too: their folders are fsynced (here
			// left to a batch, to see which).
			msg.Batch = &durable.Batch{}
			res, err := im.Import(context.Background(), msg)
			if err != nil {
				t.Fatal(err)
			}
			if got := msg.Batch.Pending(); !slices.Contains(got, filepath.Dir(where)) || len(got) != 3 {
				t.Errorf("folders to fsync %v, want alice's %s and the other two accounts' folders", got, filepath.Dir(where))
			}
			if len(res.Delivered) != 3 {
				t.Fatalf("%d deliveries", len(res.Delivered))
			}
			for _, d := range res.Delivered {
				if !d.Existing {
					t.Errorf("%s delivered again", d.Account)
				}
				if d.Account == "alice@example.com" && d.Path != where {
					t.Errorf("Path = %s, want %s", d.Path, where)
				}
			}
			n := len(testenv.ListDir(t, filepath.Join(md, "new"))) + len(testenv.ListDir(t, filepath.Join(md, "cur")))
			if n != 1 {
				t.Errorf("alice holds %d copies", n)
			}
		})
	}
}

// A recovered import completes what an interrupted one started, without duplicates.
func TestImportRecoveredCompletes(t *testing.T) {
	s := newSetup(t)
	in := fixture(t, "exim-envelope-to.eml")
	msg, _ := s.dropFile(t, "m", in)
	// The first attempt delivers to alice only (bob's Maildir is broken) and fails.
	bobMD := s.maildir("bob")
	if err := os.MkdirAll(filepath.Dir(bobMD), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bobMD, nil, 0o600); err != nil { // a file where the folder should be
		t.Fatal(err)
	}
	im := s.importer(t, func(o *Options) { o.Domains = []string{"example.com"} })
	res, err := im.Import(context.Background(), msg)
	if err == nil || !IsTemporary(err) {
		t.Fatalf("err = %v, want a temporary error", err)
	}
	if len(res.Delivered) == 0 || res.Delivered[0].Account != "alice@example.com" {
		t.Fatalf("delivered %v before the failure", res.SortedAccounts())
	}
	// Repaired, the retry is a recovery.
	if err := os.Remove(bobMD); err != nil {
		t.Fatal(err)
	}
	msg.Recovered = true
	res, err = im.Import(context.Background(), msg)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range res.Delivered {
		if want := d.Account == "alice@example.com"; d.Existing != want {
			t.Errorf("%s Existing = %v, want %v", d.Account, d.Existing, want)
		}
	}
	for _, local := range []string{"alice", "bob", "postmaster"} {
		onlyCopy(t, s.maildir(local))
	}
}

// A Maildir path with glob meta characters is found like any other.
func TestImportRecoveredGlobPath(t *testing.T) {
	s := newSetup(t)
	odd := configs.Account{Address: "odd@example.com", Maildir: filepath.Join(s.root, "mail", "[odd]*?")}
	s.accounts = append(s.accounts, odd)
	msg, _ := s.dropFile(t, "m", []byte(lf("Delivered-To: odd@example.com", "Subject: x", "", "b")))
	im := s.importer(t, nil)
	if _, err := im.Import(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	name := DeliveryName(msg, "odd@example.com")
	mv(t, filepath.Join(odd.Maildir, "new", name), filepath.Join(odd.Maildir, "cur", name+":2,S"))
	msg.Recovered = true
	res, err := im.Import(context.Background(), msg)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Delivered[0].Existing {
		t.Fatal("delivered twice")
	}
}

// Without Recovered nothing is looked up: a copy read and moved to cur/ by a mail
// reader is not seen, as documented.
func TestImportNotRecoveredDoesNotLook(t *testing.T) {
	s := newSetup(t)
	msg, _ := s.dropFile(t, "m", fixture(t, "postfix-virtual.eml"))
	im := s.importer(t, nil)
	for range 2 {
		res, err := im.Import(context.Background(), msg)
		if err != nil || res.Delivered[0].Existing {
			t.Fatalf("err %v, %+v", err, res.Delivered)
		}
	}
	// The same name twice in new/ is one file.
	onlyCopy(t, s.maildir("alice"))
}

func mv(t *testing.T, from, to string) string {
	t.Helper()
	if err := os.Rename(from, to); err != nil {
		t.Fatal(err)
	}
	return to
}

func TestImportOutcomes(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		opts    func(*Options)
		outcome Outcome
		reason  string
		failed  []Failure
		ignored []string
	}{
		{
			name:    "nothing deliverable",
			in:      []byte(lf("Envelope-to: nobody@example.org, x@elsewhere.example, bad", "Subject: x", "", "b")),
			outcome: OutcomeFailed, reason: "no_deliverable_recipient",
			failed: []Failure{
				{Recipient: "nobody@example.org", Status: "5.1.1", Reason: "mailbox unknown", Rule: "unknown"},
				{Recipient: "x@elsewhere.example", Status: "5.1.2", Reason: "domain not accepted here", Rule: "not_accepted"},
			},
		},
		{
			name:    "guessed recipients all outside the accepted domains",
			in:      []byte(lf("To: a@elsewhere.example", "Cc: b@elsewhere.example", "", "b")),
			outcome: OutcomeFailed, reason: "no_accepted_recipient",
			ignored: []string{"a@elsewhere.example", "b@elsewhere.example"},
		},
		{
			name:    "no recipient at all",
			in:      []byte(lf("Subject: x", "", "b")),
			outcome: OutcomeFailed, reason: "no_recipient",
		},
		{
			name:    "too large",
			in:      bytes.Repeat([]byte("x"), 2000),
			opts:    func(o *Options) { o.MaxMessageSize = 1000 },
			outcome: OutcomeRejected, reason: "too_large",
		},
		{name: "empty", in: nil, outcome: OutcomeRejected, reason: "empty"},
		{name: "binary", in: []byte("Subject: \x00\x01\x02\n\n"), outcome: OutcomeRejected, reason: "binary"},
		{name: "no header", in: []byte("hello\nworld\n"), outcome: OutcomeRejected, reason: "no_header"},
		{name: "header too large", in: []byte("X: " + strings.Repeat("y", MaxHeaderSize) + "\n\nb"), outcome: OutcomeRejected, reason: "header_too_large"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSetup(t)
			msg, _ := s.dropFile(t, "m", tc.in)
			res, err := s.importer(t, tc.opts).Import(context.Background(), msg)
			if err != nil {
				t.Fatalf("Import: %v", err)
			}
			if res.Outcome != tc.outcome || res.Reason != tc.reason || res.Detail == "" {
				t.Errorf("Outcome %q Reason %q Detail %q, want %q %q", res.Outcome, res.Reason, res.Detail, tc.outcome, tc.reason)
			}
			// "bad" is 5.1.3; compare the rest exactly.
			got := slices.DeleteFunc(slices.Clone(res.Failed), func(f Failure) bool { return f.Recipient == "bad" })
			if len(got) != len(tc.failed) {
				t.Fatalf("Failed = %+v, want %+v", res.Failed, tc.failed)
			}
			for i := range got {
				if got[i] != tc.failed[i] {
					t.Errorf("Failed[%d] = %+v, want %+v", i, got[i], tc.failed[i])
				}
			}
			if !slices.Equal(res.Ignored, tc.ignored) {
				t.Errorf("Ignored = %q, want %q", res.Ignored, tc.ignored)
			}
			if len(res.Delivered) != 0 || dirExists(filepath.Join(s.root, "mail")) {
				t.Errorf("something was delivered: %+v", res.Delivered)
			}
			if tc.outcome == OutcomeRejected && res.Header != nil {
				t.Error("a rejected message has a Header")
			}
		})
	}
}

func dirExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// assertTemporary checks the contract of a transient failure: a temporary *Error with a
// 4xx status, never 5xx.
func assertTemporary(t *testing.T, err error, wantEnhanced string) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	if !IsTemporary(err) {
		t.Fatalf("%v is not temporary", err)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("%v is not an *Error", err)
	}
	if e.Status.Code/100 != 4 || !strings.HasPrefix(e.Status.Enhanced, "4.") {
		t.Fatalf("status %v of a temporary error", e.Status)
	}
	if wantEnhanced != "" && e.Status.Enhanced != wantEnhanced {
		t.Errorf("status %v, want %s", e.Status, wantEnhanced)
	}
}

func TestImportTemporaryErrors(t *testing.T) {
	in := fixture(t, "postfix-virtual.eml")
	tests := []struct {
		name     string
		prepare  func(t *testing.T, s *testSetup, msg *Message)
		ctx      func() context.Context
		enhanced string
	}{
		{
			name: "Maildir parent is a regular file",
			prepare: func(t *testing.T, s *testSetup, msg *Message) {
				if err := os.WriteFile(filepath.Join(s.root, "mail"), []byte("not a folder"), 0o600); err != nil {
					t.Fatal(err)
				}
			},
			enhanced: "4.3.0",
		},
		{
			name: "tmp/ is a regular file",
			prepare: func(t *testing.T, s *testSetup, msg *Message) {
				md := s.maildir("alice")
				if err := Maildir(md).Init(); err != nil {
					t.Fatal(err)
				}
				if err := os.Remove(filepath.Join(md, "tmp")); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(md, "tmp"), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			},
			enhanced: "4.3.0",
		},
		{
			name: "source cannot be opened",
			prepare: func(t *testing.T, s *testSetup, msg *Message) {
				msg.Open = func() (io.ReadCloser, error) { return nil, fs_ErrPermission }
			},
			enhanced: "4.3.0",
		},
		{
			name: "source fails while the body is copied",
			prepare: func(t *testing.T, s *testSetup, msg *Message) {
				msg.Open = func() (io.ReadCloser, error) {
					return io.NopCloser(io.MultiReader(bytes.NewReader(in[:len(in)-10]), errReader{syscall.EIO})), nil
				}
			},
			enhanced: "4.3.0",
		},
		{
			name:     "context cancelled",
			ctx:      func() context.Context { ctx, cancel := context.WithCancel(context.Background()); cancel(); return ctx },
			enhanced: "4.3.0",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSetup(t)
			msg, src := s.dropFile(t, "m", in)
			if tc.prepare != nil {
				tc.prepare(t, s, &msg)
			}
			ctx := context.Background()
			if tc.ctx != nil {
				ctx = tc.ctx()
			}
			_, err := s.importer(t, nil).Import(ctx, msg)
			assertTemporary(t, err, tc.enhanced)
			if b, rerr := os.ReadFile(src); rerr != nil || !bytes.Equal(b, in) {
				t.Errorf("source changed: %v", rerr)
			}
			md := s.maildir("alice")
			for _, sub := range []string{"new", "tmp"} {
				// The folders may not exist, or not be folders: ReadDir errors are fine.
				if n, _ := os.ReadDir(filepath.Join(md, sub)); len(n) != 0 {
					t.Errorf("%s/ holds %d files after a failure", sub, len(n))
				}
			}
		})
	}
}

var fs_ErrPermission = os.ErrPermission

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// mountTmpfs mounts a tmpfs with the given options at a new folder, or skips the test
// when that is not allowed (not root, no CAP_SYS_ADMIN).
func mountTmpfs(t *testing.T, opts string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, opts); err != nil {
		skipUnlessCI(t, "cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// Real file system failures, not simulated ones: root ignores permission bits, so a
// read-only and a full file system are mounted.
func TestImportFileSystemErrors(t *testing.T) {
	in := append([]byte(lf("Delivered-To: alice@example.com", "Subject: big", "", "")), bytes.Repeat([]byte("0123456789abcdef\n"), 32<<10)...) // ~544 KiB
	tests := []struct {
		name     string
		mount    string
		remount  bool // remount read-only after the Maildir exists
		enhanced string
	}{
		{"read-only file system", "size=1m", true, "4.3.0"},
		{"file system full", "size=256k", false, "4.3.1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := mountTmpfs(t, tc.mount)
			md := filepath.Join(dir, "alice")
			if err := Maildir(md).Init(); err != nil {
				t.Fatal(err)
			}
			if tc.remount {
				if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_REMOUNT|syscall.MS_RDONLY, tc.mount); err != nil {
					skipUnlessCI(t, "remount read-only: %v", err)
				}
			}
			s := newSetup(t)
			s.accounts = []configs.Account{{Address: "alice@example.com", Maildir: md}}
			msg, src := s.dropFile(t, "m", in)
			_, err := s.importer(t, nil).Import(context.Background(), msg)
			assertTemporary(t, err, tc.enhanced)
			if b, rerr := os.ReadFile(src); rerr != nil || !bytes.Equal(b, in) {
				t.Errorf("source changed: %v", rerr)
			}
			if n := testenv.ListDir(t, filepath.Join(md, "tmp")); len(n) != 0 {
				t.Errorf("tmp/ holds %v", n)
			}
			if n := testenv.ListDir(t, filepath.Join(md, "new")); len(n) != 0 {
				t.Errorf("new/ holds %v", n)
			}
		})
	}
}

func TestImportConcurrent(t *testing.T) {
	s := newSetup(t)
	im := s.importer(t, nil)
	base := fixture(t, "exim-envelope-to.eml")
	const n = 40
	errs := make(chan error, n)
	for i := range n {
		go func() {
			msg := bytesMessage(fmt.Sprintf("msg-%d", i), base)
			_, err := im.Import(context.Background(), msg)
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for _, local := range []string{"alice", "bob", "postmaster"} {
		if got := len(delivered(t, s.maildir(local))); got != n {
			t.Errorf("%s holds %d messages, want %d", local, got, n)
		}
	}
}

// A Maildir removed while mxdrop runs (an administrator resetting a mailbox) is created
// again, as on the first delivery, rather than failing every import until a restart.
func TestImportMaildirRemovedWhileRunning(t *testing.T) {
	s := newSetup(t)
	im := s.importer(t, nil)
	in := fixture(t, "postfix-virtual.eml")
	if _, err := im.Import(context.Background(), bytesMessage("one", in)); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(s.maildir("alice")); err != nil {
		t.Fatal(err)
	}
	if _, err := im.Import(context.Background(), bytesMessage("two", in)); err != nil {
		t.Fatalf("Import after the Maildir was removed: %v", err)
	}
	onlyCopy(t, s.maildir("alice"))
}

func TestNewRejectsAccountWithoutMaildir(t *testing.T) {
	_, err := New(Options{Accounts: []configs.Account{{Address: "a@example.com"}}, Domains: []string{"."}})
	if err == nil || !strings.Contains(err.Error(), "a@example.com") {
		t.Fatalf("err = %v, want one naming the account", err)
	}
}

// TestImportGivenHeader checks that a header the source parsed already is used as is:
// the copy comes out the same as when the importer reads the header itself, and the
// header is not read from the message again.
func TestImportGivenHeader(t *testing.T) {
	root := t.TempDir()
	in := []byte(lf("Delivered-To: alice@example.com", "Received: from x by mx.example.com; Tue, 2 Jan 2024 09:15:01 +0000",
		"From: bob@example.org", "To: alice@example.com", "Subject: given header", "", "body", ""))
	var copies [][]byte
	for i, given := range []bool{false, true} {
		dir := filepath.Join(root, itoa(int64(i)))
		im := newImporter(t, Options{Accounts: []configs.Account{account(dir, "alice@example.com")}, Domains: []string{"example.com"}})
		msg := bytesMessage("given", in)
		opens := 0
		open := msg.Open
		msg.Open = func() (io.ReadCloser, error) { opens++; return open() }
		if given {
			msg.Header = parse(t, string(in))
		}
		res, err := im.Import(context.Background(), msg)
		if err != nil || res.Outcome != OutcomeDelivered {
			t.Fatalf("given %v: %v %+v", given, err, res)
		}
		if want := map[bool]int{false: 2, true: 1}[given]; opens != want {
			t.Errorf("given %v: message opened %d times, want %d", given, opens, want)
		}
		copies = append(copies, onlyCopy(t, filepath.Join(dir, "mail", "alice")))
	}
	if !bytes.Equal(copies[0], copies[1]) {
		t.Errorf("copies differ:\n%s\n---\n%s", copies[0], copies[1])
	}
}

// TestImportBatch checks that with a Batch the deliveries are in place at once and
// their folders are left to the batch's Sync.
func TestImportBatch(t *testing.T) {
	s := newSetup(t)
	im := s.importer(t, nil)
	batch := &durable.Batch{}
	var want []string
	for _, name := range []string{"m1", "m2"} {
		msg, _ := s.dropFile(t, name, fixture(t, "exim-envelope-to.eml"))
		msg.Batch = batch
		res, err := im.Import(context.Background(), msg)
		if err != nil || len(res.Delivered) != 3 {
			t.Fatalf("%s: %v, %d deliveries", name, err, len(res.Delivered))
		}
		for _, d := range res.Delivered {
			if _, err := os.Stat(d.Path); err != nil {
				t.Errorf("%s: %v", d.Account, err)
			}
			if !slices.Contains(want, filepath.Dir(d.Path)) {
				want = append(want, filepath.Dir(d.Path))
			}
		}
	}
	slices.Sort(want)
	if got := batch.Pending(); !slices.Equal(got, want) {
		t.Errorf("folders to fsync %v, want %v", got, want)
	}
	if err := batch.Sync(); err != nil || len(batch.Pending()) != 0 {
		t.Errorf("Sync: %v, still pending %v", err, batch.Pending())
	}
}

// TestImportTruncatedAfterClaim: a drop file truncated (or appended to) after it was
// claimed, while its copy is written, is not delivered short (or long) as the claimed
// message: Import fails temporarily with ErrSizeChanged and leaves nothing in the
// Maildir; the retry, with the file's new identity, delivers it whole.
func TestImportTruncatedAfterClaim(t *testing.T) {
	s := newSetup(t)
	im := s.importer(t, nil)
	body := []byte("Return-Path: <s@remote.test>\nDelivered-To: alice@example.com\nFrom: s@remote.test\nTo: alice@example.com\nMessage-ID: <trunc@test>\nSubject: t\n\n" + strings.Repeat("line of body\n", 200))
	for _, tc := range []struct {
		name string
		n    int // bytes the file holds when it is copied
	}{{"truncated", len(body) / 2}, {"grown", len(body) + 50}} {
		t.Run(tc.name, func(t *testing.T) {
			msg, _ := s.dropFile(t, tc.name+".eml", body)
			content := append([]byte(nil), body...)
			if tc.n > len(body) {
				content = append(content, bytes.Repeat([]byte("x"), tc.n-len(body))...)
			}
			content = content[:tc.n]
			// The header was read at claim time; the copy finds the file changed.
			reads := 0
			msg.Open = func() (io.ReadCloser, error) {
				reads++
				if reads == 1 {
					return io.NopCloser(bytes.NewReader(body)), nil
				}
				return io.NopCloser(bytes.NewReader(content)), nil
			}
			_, err := im.Import(context.Background(), msg)
			if !errors.Is(err, ErrSizeChanged) {
				t.Fatalf("Import of a %d-byte copy of a %d-byte claim: %v, want ErrSizeChanged", tc.n, len(body), err)
			}
			var ie *Error
			if !errors.As(err, &ie) || !ie.Temporary() {
				t.Errorf("error %v is not temporary", err)
			}
			md := s.maildir("alice")
			if n := testenv.ListDir(t, filepath.Join(md, "new")); len(n) != 0 {
				t.Errorf("new/ holds %v", n)
			}
			if n := testenv.ListDir(t, filepath.Join(md, "tmp")); len(n) != 0 {
				t.Errorf("tmp/ holds %v", n)
			}
		})
	}
}
