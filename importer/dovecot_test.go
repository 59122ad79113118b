package importer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer"
	"github.com/mxdrop/mxdrop/internal/dovecottest"
)

var messageIDRE = regexp.MustCompile(`(?mi)^Message-ID:[ \t]*(<[^>\r\n]+>)`)

// TestDoveadmReadsDeliveries imports the corpus of real-world messages under
// testdata/messages into Maildirs and has Dovecot's doveadm read every delivered
// message back by its Message-ID: the proof that a real IMAP server sees what mxdrop
// delivers, byte for byte.
func TestDoveadmReadsDeliveries(t *testing.T) {
	dovecottest.Require(t)
	root := t.TempDir()
	var accounts []configs.Account
	for _, a := range []string{"alice@example.com", "bob@example.com", "carol@example.com", "dave@example.com", "postmaster@example.com"} {
		accounts = append(accounts, configs.Account{Address: a, Maildir: filepath.Join(root, strings.Split(a, "@")[0])})
	}
	im, err := importer.New(importer.Options{Accounts: accounts, Domains: []string{"."}, UnknownTo: "postmaster@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("../testdata/messages/*.eml")
	if len(files) < 10 {
		t.Fatalf("only %d corpus messages", len(files))
	}
	delivered := 0
	for _, f := range files {
		f := f
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		res, err := im.Import(context.Background(), importer.Message{
			ID: f, Name: filepath.Base(f), Size: fi.Size(), Arrived: time.Now(),
			Open: func() (io.ReadCloser, error) { return os.Open(f) },
		})
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		delivered += len(res.Delivered)
	}
	if delivered < len(files)/2 {
		t.Fatalf("only %d deliveries from %d messages", delivered, len(files))
	}

	checked := 0
	for _, a := range accounts {
		entries, _ := os.ReadDir(filepath.Join(a.Maildir, "new"))
		var want []string
		byID := map[string][]byte{}
		for _, e := range entries {
			data, err := os.ReadFile(filepath.Join(a.Maildir, "new", e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			m := messageIDRE.FindSubmatch(data[:min(len(data), 1<<20)])
			if m == nil {
				want = append(want, "") // counted, read back by count only
				continue
			}
			want = append(want, string(m[1]))
			byID[string(m[1])] = data
		}
		if len(entries) == 0 {
			continue
		}
		got := dovecottest.MessageIDs(t, a.Maildir, "INBOX")
		if len(got) != len(want) {
			t.Errorf("%s: doveadm sees %d messages, %d delivered (%v vs %v)", a.Address, len(got), len(want), got, want)
		}
		for id, data := range byID {
			back := dovecottest.Fetch(t, a.Maildir, id)
			if !bytes.Equal(back, data) {
				t.Errorf("%s: doveadm returns %d bytes for %s, the delivered file has %d", a.Address, len(back), id, len(data))
			}
			checked++
		}
	}
	if checked < 5 {
		t.Errorf("only %d messages read back", checked)
	}
	t.Logf("%d corpus files, %d deliveries, %d read back by Message-ID through doveadm", len(files), delivered, checked)
}

// TestDoveadmQuotaAgrees: 16 concurrent deliveries into a user's Maildir near its
// Maildir++ quota; Dovecot's quota plugin (maildir backend) on the same Maildir reports
// what maildirsize says, before and after it recounts the Maildir itself.
func TestDoveadmQuotaAgrees(t *testing.T) {
	const quota = 40000
	srv := dovecottest.Start(t, dovecottest.Options{
		Users: map[string]string{"alice": "pw"},
		ExtraConfig: "mail_plugins = $mail_plugins quota\nplugin {\n  quota = maildir:User quota\n" +
			"  quota_rule = *:storage=" + strconv.Itoa(quota) + "B:messages=100\n}\n",
	})
	md := srv.Maildir("alice")
	acct := configs.Account{Address: "alice@example.com", Maildir: md, Quota: quota, QuotaMessages: 100}
	im, err := importer.New(importer.Options{Accounts: []configs.Account{acct}, Domains: []string{"example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	delivered, full := 0, 0
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			raw := fmt.Sprintf("X-Original-To: alice@example.com\nFrom: s@example.net\nMessage-ID: <dq%d@example.net>\nSubject: q\n\n%s\n", i, strings.Repeat("y", 3000))
			res, err := im.Import(context.Background(), importer.Message{
				ID: fmt.Sprintf("dq%d", i), Name: "dq", Size: int64(len(raw)), Arrived: time.Now(),
				Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(raw)), nil },
			})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				t.Errorf("import %d: %v", i, err)
			case res.Outcome == importer.OutcomeDelivered:
				delivered++
			case len(res.Failed) == 1 && res.Failed[0].Status == "5.2.2":
				full++
			default:
				t.Errorf("import %d: %+v", i, res)
			}
		}()
	}
	wg.Wait()
	if full == 0 || delivered == 0 {
		t.Fatalf("%d delivered, %d refused: the quota did not bite", delivered, full)
	}
	u, err := importer.Maildir(md).QuotaUsage(importer.Quota{Bytes: quota, Messages: 100})
	if err != nil {
		t.Fatal(err)
	}
	if u.Messages != int64(delivered) || u.Bytes > quota {
		t.Errorf("maildirsize: %+v after %d deliveries (quota %d)", u, delivered, quota)
	}
	// Dovecot's mail processes run as 65534: hand it the Maildir mxdrop wrote as root.
	filepath.Walk(md, func(p string, _ os.FileInfo, _ error) error {
		return os.Lchown(p, dovecottest.MailUID, dovecottest.MailGID)
	})
	check := func(when string) {
		t.Helper()
		var rows []map[string]string
		if err := json.Unmarshal(srv.Doveadm(t, "-f", "json", "quota", "get", "-u", "alice"), &rows); err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, r := range rows {
			got[r["type"]] = r["value"]
		}
		// doveadm reports storage in KiB (rounded up), messages exactly.
		if got["STORAGE"] != strconv.FormatInt((u.Bytes+1023)/1024, 10) || got["MESSAGE"] != strconv.FormatInt(u.Messages, 10) {
			t.Errorf("%s: doveadm quota get %v; maildirsize %d bytes, %d messages", when, rows, u.Bytes, u.Messages)
		}
	}
	check("as written")
	srv.Doveadm(t, "quota", "recalc", "-u", "alice")
	check("after doveadm quota recalc")
	// Dovecot rewrote maildirsize from its own count: to the byte what mxdrop kept.
	if again, err := importer.Maildir(md).QuotaUsage(importer.Quota{Bytes: quota, Messages: 100}); err != nil || again != u {
		b, _ := os.ReadFile(filepath.Join(md, "maildirsize"))
		t.Errorf("after Dovecot's recount maildirsize says %+v (%v), mxdrop kept %+v:\n%s", again, err, u, b)
	}
	t.Logf("%d delivered, %d refused with 5.2.2; maildirsize %d bytes, %d messages", delivered, full, u.Bytes, u.Messages)
}

// TestDoveadmReadsLinkedDeliveries: Postfix-style drop files delivered by hard link (into
// an inbox without quota and one with a Maildir++ quota, whose names carry S=) are read
// back by Dovecot's doveadm byte for byte, and are the drop files' own inodes.
func TestDoveadmReadsLinkedDeliveries(t *testing.T) {
	dovecottest.Require(t)
	root := t.TempDir()
	accounts := []configs.Account{
		{Address: "alice@example.com", Maildir: filepath.Join(root, "alice")},
		{Address: "bob@example.com", Maildir: filepath.Join(root, "bob"), Quota: 1 << 20},
	}
	im, err := importer.New(importer.Options{Accounts: accounts, Domains: []string{"example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	drop := filepath.Join(root, "drop")
	os.Mkdir(drop, 0o700)
	sent := map[string]map[string][]byte{}
	for i := 0; i < 6; i++ {
		a := accounts[i%2]
		id := fmt.Sprintf("<linked-%d@remote.test>", i)
		raw := []byte(fmt.Sprintf("Return-Path: <s@remote.test>\r\nDelivered-To: %s\r\nFrom: s@remote.test\r\nTo: %s\r\nMessage-ID: %s\r\nSubject: linked %d\r\n\r\n%s",
			a.Address, a.Address, id, i, strings.Repeat("a line of the body\r\n", 50*(i+1))))
		p := filepath.Join(drop, fmt.Sprintf("m%d", i))
		if err := os.WriteFile(p, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Stat(p)
		res, err := im.Import(context.Background(), importer.Message{
			ID: p, Name: filepath.Base(p), Size: fi.Size(), Arrived: fi.ModTime(), Path: p,
			Open: func() (io.ReadCloser, error) { return os.Open(p) },
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Delivered) != 1 || !res.Delivered[0].Linked {
			t.Fatalf("%s: %+v, want one linked delivery", id, res.Delivered)
		}
		if d, _ := os.Stat(res.Delivered[0].Path); !os.SameFile(fi, d) {
			t.Fatalf("%s: the delivery is not the drop file", id)
		}
		if sent[a.Maildir] == nil {
			sent[a.Maildir] = map[string][]byte{}
		}
		sent[a.Maildir][id] = raw
		// The drop file goes once the delivery is durable, as the watcher acknowledges it.
		if i%4 == 0 {
			os.Remove(p)
		}
	}
	for md, msgs := range sent {
		if got := dovecottest.MessageIDs(t, md, "INBOX"); len(got) != len(msgs) {
			t.Errorf("%s: doveadm sees %v, want %d messages", md, got, len(msgs))
		}
		for id, raw := range msgs {
			if back := dovecottest.Fetch(t, md, id); !bytes.Equal(back, raw) {
				t.Errorf("%s: doveadm returns %d bytes for %s, the drop file had %d", md, len(back), id, len(raw))
			}
		}
	}
}
