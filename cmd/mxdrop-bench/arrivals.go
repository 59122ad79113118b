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
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC) // blocking reads
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MOVED_TO); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("watch %s: %w", dir, err)
	}
	w := &arrivalWatch{fd: fd, arrivals: make([]arrival, 0, n), seen: make(chan struct{}, n), errs: make(chan error, 1)}
	go w.read(dir, n)
	return w, nil
}

func (w *arrivalWatch) read(dir string, n int) {
	// The descriptor is closed here, after the last arrival: closing it from another
	// goroutine would not end a blocked read.
	defer unix.Close(w.fd)
	buf := make([]byte, 64<<10)
	for len(w.arrivals) < n {
		k, err := unix.Read(w.fd, buf)
		at := time.Now()
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			w.errs <- fmt.Errorf("reading inotify: %w", err)
			return
		}
		for off := 0; off+unix.SizeofInotifyEvent <= k; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			raw := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
				w.errs <- errors.New("inotify queue overflow: arrivals lost")
				return
			}
			name := string(raw)
			for len(name) > 0 && name[len(name)-1] == 0 {
				name = name[:len(name)-1]
			}
			if name == "" || len(w.arrivals) == n {
				continue
			}
			w.arrivals = append(w.arrivals, arrival{filepath.Join(dir, name), at})
			w.seen <- struct{}{}
		}
	}
}
