package importer

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mxdrop/mxdrop/importer/durable"
)

// Quota is a Maildir++ quota as Courier's maildir/README.maildirquota specifies it and
// Dovecot's maildir quota backend reads it: the most bytes and messages a Maildir (with
// all its folders) may hold; 0 means no limit of that kind.
type Quota struct {
	Bytes    int64
	Messages int64
}

// IsZero reports whether q limits nothing.
func (q Quota) IsZero() bool { return q.Bytes <= 0 && q.Messages <= 0 }

// definition is the first line of maildirsize: "10000000S,1000C".
func (q Quota) definition() string {
	var parts []string
	if q.Bytes > 0 {
		parts = append(parts, strconv.FormatInt(q.Bytes, 10)+"S")
	}
	if q.Messages > 0 {
		parts = append(parts, strconv.FormatInt(q.Messages, 10)+"C")
	}
	return strings.Join(parts, ",")
}

// exceeded reports whether adding a message of size bytes to a Maildir holding used
// bytes and count messages goes over q.
func (q Quota) exceeded(used, count, size int64) bool {
	return q.Bytes > 0 && used+size > q.Bytes || q.Messages > 0 && count+1 > q.Messages
}

// ErrQuotaExceeded is returned by DeliverQuota when the message does not fit the quota.
var ErrQuotaExceeded = errors.New("maildir++ quota exceeded")

// Usage is what a maildirsize file says a Maildir holds.
type Usage struct {
	Bytes, Messages int64
}

// Maildir++ limits from README.maildirquota: a maildirsize file larger than this is
// recalculated rather than summed, and one older than staleAfter is recalculated
// before a delivery is refused on its word.
const (
	maxMaildirsize = 5120
	staleAfter     = 15 * time.Minute
)

// QuotaUsage returns the Maildir's use as its maildirsize file says, or as counted
// when the file is missing, too large, or defines another quota than q. It writes
// nothing: `mxdrop status` may run as another user than the daemon.
func (m Maildir) QuotaUsage(q Quota) (Usage, error) {
	b, err := os.ReadFile(filepath.Join(string(m), "maildirsize"))
	if err == nil && len(b) <= maxMaildirsize {
		if def, u, ok := parseMaildirsize(b); ok && def == q.definition() {
			return u, nil
		}
	}
	return m.count()
}

// DeliverQuota is Deliver into m under the quota q kept in root's maildirsize (root is
// the account's Maildir, m the folder the copy goes to: root itself or a Maildir++
// folder). The copy is written and fsynced in tmp/ first; then, holding an flock on
// maildirsize, the quota is checked with the copy's real size, the copy is renamed to
// new/name,S=<size> and "<size> 1" is appended to maildirsize. A copy that does not fit
// is removed and ErrQuotaExceeded returned. The flock serialises concurrent deliveries
// of every mxdrop worker and instance into the account, so the quota is never overrun
// by them; other writers (the mail server) follow Maildir++'s append rules. A crash
// between the rename and the append leaves maildirsize one message short until it is
// next recalculated: Maildir++ quotas are advisory by design.
func (m Maildir) DeliverQuota(root Maildir, name string, write durable.WriteFunc, batch *durable.Batch, q Quota) (string, error) {
	return m.deliverQuota(root, name, func(tmp string) error { return durable.WriteTemp(tmp, 0o600, write) }, batch, q)
}

// LinkQuota is DeliverQuota for a copy that is the file src of size bytes as it is:
// src is hard linked into tmp/ (durable.LinkTemp) instead of written. An error other
// than ErrQuotaExceeded means nothing was delivered and a written copy may be tried.
func (m Maildir) LinkQuota(root Maildir, name string, src LinkSource, size int64, batch *durable.Batch, q Quota) (string, error) {
	return m.deliverQuota(root, name, func(tmp string) error { return durable.LinkTemp(src.Path, src.File, tmp, size, batch) }, batch, q)
}

// deliverQuota is DeliverQuota with the durable file in tmp/ made by fill.
func (m Maildir) deliverQuota(root Maildir, name string, fill func(tmp string) error, batch *durable.Batch, q Quota) (string, error) {
	tmp := filepath.Join(string(m), "tmp", name)
	if err := fill(tmp); err != nil {
		return "", err
	}
	fi, err := os.Stat(tmp)
	if err != nil {
		os.Remove(tmp)
		return "", err
	}
	size := fi.Size()
	f, err := root.lockQuota()
	if err != nil {
		os.Remove(tmp)
		return "", err
	}
	defer f.Close()
	u, mtime, err := root.quotaRead(f, q)
	if err == nil && q.exceeded(u.Bytes, u.Messages, size) && time.Since(mtime) > staleAfter {
		// The file's sum may be stale (mail deleted by a reader that does not keep
		// maildirsize): count again before refusing.
		u, err = root.recalc(f, q)
	}
	if err != nil {
		os.Remove(tmp)
		return "", err
	}
	if quotaWindow != nil {
		quotaWindow()
	}
	if q.exceeded(u.Bytes, u.Messages, size) {
		os.Remove(tmp)
		return "", fmt.Errorf("%w: %d of %d bytes, %d of %d messages used, message of %d bytes", ErrQuotaExceeded, u.Bytes, q.Bytes, u.Messages, q.Messages, size)
	}
	newDir := filepath.Join(string(m), "new")
	final := name + ",S=" + strconv.FormatInt(size, 10)
	if err := os.Rename(tmp, filepath.Join(newDir, final)); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("rename into place: %w", err)
	}
	// One short line written with O_APPEND: atomic for every appender (Maildir++).
	if _, err := f.WriteString(fmt.Sprintf("%d 1\n", size)); err != nil {
		return "", fmt.Errorf("update maildirsize: %w", err)
	}
	if err := batch.SyncDir(newDir); err != nil {
		return "", err
	}
	return filepath.Join(newDir, final), nil
}

