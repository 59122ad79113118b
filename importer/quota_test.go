package importer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/configs"
)

// quotaMessage is a message to alice of about size bytes with a distinct identity.
func quotaMessage(i, size int, rcpts ...string) Message {
	body := strings.Repeat("x", size)
	raw := fmt.Sprintf("Return-Path: <s@example.net>\nX-Original-To: %s\nFrom: s@example.net\nSubject: %d\nMessage-ID: <q%d@example.net>\n\n%s\n", strings.Join(rcpts, ", "), i, i, body)
	return bytesMessage(fmt.Sprintf("q%d", i), []byte(raw))
}

// readMaildirsize returns the definition and the sums of a maildirsize file.
func readMaildirsize(t *testing.T, md string) (string, Usage) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(md, "maildirsize"))
	if err != nil {
		t.Fatal(err)
	}
	def, u, ok := parseMaildirsize(b)
	if !ok {
		t.Fatalf("maildirsize does not parse:\n%s", b)
	}
	return def, u
}

// diskUsage counts the Maildir's messages from the file system alone (stat, not S=),
// and checks that every S= field tells the file's size.
func diskUsage(t *testing.T, md string) Usage {
	t.Helper()
	var u Usage
	dirs, _ := filepath.Glob(filepath.Join(md, ".*"))
	for _, dir := range append([]string{md}, dirs...) {
		for _, sub := range []string{"new", "cur"} {
			ents, _ := os.ReadDir(filepath.Join(dir, sub))
			for _, e := range ents {
				fi, err := e.Info()
				if err != nil {
					t.Fatal(err)
				}
				s, ok := sizeField(e.Name())
				if !ok || s != fi.Size() {
					t.Errorf("%s: S= field %d (%v) but %d bytes", e.Name(), s, ok, fi.Size())
				}
				u.Bytes += fi.Size()
				u.Messages++
			}
		}
	}
	return u
}

