package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// arrival is a file seen in new/ and the time it was seen.
type arrival struct {
	name string
	at   time.Time
}

// arrivalWatch notes the time each file appears in a folder, for the latency
// measurement. It reads inotify itself, in blocking reads on a goroutine of its own,
// and takes the time as each read returns. fsnotify, which the daemon uses, hands its
// events over a channel from the goroutine that the runtime's network poller wakes:
// two goroutine wake-ups, each waiting for a free P of the benchmark's own process,
// and at 2,000 files/s on two cores that lag reached milliseconds at the 99th
// percentile, counted as mxdrop's latency. A blocking read only needs its thread to
// be woken.
type arrivalWatch struct {
	fd       int
	arrivals []arrival // the watching goroutine's until seen has delivered n values
	seen     chan struct{}
	errs     chan error
}

// watchArrivals starts noting the first n files created in or renamed into dir.
func watchArrivals(dir string, n int) (*arrivalWatch, error) {
	fd, err := watchNames(dir, unix.IN_CREATE|unix.IN_MOVED_TO)
	if err != nil {
		return nil, err
	}
	w := &arrivalWatch{fd: fd, arrivals: make([]arrival, 0, n), seen: make(chan struct{}, n), errs: make(chan error, 1)}
	go w.read(dir, n)
	return w, nil
}

func (w *arrivalWatch) read(dir string, n int) {
	// The descriptor is closed here, after the last arrival: closing it from another
	// goroutine would not end a blocked read.
	defer unix.Close(w.fd)
	err := readNames(w.fd, func(name string, at time.Time) bool {
		w.arrivals = append(w.arrivals, arrival{filepath.Join(dir, name), at})
		w.seen <- struct{}{}
		return len(w.arrivals) < n
	})
	if err != nil {
		w.errs <- err
	}
}

// watchNames returns an inotify descriptor for blocking reads, watching dir for mask.
func watchNames(dir string, mask uint32) (int, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC) // blocking reads
	if err != nil {
		return -1, fmt.Errorf("inotify: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, mask); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("watch %s: %w", dir, err)
	}
	return fd, nil
}

// readNames reads fd in blocking reads and calls fn with the name of each event and
// the time its read returned, until fn returns false or the read fails. A lost event
// (the queue overflowed) is an error.
func readNames(fd int, fn func(name string, at time.Time) bool) error {
	buf := make([]byte, 64<<10)
	for {
		k, err := unix.Read(fd, buf)
		at := time.Now()
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading inotify: %w", err)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= k; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			raw := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
				return errors.New("inotify queue overflow: events lost")
			}
			name := string(raw)
			for len(name) > 0 && name[len(name)-1] == 0 {
				name = name[:len(name)-1]
			}
			if name != "" && !fn(name, at) {
				return nil
			}
		}
	}
}