// quotaWindow, when set by a test, runs between the quota check and the append: it
// widens the window that the flock must protect.
var quotaWindow func()

// lockQuota opens root's maildirsize for appending (creating it empty when missing) and
// takes an exclusive flock on it. Closing the file releases the lock. When another
// writer replaced the file while we waited, the lock is taken again on the new one.
func (m Maildir) lockQuota() (*os.File, error) {
	p := filepath.Join(string(m), "maildirsize")
	for range 20 {
		f, err := os.OpenFile(p, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("open maildirsize: %w", err)
		}
		if err := durable.LockOpen(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("lock maildirsize: %w", err)
		}
		held, err1 := f.Stat()
		now, err2 := os.Stat(p)
		if err1 == nil && err2 == nil && os.SameFile(held, now) {
			return f, nil
		}
		f.Close()
	}
	return nil, fmt.Errorf("lock maildirsize: the file keeps being replaced")
}

// quotaRead sums the locked maildirsize f, recalculating it when it is empty, larger
// than maxMaildirsize, unreadable, or defines another quota than q. It returns the
// file's modification time (the last append).
func (m Maildir) quotaRead(f *os.File, q Quota) (Usage, time.Time, error) {
	fi, err := f.Stat()
	if err != nil {
		return Usage{}, time.Time{}, err
	}
	if fi.Size() > 0 && fi.Size() <= maxMaildirsize {
		buf := make([]byte, fi.Size())
		if _, err := f.ReadAt(buf, 0); err == nil || err == io.EOF {
			if def, u, ok := parseMaildirsize(buf); ok && def == q.definition() {
				return u, fi.ModTime(), nil
			}
		}
	}
	u, err := m.recalc(f, q)
	return u, time.Now(), err
}

// parseMaildirsize reads the definition line and sums the "<bytes> <count>" lines that
// follow (negative for removals). ok is false for a file that is not maildirsize.
func parseMaildirsize(b []byte) (def string, u Usage, ok bool) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	if !sc.Scan() {
		return "", u, false
	}
	def = strings.TrimSpace(sc.Text())
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return "", u, false // a line torn by a crash: recalculate
		}
		s, err1 := strconv.ParseInt(f[0], 10, 64)
		c, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 != nil || err2 != nil {
			return "", u, false
		}
		u.Bytes += s
		u.Messages += c
	}
	return def, u, true
}

// recalc counts the Maildir (see count) and rewrites the locked maildirsize f as the
// definition and one line with the total.
func (m Maildir) recalc(f *os.File, q Quota) (Usage, error) {
	u, err := m.count()
	if err != nil {
		return u, err
	}
	if err := f.Truncate(0); err != nil {
		return u, fmt.Errorf("rewrite maildirsize: %w", err)
	}
	if _, err := fmt.Fprintf(f, "%s\n%d %d\n", q.definition(), u.Bytes, u.Messages); err != nil {
		return u, fmt.Errorf("rewrite maildirsize: %w", err)
	}
	return u, nil
}

// count adds up the messages of the Maildir and its Maildir++ folders (new/ and cur/;
// a file's size from its ",S=" field, else from the file system).
func (m Maildir) count() (Usage, error) {
	var u Usage
	folders := []string{string(m)}
	if ents, err := os.ReadDir(string(m)); err == nil {
		for _, e := range ents {
			if n := e.Name(); e.IsDir() && strings.HasPrefix(n, ".") && n != "." && n != ".." {
				folders = append(folders, filepath.Join(string(m), n))
			}
		}
	}
	for _, dir := range folders {
		for _, sub := range []string{"new", "cur"} {
			if err := countFolder(filepath.Join(dir, sub), &u); err != nil {
				return u, err
			}
		}
	}
	return u, nil
}

// countFolder adds the messages of one new/ or cur/ folder to u, reading it in chunks.
func countFolder(dir string, u *Usage) error {
	d, err := os.Open(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("count %s: %w", dir, err)
	}
	defer d.Close()
	for {
		names, err := d.Readdirnames(1024)
		for _, n := range names {
			if strings.HasPrefix(n, ".") {
				continue
			}
			if s, ok := sizeField(n); ok {
				u.Bytes += s
			} else if fi, err := os.Lstat(filepath.Join(dir, n)); err == nil {
				u.Bytes += fi.Size()
			} else {
				continue // removed while we counted
			}
			u.Messages++
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("count %s: %w", dir, err)
		}
	}
}

// sizeField returns the S=<size> field of a Maildir++ file name ("name,S=1234:2,S").
func sizeField(n string) (int64, bool) {
	if i := strings.IndexByte(n, ':'); i >= 0 {
		n = n[:i]
	}
	for _, f := range strings.Split(n, ",")[1:] {
		if v, ok := strings.CutPrefix(f, "S="); ok {
			s, err := strconv.ParseInt(v, 10, 64)
			return s, err == nil && s >= 0
		}
	}
	return 0, false
}
