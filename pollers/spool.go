package pollers

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/mxdrop/mxdrop/importer/durable"
)

// Spool limits. A batch's messages are held in memory while each is at most
// spoolMemMax bytes and all of them together at most spoolMemBudget; the rest spill
// into files. Memory saves a file creation, a write and an unlink per message, which
// on a journalling file system cost about as much as the delivery itself.
const (
	spoolMemMax    = 1 << 20
	spoolMemBudget = 16 << 20
)

// spool holds a batch's fetched messages while they are imported: the importer reads a
// message more than once (its header, then once per delivery). Nothing in it is
// fsynced: a crash before a message's import is durable fetches it again. Files spill
// into dir, which clean empties at the start of a cycle. Writers are used by one
// goroutine at a time; release may be called from import workers.
type spool struct {
	dir string
	// limit is max_message_size (0: none). A writer refuses the byte that takes its
	// message past it, whatever size the server advertised: a server's word bounds
	// neither memory nor disk.
	limit int64

	mu    sync.Mutex
	n     int      // spill files created
	inMem int64    // bytes of memory held by unreleased messages and open writers
	free  [][]byte // buffers of released messages, for reuse
}

// spooled is a message downloaded completely: in memory (data) or in a spill file
// (path).
type spooled struct {
	m    remoteMsg
	data []byte
	path string
	size int64
}

// open returns a reader of the message from its first byte.
func (g spooled) open() (io.ReadCloser, error) {
	if g.path != "" {
		return os.Open(g.path)
	}
	return io.NopCloser(bytes.NewReader(g.data)), nil
}

// newSpool returns the spool of dir, whose writers refuse a message past limit bytes
// (0: no limit).
func newSpool(dir string, limit int64) (*spool, error) {
	if err := durable.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	return &spool{dir: dir, limit: limit}, nil
}

// tooLargeError is a message refused by the spool's limit: announced larger than it
// (an IMAP literal's size, exact by RFC 3501 section 4.3), or grown past it as it
// arrived (a POP3 RETR, whose LIST size is only the server's word). What was received
// is discarded; the message is never delivered in part.
type tooLargeError struct {
	Key       string // the message's state key
	Limit     int64  // max_message_size
	Announced int64  // the size announced for the transfer; -1 when none was
	Received  int64  // bytes received when the transfer was refused
}

func (e *tooLargeError) Error() string {
	if e.Received == 0 && e.Announced > e.Limit {
		return fmt.Sprintf("message %s announced at %d bytes, larger than max_message_size %d", e.Key, e.Announced, e.Limit)
	}
	return fmt.Sprintf("message %s grew past max_message_size %d: %d bytes received", e.Key, e.Limit, e.Received)
}

// asTooLarge returns the tooLargeError in err's chain, or nil.
func asTooLarge(err error) *tooLargeError {
	var tl *tooLargeError
	if errors.As(err, &tl) {
		return tl
	}
	return nil
}

// refuse returns a *tooLargeError when the transfer of m announces more than the
// limit (m.Size is the announced size), so that it is refused before a byte is read.
func (s *spool) refuse(m remoteMsg) error {
	if s.limit > 0 && m.Size > s.limit {
		return &tooLargeError{Key: m.Key, Limit: s.limit, Announced: m.Size}
	}
	return nil
}

