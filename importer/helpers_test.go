package importer

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/configs"

	"github.com/mxdrop/mxdrop/internal/testenv"
)

// fixture returns the content of testdata/messages/<name> at the repository root.
func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "messages", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fixtureNames returns the names of every .eml fixture.
func fixtureNames(t testing.TB) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join("..", "testdata", "messages", "*.eml"))
	if err != nil || len(m) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	return m
}

// parse runs ReadHeader over s.
func parse(t testing.TB, s string) *Header {
	t.Helper()
	h, err := ReadHeader(bufio.NewReader(strings.NewReader(s)))
	if err != nil {
		t.Fatalf("ReadHeader: %v", err)
	}
	return h
}

// lf and crlf write a message from lines.
func lf(lines ...string) string   { return strings.Join(lines, "\n") }
func crlf(lines ...string) string { return strings.Join(lines, "\r\n") }

// bytesMessage is a Message over b with a fixed identity.
func bytesMessage(id string, b []byte) Message {
	return Message{
		ID: id, Name: id, Size: int64(len(b)),
		Arrived: time.Unix(1704186901, 0),
		Open: func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(b)), nil
		},
	}
}

// fileMessage is a Message over the file path, identified as a watcher would.
func fileMessage(t testing.TB, path string) Message {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return Message{
		ID:      fi.Name() + "/" + itoa(fi.Size()) + "/" + itoa(fi.ModTime().UnixNano()),
		Name:    fi.Name(),
		Size:    fi.Size(),
		Arrived: fi.ModTime(),
		Open:    func() (io.ReadCloser, error) { return os.Open(path) },
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// account returns a configured account whose Maildir is root/<local part>.
func account(root, addr string, aliases ...string) configs.Account {
	local := addr[:strings.IndexByte(addr, '@')]
	return configs.Account{Address: addr, Aliases: aliases, Maildir: filepath.Join(root, "mail", local)}
}

// newImporter builds an importer or fails the test.
func newImporter(t testing.TB, opts Options) *Importer {
	t.Helper()
	im, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return im
}

// delivered returns the content of every file in maildir/new, in name order.
func delivered(t testing.TB, maildir string) [][]byte {
	t.Helper()
	var out [][]byte
	for _, n := range testenv.ListDir(t, filepath.Join(maildir, "new")) {
		b, err := os.ReadFile(filepath.Join(maildir, "new", n))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// onlyCopy returns the one message in maildir/new and fails unless there is exactly one.
func onlyCopy(t testing.TB, maildir string) []byte {
	t.Helper()
	d := delivered(t, maildir)
	if len(d) != 1 {
		t.Fatalf("%s/new holds %d messages, want 1", maildir, len(d))
	}
	if tmp := testenv.ListDir(t, filepath.Join(maildir, "tmp")); len(tmp) != 0 {
		t.Fatalf("%s/tmp not empty: %v", maildir, tmp)
	}
	return d[0]
}

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }

// skipUnlessCI skips a fault test that needs privileges this run lacks (mounting a
// small tmpfs to fill or make read-only), and fails it under CI=true, where the run is
// root and a missing fault test would hide a broken guarantee.
func skipUnlessCI(t *testing.T, format string, args ...any) {
	t.Helper()
	testenv.Unavailable(t, format, args...)
}
