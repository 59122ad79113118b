package importer

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/configs"
)

// fakeClassifier calls everything with "viagra" in it spam, and fails when told to.
type fakeClassifier struct {
	fail  bool
	calls int
}

func (f *fakeClassifier) Classify(ctx context.Context, h *Header, env Envelope, open func() (io.ReadCloser, error)) (Verdict, error) {
	f.calls++
	if f.fail {
		return Verdict{}, errors.New("spamd unreachable")
	}
	rc, err := open()
	if err != nil {
		return Verdict{}, err
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	if strings.Contains(string(b), "viagra") {
		return Verdict{Spam: true, Score: 9.5, Reason: "word viagra"}, nil
	}
	return Verdict{Score: 0.5}, nil
}

func TestSpamRouting(t *testing.T) {
	root := t.TempDir()
	accounts := []configs.Account{
		{Address: "alice@example.com", Maildir: filepath.Join(root, "alice"), SpamCheck: true},
		{Address: "bob@example.com", Maildir: filepath.Join(root, "bob")},
	}
	body := func(word string) []byte {
		return []byte("Return-Path: <s@remote.test>\nEnvelope-to: alice@example.com, bob@example.com\nSubject: hi\nMessage-ID: <" + word + "@t>\n\nbuy " + word + " now\n")
	}
	read := func(t *testing.T, dir string) string {
		t.Helper()
		entries, _ := os.ReadDir(dir)
		if len(entries) != 1 {
			t.Fatalf("%s holds %d messages, want 1", dir, len(entries))
		}
		b, _ := os.ReadFile(filepath.Join(dir, entries[0].Name()))
		return string(b)
	}
	for _, tc := range []struct {
		name       string
		word       string
		fail       bool
		aliceDir   string
		wantHeader string
	}{
		{"spam to Junk", "viagra", false, ".Junk/new", "X-Spam-Flag: YES\nX-Spam-Status: Yes, score=9.5 reason=word viagra\n"},
		{"clean to inbox", "apples", false, "new", "X-Spam-Status: No, score=0.5\n"},
		{"unchecked to inbox", "viagra", true, "new", "X-Spam-Status: Unchecked, spam check failed: spamd unreachable\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, a := range accounts {
				os.RemoveAll(a.Maildir)
				initialized.Delete(Maildir(a.Maildir))
				initialized.Delete(folderDone(Maildir(filepath.Join(a.Maildir, ".Junk"))))
			}
			cl := &fakeClassifier{fail: tc.fail}
			im, err := New(Options{Accounts: accounts, Domains: []string{"example.com"}, Spam: cl})
			if err != nil {
				t.Fatal(err)
			}
			data := body(tc.word)
			res, err := im.Import(context.Background(), Message{ID: tc.name, Size: int64(len(data)), Arrived: time.Now(),
				Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(string(data))), nil }})
			if err != nil {
				t.Fatal(err)
			}
			if cl.calls != 1 {
				t.Errorf("classifier called %d times, want 1", cl.calls)
			}
			a := read(t, filepath.Join(accounts[0].Maildir, tc.aliceDir))
			if !strings.Contains(a, tc.wantHeader) {
				t.Errorf("alice's copy lacks %q:\n%s", tc.wantHeader, a)
			}
			if tc.aliceDir != "new" {
				if _, err := os.Stat(filepath.Join(accounts[0].Maildir, ".Junk", "maildirfolder")); err != nil {
					t.Errorf("Junk has no maildirfolder marker: %v", err)
				}
			}
			// bob has no spam_check: inbox, untouched by the verdict.
			if b := read(t, filepath.Join(accounts[1].Maildir, "new")); strings.Contains(b, "X-Spam") {
				t.Errorf("bob's copy was marked:\n%s", b)
			}
			if res.Spam == nil || res.Spam.Checked == tc.fail {
				t.Errorf("Result.Spam = %+v", res.Spam)
			}
		})
	}
}
