package importer_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
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
