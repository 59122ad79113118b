package watcher

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// The drop folder is watched with inotify directly rather than through fsnotify, which
// the configuration watcher uses: fsnotify reports a file created in the folder
// (IN_CREATE) and one renamed into it (IN_MOVED_TO) both as Create, and the difference
// decides what a file costs before it is visible. A file renamed in is complete by the
// writers' convention (Postfix, Exim maildir_format, any tmp-then-rename writer) and is
// taken at once; only a file created in place needs the write-lease check (open,
// fstat, F_SETLEASE, close on the event loop), which with the claim was most of what
// made the slowest 1% slow at 2,000 files/s. fsnotify's finer operations are not
// exported (v1.10). The reader is small: one watch, one folder, no recursion.

// dirOp is what happened to an entry of a watched folder, or to the folder.
type dirOp uint8

const (
	opCreate     dirOp = iota + 1 // created in the folder (IN_CREATE)
	opMovedIn                     // renamed into the folder (IN_MOVED_TO)
	opWrite                       // written (IN_MODIFY)
	opFolderGone                  // the folder itself was removed, renamed or unmounted
	opOverflow                    // the kernel's queue overflowed: events were lost
)

func (o dirOp) String() string {
	switch o {
	case opCreate:
		return "create"
	case opMovedIn:
		return "moved-in"
	case opWrite:
		return "write"
	case opFolderGone:
		return "folder-gone"
	case opOverflow:
		return "overflow"
	}
	return fmt.Sprintf("dirOp(%d)", uint8(o))
}

// dirEvent is one event of a watched folder. name is empty for the folder's own
// events (opFolderGone, opOverflow).
type dirEvent struct {
	op   dirOp
	name string
}

// watchMask asks for what the event loop uses, nothing more, since every event wakes
// the reader and the loop: no IN_ATTRIB (a writer's chmod), no opens or closes, and no
// removals or renames away (IN_DELETE, IN_MOVED_FROM). mxdrop's own claim of every file
// is such a rename; a file written in place that goes away before it has settled is
// dropped from the waiting list at the next settle tick, which finds it gone.
// IN_EXCL_UNLINK: nor the writes to a file already removed that a writer still has open.
const watchMask = unix.IN_CREATE | unix.IN_MOVED_TO | unix.IN_MODIFY |
	unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR | unix.IN_EXCL_UNLINK

// errInotifyShort is a read that ends inside an event: the kernel returns whole events
// only, so it means a broken buffer.
var errInotifyShort = errors.New("inotify: short event")

// parseInotify calls emit for each event in buf, one read's worth of struct
// inotify_event records (inotify(7)). Names are bounded by the record's own length,
// which is checked against what was read; NUL padding is dropped.
func parseInotify(buf []byte, emit func(dirEvent)) error {
	for len(buf) > 0 {
		if len(buf) < unix.SizeofInotifyEvent {
			return errInotifyShort
		}
		// struct inotify_event: int wd; uint32 mask; uint32 cookie; uint32 len; name.
		mask := binary.NativeEndian.Uint32(buf[4:8])
		n := binary.NativeEndian.Uint32(buf[12:16])
		if uint64(n) > uint64(len(buf)-unix.SizeofInotifyEvent) {
			return errInotifyShort
		}
		raw := buf[unix.SizeofInotifyEvent : unix.SizeofInotifyEvent+int(n)]
		buf = buf[unix.SizeofInotifyEvent+int(n):]
		for len(raw) > 0 && raw[len(raw)-1] == 0 {
			raw = raw[:len(raw)-1]
		}
		if ev, ok := eventOf(mask, string(raw)); ok {
			emit(ev)
		}
	}
	return nil
}

// eventOf maps one inotify mask to the event the loop acts on. A mask carries one
// event; the order below only matters for masks the kernel does not produce.
func eventOf(mask uint32, name string) (dirEvent, bool) {
	ev := dirEvent{name: name}
	switch {
	case mask&unix.IN_Q_OVERFLOW != 0:
		return dirEvent{op: opOverflow}, true
	case mask&(unix.IN_DELETE_SELF|unix.IN_MOVE_SELF|unix.IN_UNMOUNT|unix.IN_IGNORED) != 0:
		// IN_IGNORED: the watch is gone (folder removed, file system unmounted).
		return dirEvent{op: opFolderGone}, true
	case name == "":
		return dirEvent{}, false // an entry event without an entry: nothing to act on
	case mask&unix.IN_MOVED_TO != 0:
		ev.op = opMovedIn
	case mask&unix.IN_CREATE != 0:
		ev.op = opCreate
	case mask&unix.IN_MODIFY != 0:
		ev.op = opWrite
	default:
		return dirEvent{}, false
	}
	return ev, true
}

// dirWatch is an inotify watch of one folder. Events are delivered on events, in
// order; a read error ends the watch with one error on errs. Once SetTake has given it
// a function, every event is first offered to that function on the reader's
// goroutine, and only those it does not take go on to events.
type dirWatch struct {
	f      *os.File
	events chan dirEvent
	errs   chan error
	done   chan struct{}
	ended  chan struct{}
	closed sync.Once
	take   atomic.Pointer[func(dirEvent) bool]
}

// SetTake has the reader hand each event to take before the events channel: an event
// take returns true for is done with. take runs on the reader's goroutine, one event
// at a time, in the kernel's order, so it must not block; the events it leaves keep
// that order among themselves.
func (w *dirWatch) SetTake(take func(dirEvent) bool) { w.take.Store(&take) }

// inotifyBuffer is one read's buffer: room for 240 events of the longest name
// (16 + 256 bytes), as many as 4,096 of short ones.
const inotifyBuffer = 64 << 10

// newDirWatch watches dir. buffer is how many events may wait for the loop.
func newDirWatch(dir string, buffer int) (*dirWatch, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, watchMask); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("watch %s: %w", dir, err)
	}
	// Non-blocking, so os.File reads it through the runtime's poller: Close wakes a
	// blocked read, and no thread is held while the folder is quiet.
	w := &dirWatch{
		f:      os.NewFile(uintptr(fd), "inotify:"+dir),
		events: make(chan dirEvent, buffer),
		errs:   make(chan error, 1),
		done:   make(chan struct{}),
		ended:  make(chan struct{}),
	}
	go w.read()
	return w, nil
}

func (w *dirWatch) read() {
	defer close(w.ended)
	buf := make([]byte, inotifyBuffer)
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			select {
			case <-w.done:
			default:
				w.errs <- fmt.Errorf("inotify read: %w", err)
			}
			return
		}
		stop := false
		err = parseInotify(buf[:n], func(ev dirEvent) {
			if stop {
				return
			}
			if take := w.take.Load(); take != nil && (*take)(ev) {
				return
			}
			select {
			case w.events <- ev:
			case <-w.done:
				stop = true
			}
		})
		if stop {
			return
		}
		if err != nil {
			w.errs <- err
			return
		}
	}
}

// Close ends the watch and waits for its reader. Closing again does nothing.
func (w *dirWatch) Close() error {
	var err error
	w.closed.Do(func() {
		close(w.done)
		err = w.f.Close()
		<-w.ended
	})
	return err
}
