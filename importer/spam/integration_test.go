package spam

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer"
	"github.com/mxdrop/mxdrop/internal/dovecottest"
	"github.com/mxdrop/mxdrop/internal/spamdtest"
)

const (
	gtubeID = "<GTUBE1.1010101@spam.example.net>"
	cleanID = "<5f1c2a8e-minutes@example.org>"
)

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dropFile writes b into dir as a drop folder file and returns the Message a watcher
// would hand the importer for it.
func dropFile(t testing.TB, dir, name string, b []byte) importer.Message {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return importer.Message{
		ID: name + "/" + fi.ModTime().String(), Name: name, Size: fi.Size(), Arrived: fi.ModTime(),
		Open: func() (io.ReadCloser, error) { return os.Open(path) },
	}
}

// TestRealSpamd checks the spamc client against SpamAssassin's spamd: the GTUBE message
// is spam with GTUBE's score and a clean message is not, also when checked
// concurrently. Then the whole path through the importer: GTUBE lands in Junk and the
// clean message in the inbox, as doveadm sees them; with spamd stopped, a message still
// arrives in the inbox, marked unchecked.
func TestRealSpamd(t *testing.T) {
	srv := spamdtest.Start(t)
	c, logs := newChecker(t, configs.Spam{Spamd: srv.Addr, Words: []string{"viagra"}})
	gtube, clean := fixture(t, "gtube.eml"), fixture(t, "clean.eml")
	if !strings.Contains(string(gtube), spamdtest.GTUBE) {
		t.Fatal("testdata/gtube.eml lacks the GTUBE string")
	}

	t.Run("verdicts", func(t *testing.T) {
		start := time.Now()
		v, err := classify(t, c, string(gtube), nil)
		if err != nil || !v.Spam || v.Score < 1000 || !strings.Contains(v.Reason, "GTUBE") {
			t.Errorf("GTUBE: %+v %v", v, err)
		}
		t.Logf("GTUBE: %+v in %v", v, time.Since(start))
		start = time.Now()
		v, err = classify(t, c, string(clean), nil)
		if err != nil || v.Spam || v.Score >= 5 {
			t.Errorf("clean: %+v %v", v, err)
		}
		t.Logf("clean: %+v in %v", v, time.Since(start))
	})

	t.Run("concurrent", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := range 6 {
			wg.Go(func() {
				raw, want := clean, false
				if i%2 == 0 {
					raw, want = gtube, true
				}
				h := parse(t, string(raw))
				v, err := c.Classify(t.Context(), h, importer.ExtractEnvelope(h, nil), opener(raw, nil))
				if err != nil || v.Spam != want {
					t.Errorf("check %d: %+v %v", i, v, err)
				}
			})
		}
		wg.Wait()
	})

	t.Run("importer", func(t *testing.T) {
		root := t.TempDir()
		drop := filepath.Join(root, "drop")
		if err := os.Mkdir(drop, 0o755); err != nil {
			t.Fatal(err)
		}
		maildir := filepath.Join(root, "mail", "alice")
		im, err := importer.New(importer.Options{
			Accounts: []configs.Account{{Address: "alice@example.com", Maildir: maildir}},
			Domains:  []string{"example.com"},
			Spam:     c, SpamCheckAll: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		deliver := func(name string, b []byte) importer.Result {
			t.Helper()
			res, err := im.Import(context.Background(), dropFile(t, drop, name, b))
			if err != nil || res.Outcome != importer.OutcomeDelivered || len(res.Delivered) != 1 {
				t.Fatalf("Import %s = %+v, %v", name, res, err)
			}
			return res
		}
		count := func(dir string) int {
			t.Helper()
			m, _ := filepath.Glob(filepath.Join(maildir, dir, "*"))
			return len(m)
		}

		if res := deliver("gtube.eml", gtube); res.Delivered[0].Folder != "Junk" || !res.Spam.Spam || res.Spam.Score < 1000 {
			t.Errorf("GTUBE: %+v %+v", res.Delivered[0], res.Spam)
		}
		if res := deliver("clean.eml", clean); res.Delivered[0].Folder != "" || res.Spam.Spam || !res.Spam.Checked {
			t.Errorf("clean: %+v %+v", res.Delivered[0], res.Spam)
		}
		if n, m := count(".Junk/new"), count("new"); n != 1 || m != 1 {
			t.Errorf(".Junk/new holds %d, new/ %d; want 1 and 1", n, m)
		}
		if ids := dovecottest.MessageIDs(t, maildir, "Junk"); !slices.Equal(ids, []string{gtubeID}) {
			t.Errorf("Junk: %q", ids)
		}
		if ids := dovecottest.MessageIDs(t, maildir, "INBOX"); !slices.Equal(ids, []string{cleanID}) {
			t.Errorf("INBOX: %q", ids)
		}
		if b := dovecottest.Fetch(t, maildir, gtubeID); !strings.Contains(string(b), "X-Spam-Flag: YES\nX-Spam-Status: Yes, score=10") {
			t.Errorf("the Junk copy lacks the spam fields:\n%.600s", b)
		}

		// spamd goes away: the message arrives all the same, marked unchecked.
		srv.Stop()
		const laterID = "<later-minutes@example.org>"
		later := []byte(strings.Replace(string(clean), cleanID, laterID, 1))
		if res := deliver("later.eml", later); res.Delivered[0].Folder != "" || res.Spam.Checked {
			t.Errorf("with spamd stopped: %+v %+v", res.Delivered[0], res.Spam)
		}
		if n, m := count(".Junk/new"), count("new"); n != 1 || m != 2 {
			t.Errorf(".Junk/new holds %d, new/ %d; want 1 and 2", n, m)
		}
		ids := dovecottest.MessageIDs(t, maildir, "INBOX")
		slices.Sort(ids)
		if want := []string{cleanID, laterID}; !slices.Equal(ids, want) {
			t.Errorf("INBOX: %q, want %q", ids, want)
		}
		if b := dovecottest.Fetch(t, maildir, laterID); !strings.Contains(string(b), "X-Spam-Status: Unchecked, spam check failed: spamd unreachable\n") {
			t.Errorf("the unchecked copy lacks its mark:\n%.600s", b)
		}
		if evs := logs.events(t, "spam check failed; the message goes to the inbox unchecked"); len(evs) != 1 || evs[0]["stage"] != "connect" {
			t.Errorf("failure events: %v", evs)
		}
	})
	if got := c.Counts(); got.Checked != 10 || got.Spam != 5 || got.BySpamd != 5 || got.Unchecked != 1 {
		t.Errorf("counts %+v", got)
	}
}
