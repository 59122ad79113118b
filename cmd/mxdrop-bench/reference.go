package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The reference deliverer is the latency mode's floor: the least work that a
// deliverer which links, as mxdrop does for these messages, must do for each message,
// in mxdrop's order, on this machine and at this moment. For each file renamed into
// the drop folder, on a goroutine of its own woken by a blocking inotify read, it
// opens the file, hard-links it through the descriptor straight into new/ (the message
// is visible; durable.Batch.Link does the same where the kernel allows it), then
// fdatasyncs it (as mxdrop does before it lets a drop file go; see durable.LinkTemp)
// and removes the drop file.
//
// It does less than mxdrop, on purpose: it reads no header, matches no recipient,
// claims nothing, logs nothing, bounds nothing, and never fsyncs new/ (mxdrop must
// before it lets the drop file go, after the message is visible: that disk work is
// mxdrop's alone in these figures). So its latency is a lower bound, and mxdrop's
// figures over the reference's, measured in turns in the same invocation, say how
// much of mxdrop's latency is mxdrop's own and how much is the machine's: the same
// disk and the same stalls of a shared host reach both. Its CPU per message is the
// same kind of floor (the system calls and context switches of the data sync alone
// are most of it here).
//
// It runs as its own process, as mxdrop does (`mxdrop-bench -mode reference -dir D`
// delivers from D/drop into the Maildir D/mail), so that it shares nothing with the
// benchmark's writer and watcher but the machine.
func referenceDeliver(dir string) error {
	drop, maildir := filepath.Join(dir, "drop"), filepath.Join(dir, "mail")
	if fi, err := os.Stat(filepath.Join(drop, "new")); err == nil && fi.IsDir() {
		drop = filepath.Join(drop, "new") // a drop Maildir (-drop-maildir): files arrive in its new/
	}
	fd, err := watchNames(drop, unix.IN_MOVED_TO)
	if err != nil {
		return err
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		os.Exit(0)
	}()
	var seq atomic.Uint64
	prefix := fmt.Sprintf("reference%d", os.Getpid())
	fail := make(chan error, 1)
	go func() {
		fail <- readNames(fd, func(name string, _ time.Time) bool {
			if strings.HasPrefix(name, ".") {
				return true // the writer's file, not yet renamed into the drop folder
			}
			unique := fmt.Sprintf("%s.%d", prefix, seq.Add(1))
			go func() {
				if err := deliverReference(filepath.Join(drop, name), maildir, unique); err != nil {
					select {
					case fail <- err:
					default:
					}
				}
			}()
			return true
		})
	}()
	return <-fail
}

// deliverReference links the drop file src into maildir under unique and makes its
// data durable.
func deliverReference(src, maildir, unique string) error {
	fd, err := unix.Open(src, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", src, err)
	}
	defer unix.Close(fd)
	// Root may link a descriptor (CAP_DAC_READ_SEARCH), and so may the process that
	// opened the file since Linux 6.10.
	if err := unix.Linkat(fd, "", unix.AT_FDCWD, filepath.Join(maildir, "new", unique), unix.AT_EMPTY_PATH); err != nil {
		return fmt.Errorf("link %s: %w", src, err)
	}
	if err := unix.Fdatasync(fd); err != nil {
		return fmt.Errorf("fdatasync %s: %w", src, err)
	}
	if err := unix.Unlink(src); err != nil {
		return fmt.Errorf("remove %s: %w", src, err)
	}
	return nil
}

// startReference starts the reference deliverer over b.dir as a process of its own.
func (b *bench) startReference() (*daemon, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-mode", "reference", "-dir", b.dir)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &daemon{cmd: cmd}, nil
}