// TestQuotaDeliveries: a delivery that fits is named with ,S=<size> and appended to
// maildirsize; one that does not fit fails its recipient with 5.2.2 while the other
// account still gets the message; a message whose only account is full fails as a
// whole (the source quarantines it).
func TestQuotaDeliveries(t *testing.T) {
	t.Parallel()
	s := newSetup(t)
	s.accounts[0].Quota = 6000 // alice
	s.accounts[0].QuotaMessages = 100
	im := s.importer(t, nil)
	md := s.maildir("alice")
	ctx := context.Background()
	for i := range 2 {
		res, err := im.Import(ctx, quotaMessage(i, 2000, "alice@example.com"))
		if err != nil || res.Outcome != OutcomeDelivered {
			t.Fatalf("message %d: %v %+v", i, err, res)
		}
		if _, ok := sizeField(filepath.Base(res.Delivered[0].Path)); !ok {
			t.Errorf("delivery %s has no S= field", res.Delivered[0].Path)
		}
	}
	def, u := readMaildirsize(t, md)
	if def != "6000S,100C" {
		t.Errorf("definition %q, want 6000S,100C", def)
	}
	if disk := diskUsage(t, md); u != disk || disk.Messages != 2 {
		t.Errorf("maildirsize says %+v, the disk %+v", u, disk)
	}

	res, err := im.Import(ctx, quotaMessage(2, 2000, "alice@example.com", "bob@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != OutcomePartial || len(res.Delivered) != 1 || res.Delivered[0].Account != "bob@example.com" {
		t.Fatalf("over quota with another recipient: %+v", res)
	}
	if len(res.Failed) != 1 || res.Failed[0].Recipient != "alice@example.com" || res.Failed[0].Status != "5.2.2" || res.Failed[0].Reason != "mailbox full" {
		t.Errorf("failed = %+v, want alice 5.2.2 mailbox full", res.Failed)
	}
	res, err = im.Import(ctx, quotaMessage(3, 2000, "alice@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != OutcomeFailed || len(res.Delivered) != 0 || len(res.Failed) != 1 {
		t.Errorf("over quota alone: %+v", res)
	}
	if _, u := readMaildirsize(t, md); u != diskUsage(t, md) || u.Messages != 2 {
		t.Errorf("after refusals maildirsize says %+v, the disk %+v", u, diskUsage(t, md))
	}
	if tmp, _ := os.ReadDir(filepath.Join(md, "tmp")); len(tmp) != 0 {
		t.Errorf("refused copies left in tmp/: %v", tmp)
	}

	// A recovered message finds its S= named delivery and is not delivered twice.
	msg := quotaMessage(0, 2000, "alice@example.com")
	msg.Recovered = true
	res, err = im.Import(ctx, msg)
	if err != nil || len(res.Delivered) != 1 || !res.Delivered[0].Existing {
		t.Errorf("recovered: %v %+v", err, res)
	}
}

// TestQuotaRecalculated: maildirsize is rebuilt from the disk when it is missing, too
// large, torn, or defines another quota, and a limit on the message count holds.
func TestQuotaRecalculated(t *testing.T) {
	t.Parallel()
	s := newSetup(t)
	s.accounts[0].QuotaMessages = 3
	im := s.importer(t, nil)
	md := s.maildir("alice")
	ctx := context.Background()
	for i := range 2 {
		if _, err := im.Import(ctx, quotaMessage(i, 100, "alice@example.com")); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range map[string]string{
		"missing":    "",
		"too large":  "3C\n" + strings.Repeat("0 0\n", 2000),
		"torn":       "3C\n123",
		"other def":  "5S\n1 1\n",
		"wrong sums": "1000S,3C\n999999 99\n", // a definition change: recount
	} {
		p := filepath.Join(md, "maildirsize")
		if content == "" {
			os.Remove(p)
		} else if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		u, err := Maildir(md).QuotaUsage(Quota{Messages: 3})
		if err != nil || u != diskUsage(t, md) {
			t.Errorf("%s: QuotaUsage = %+v, %v; the disk holds %+v", name, u, err, diskUsage(t, md))
		}
	}
	os.Remove(filepath.Join(md, "maildirsize"))
	if res, err := im.Import(ctx, quotaMessage(2, 100, "alice@example.com")); err != nil || res.Outcome != OutcomeDelivered {
		t.Fatalf("third message: %v %+v", err, res)
	}
	if def, u := readMaildirsize(t, md); def != "3C" || u.Messages != 3 {
		t.Errorf("recalculated maildirsize %q %+v", def, u)
	}
	if res, err := im.Import(ctx, quotaMessage(3, 100, "alice@example.com")); err != nil || res.Outcome != OutcomeFailed {
		t.Errorf("fourth message over quota_messages 3: %v %+v", err, res)
	}
}

// TestQuotaConcurrent: 16 deliveries at once to one account whose quota fits only some
// of them: exactly as many as fit are delivered, the others fail with 5.2.2, and
// maildirsize agrees with the disk. Not parallel: it sets quotaWindow, so that the
// deliveries really overlap between the quota check and the append.
func TestQuotaConcurrent(t *testing.T) {
	quotaWindow = func() { time.Sleep(2 * time.Millisecond) }
	defer func() { quotaWindow = nil }()
	root := t.TempDir()
	acct := account(root, "alice@example.com")
	im := newImporter(t, Options{Accounts: []configs.Account{acct}, Domains: []string{"example.com"}})
	// Measure one copy's size, then set a quota that fits 10 of them and a half.
	probe, err := im.Import(context.Background(), quotaMessage(99, 4000, "alice@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(probe.Delivered[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(probe.Delivered[0].Path)
	size := fi.Size()
	acct.Quota = configs.Size(size*10 + size/2)
	im = newImporter(t, Options{Accounts: []configs.Account{acct}, Domains: []string{"example.com"}})

	var wg sync.WaitGroup
	results := make([]Result, 16)
	errs := make([]error, 16)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = im.Import(context.Background(), quotaMessage(i+10, 4000, "alice@example.com"))
		}()
	}
	wg.Wait()
	delivered, full := 0, 0
	for i, r := range results {
		if errs[i] != nil {
			t.Fatalf("import %d: %v", i, errs[i])
		}
		switch {
		case r.Outcome == OutcomeDelivered:
			delivered++
		case r.Outcome == OutcomeFailed && len(r.Failed) == 1 && r.Failed[0].Status == "5.2.2":
			full++
		default:
			t.Errorf("import %d: %+v", i, r)
		}
	}
	if delivered != 10 || full != 6 {
		t.Errorf("%d delivered and %d refused, want 10 and 6 (quota %d, copies of %d bytes)", delivered, full, acct.Quota, size)
	}
	def, u := readMaildirsize(t, acct.Maildir)
	if disk := diskUsage(t, acct.Maildir); u != disk {
		t.Errorf("maildirsize says %+v, the disk %+v", u, disk)
	}
	if def != strconv.FormatInt(int64(acct.Quota), 10)+"S" || u.Bytes > int64(acct.Quota) {
		t.Errorf("definition %q, %d bytes used of %d", def, u.Bytes, acct.Quota)
	}
}

// TestQuotaRecoveredSpam: a quota delivery judged spam lands in the spam folder as
// name,S=<size>; when its retry is judged otherwise (spamd failed this time) the copy is
// found there and not delivered again.
func TestQuotaRecoveredSpam(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	acct := account(root, "alice@example.com")
	acct.Quota, acct.SpamCheck = 1<<20, true
	fc := &fakeClassifier{}
	im := newImporter(t, Options{Accounts: []configs.Account{acct}, Domains: []string{"example.com"}, Spam: fc})
	raw := []byte("X-Original-To: alice@example.com\nFrom: s@example.net\nSubject: viagra\nMessage-ID: <rs@example.net>\n\nbuy viagra\n")
	res, err := im.Import(context.Background(), bytesMessage("rs", raw))
	if err != nil || res.Delivered[0].Folder != "Junk" {
		t.Fatalf("first import: %v %+v", err, res)
	}
	fc.fail = true
	msg := bytesMessage("rs", raw)
	msg.Recovered = true
	res, err = im.Import(context.Background(), msg)
	if err != nil || len(res.Delivered) != 1 || !res.Delivered[0].Existing {
		t.Errorf("recovered: %v %+v", err, res)
	}
	if u := diskUsage(t, acct.Maildir); u.Messages != 1 {
		t.Errorf("the Maildir holds %d messages, want 1", u.Messages)
	}
}