// clean removes every spill file: the leftovers of an interrupted cycle.
func (s *spool) clean() error {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.Remove(filepath.Join(s.dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// create returns a writer for m; m.Size, when known, sizes its memory buffer.
func (s *spool) create(m remoteMsg) *spoolWriter {
	w := &spoolWriter{sp: s, m: m}
	if m.Size > 0 && m.Size <= spoolMemMax {
		w.buf, _ = s.alloc(int(m.Size))
	}
	return w
}

// Buffers of at most spoolReuseMax bytes are kept for reuse, at most spoolReuseCount
// of them: a batch of typical messages then allocates nothing.
const (
	spoolReuseMax   = 256 << 10
	spoolReuseCount = batchMaxMessages
)

// alloc returns an empty buffer with room for n bytes and charges its capacity to the
// memory budget; nil when the budget does not allow it.
func (s *spool) alloc(n int) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.free) - 1; i >= 0; i-- {
		if b := s.free[i]; cap(b) >= n {
			if s.inMem+int64(cap(b)) > spoolMemBudget {
				return nil, false
			}
			s.free = append(s.free[:i], s.free[i+1:]...)
			s.inMem += int64(cap(b))
			return b[:0], true
		}
	}
	if s.inMem+int64(n) > spoolMemBudget {
		return nil, false
	}
	s.inMem += int64(n)
	return make([]byte, 0, n), true
}

// freeBuf gives back a buffer alloc returned.
func (s *spool) freeBuf(b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inMem -= int64(cap(b))
	if cap(b) <= spoolReuseMax && len(s.free) < spoolReuseCount {
		s.free = append(s.free, b[:0])
	}
}

// release gives back what g holds: its memory, or its spill file.
func (s *spool) release(g spooled) {
	switch {
	case g.path != "":
		os.Remove(g.path)
	case cap(g.data) > 0:
		s.freeBuf(g.data)
	}
}

// spoolWriter receives one message. It writes into memory while the message fits
// spoolMemMax and the budget, and moves everything into a spill file otherwise. A
// write that would take the message past the spool's limit fails with a
// *tooLargeError, and so does every write after it.
type spoolWriter struct {
	sp  *spool
	m   remoteMsg
	buf []byte // from sp.alloc; nil once spilled
	f   *os.File
	n   int64
	err error
}

func (w *spoolWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if lim := w.sp.limit; lim > 0 && w.n+int64(len(p)) > lim {
		w.err = &tooLargeError{Key: w.m.Key, Limit: lim, Announced: w.m.Size, Received: w.n + int64(len(p))}
		return 0, w.err
	}
	if w.f == nil {
		need := len(w.buf) + len(p)
		if need <= cap(w.buf) {
			w.buf = append(w.buf, p...)
			w.n += int64(len(p))
			return len(p), nil
		}
		if need <= spoolMemMax {
			if nb, ok := w.sp.alloc(min(max(need, 2*cap(w.buf), 4096), spoolMemMax)); ok {
				nb = append(append(nb, w.buf...), p...)
				w.dropBuf()
				w.buf = nb
				w.n += int64(len(p))
				return len(p), nil
			}
		}
		if err := w.spill(); err != nil {
			w.err = err
			return 0, err
		}
	}
	n, err := w.f.Write(p)
	w.n += int64(n)
	if err != nil {
		w.err = fmt.Errorf("spool: %w", err)
		return n, w.err
	}
	return n, nil
}

// spill moves what was written so far into a new file and continues there.
func (w *spoolWriter) spill() error {
	w.sp.mu.Lock()
	w.sp.n++
	name := filepath.Join(w.sp.dir, strconv.Itoa(w.sp.n)+".eml")
	w.sp.mu.Unlock()
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("create spool file: %w", err)
	}
	if _, err := f.Write(w.buf); err != nil {
		f.Close()
		os.Remove(name)
		return fmt.Errorf("spool: %w", err)
	}
	w.f = f
	w.dropBuf()
	return nil
}

func (w *spoolWriter) dropBuf() {
	if w.buf != nil {
		w.sp.freeBuf(w.buf)
		w.buf = nil
	}
}

// finish returns the complete message. The writer must not be used afterwards.
func (w *spoolWriter) finish() (spooled, error) {
	if w.err != nil {
		w.discard()
		return spooled{}, w.err
	}
	if w.f != nil {
		name := w.f.Name()
		err := w.f.Close()
		w.f = nil
		if err != nil {
			os.Remove(name)
			return spooled{}, fmt.Errorf("spool: %w", err)
		}
		return spooled{m: w.m, path: name, size: w.n}, nil
	}
	data := w.buf
	if data == nil {
		data = []byte{} // an empty message: not spilled, nothing held
	}
	w.buf = nil
	return spooled{m: w.m, data: data, size: w.n}, nil
}

// discard drops an incomplete message.
func (w *spoolWriter) discard() {
	if w.f != nil {
		name := w.f.Name()
		w.f.Close()
		os.Remove(name)
		w.f = nil
	}
	w.dropBuf()
}
