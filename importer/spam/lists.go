package spam

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"unicode/utf8"
)

// maxListLine bounds one line of a list file.
const maxListLine = 64 << 10

// loadList adds the inline entries (configuration key key, e.g. "spam.words") and the
// entries of the file at path (key fileKey; "" = none) with add. Errors name the key and
// index of an inline entry, or the file and line: "/etc/mxdrop/words:3:
// spam.words_file: "!!" has no letters or digits".
func loadList(key string, inline []string, fileKey, path string, add func(string) error) error {
	for i, e := range inline {
		if strings.TrimSpace(e) == "" {
			return fmt.Errorf("%s[%d]: is empty", key, i)
		}
		if err := add(e); err != nil {
			return fmt.Errorf("%s[%d]: %w", key, i, err)
		}
	}
	if path == "" {
		return nil
	}
	return readListFile(path, fileKey, func(line int, e string) error {
		if err := add(e); err != nil {
			return fmt.Errorf("%s:%d: %s: %w", path, line, fileKey, err)
		}
		return nil
	})
}

// readListFile calls fn with each entry of the list file at path (configuration key key)
// and its line number: one entry a
// line, white space around it removed; blank lines and comments are skipped. A comment
// starts with '#' at the beginning of a line or after white space, and runs to the end
// of the line. The file must be UTF-8 (a leading byte order mark is allowed).
func readListFile(path, key string, fn func(line int, entry string) error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w", key, err) // *fs.PathError names the file
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 4096), maxListLine)
	n := 0
	for sc.Scan() {
		n++
		b := sc.Bytes()
		if n == 1 {
			b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))
		}
		if !utf8.Valid(b) {
			return fmt.Errorf("%s:%d: %s: not UTF-8", path, n, key)
		}
		e := string(b)
		if i := commentStart(e); i >= 0 {
			e = e[:i]
		}
		if e = strings.TrimSpace(e); e == "" {
			continue
		}
		if err := fn(n, e); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("%s:%d: %s: line longer than %d bytes", path, n+1, key, maxListLine)
		}
		return fmt.Errorf("%s: read %s: %w", key, path, err)
	}
	return nil
}

// commentStart returns the index of the '#' that starts a comment in line, or -1.
func commentStart(line string) int {
	for i := 0; i < len(line); i++ {
		if line[i] == '#' && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t') {
			return i
		}
	}
	return -1
}
