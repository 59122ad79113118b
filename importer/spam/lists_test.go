package spam

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestListFiles reads words_file and blocked_senders_file with comments, blank lines, a
// byte order mark and CRLF line endings, together with the inline lists.
func TestListFiles(t *testing.T) {
	words := writeFile(t, "words", "\ufeff# words that mark spam\r\n\r\nlottery winner\r\n  casino  # trailing comment\r\nC#\r\n")
	senders := writeFile(t, "senders", "# blocked\n@junk.example\nspam@bad.example # known spammer\n\n")
	c, _ := newChecker(t, configs.Spam{
		Words: []string{"viagra"}, WordsFile: words,
		BlockedSenders: []string{"@inline.example"}, BlockedSendersFile: senders,
	})
	if c.words.nEntries != 4 {
		t.Errorf("%d words, want 4 (viagra, lottery winner, casino, c)", c.words.nEntries)
	}
	for raw, want := range map[string]string{
		lf("From: a@ok.example", "Subject: LOTTERY WINNER", "", "x", ""): `word "lottery winner" in subject`,
		lf("From: a@ok.example", "Subject: x", "", "casino", ""):         `word "casino" in body`,
		lf("From: a@ok.example", "Subject: x", "", "viagra", ""):         `word "viagra" in body`,
		lf("From: a@junk.example", "Subject: x", "", "x", ""):            "blocked sender a@junk.example (From, @junk.example)",
		lf("From: spam@bad.example", "Subject: x", "", "x", ""):          "blocked sender spam@bad.example (From)",
		lf("From: a@inline.example", "Subject: x", "", "x", ""):          "blocked sender a@inline.example (From, @inline.example)",
		lf("From: a@ok.example", "Subject: x", "", "# comment", ""):      "",
	} {
		v, err := classify(t, c, raw, &importer.Envelope{})
		if err != nil || v.Reason != want {
			t.Errorf("%q: %+v %v, want %q", raw, v, err, want)
		}
	}
}

// TestListErrors checks that errors name the key and entry, or the file and line.
func TestListErrors(t *testing.T) {
	badWords := writeFile(t, "words", "# ok\nviagra\n  !!!  \n")
	badSenders := writeFile(t, "senders", "@ok.example\nnot-an-address\n")
	badDomain := writeFile(t, "domains", "@\n")
	notUTF8 := writeFile(t, "latin1", "viagra\ngr\xf6\xdfe\n")
	long := writeFile(t, "long", "viagra\n"+strings.Repeat("x", maxListLine+1)+"\n")
	missing := filepath.Join(t.TempDir(), "missing")
	for _, tc := range []struct {
		name string
		cfg  configs.Spam
		want string
	}{
		{"word file", configs.Spam{WordsFile: badWords}, badWords + `:3: spam.words_file: "!!!" has no letters or digits`},
		{"sender file", configs.Spam{BlockedSendersFile: badSenders}, badSenders + `:2: spam.blocked_senders_file: "not-an-address" is not an address or @domain`},
		{"sender file, empty domain", configs.Spam{BlockedSendersFile: badDomain}, badDomain + `:1: spam.blocked_senders_file: "@" is not a domain`},
		{"not UTF-8", configs.Spam{WordsFile: notUTF8}, notUTF8 + ":2: spam.words_file: not UTF-8"},
		{"long line", configs.Spam{WordsFile: long}, long + ":2: spam.words_file: line longer than 65536 bytes"},
		{"missing file", configs.Spam{BlockedSendersFile: missing}, "spam.blocked_senders_file: open " + missing + ": no such file or directory"},
		{"inline word", configs.Spam{Words: []string{"ok", "--"}}, `spam.words[1]: "--" has no letters or digits`},
		{"inline empty", configs.Spam{Words: []string{" "}}, `spam.words[0]: is empty`},
		{"inline sender", configs.Spam{BlockedSenders: []string{"a@b.example", "a b@c"}}, `spam.blocked_senders[1]: "a b@c" is not an address or @domain`},
		{"wildcard domain", configs.Spam{BlockedSenders: []string{"@*.bad.example"}}, `spam.blocked_senders[0]: "@*.bad.example" is not a domain`},
		{"domain without @", configs.Spam{BlockedSenders: []string{"*.bad.example"}}, `spam.blocked_senders[0]: "*.bad.example" is not an address or @domain (a whole domain is written @bad.example)`},
		{"overlong word", configs.Spam{Words: []string{strings.Repeat("a", maxWordBytes+1)}}, "has a word longer than 128 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(tc.cfg, zerolog.Nop())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New = %v, %v; want an error containing %q", c, err, tc.want)
			}
		})
	}
}

// TestReload checks that a new Checker reads the files again, and the old one is
// unchanged: a configuration reload picks up edited lists.
func TestReload(t *testing.T) {
	path := writeFile(t, "words", "viagra\n")
	cfg := configs.Spam{WordsFile: path}
	old, _ := newChecker(t, cfg)
	if err := os.WriteFile(path, []byte("casino\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	reloaded, _ := newChecker(t, cfg)
	raw := lf("From: a@ok.example", "Subject: casino", "", "x", "")
	if v, _ := classify(t, old, raw, &importer.Envelope{}); v.Spam {
		t.Errorf("the old Checker changed: %+v", v)
	}
	if v, _ := classify(t, reloaded, raw, &importer.Envelope{}); !v.Spam {
		t.Errorf("the new Checker did not read the edited file: %+v", v)
	}
}
