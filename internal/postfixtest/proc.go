package postfixtest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// stop stops the instance as `postfix stop` does, with SIGTERM to the master of the
// pid file, which stops its children. It then waits, polling every few milliseconds
// rather than postfix-script's whole seconds, until the master and every other process
// of this instance are gone, those exiting included, so its port refuses connections;
// what is still there at the deadline is killed. Only processes of this instance are ever signalled:
// those whose environment names its config_directory (Postfix passes MAIL_CONFIG to
// everything it runs, see export_environment), a folder no other instance has.
func (s *Server) stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.running {
		return nil
	}
	began := time.Now()
	defer func() {
		if d := time.Since(began); d > time.Second {
			s.t.Logf("postfixtest: slow stop on %s: %v", s.Addr(), d.Round(time.Millisecond))
		}
	}()
	master, err := s.masterPID()
	switch {
	case err != nil:
		s.t.Logf("postfixtest: no master pid: %v", err)
	case !s.isInstance(master):
		s.t.Logf("postfixtest: master %d of the pid file is not running", master)
	default:
		if err := syscall.Kill(master, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("stop master %d: %w", master, err)
		}
	}
	if err := s.waitGone(master, stopTimeout); err != nil {
		s.t.Logf("postfixtest: %v; killing what is left", err)
		if err := s.killInstance(); err != nil {
			return err
		}
		if err := s.waitGone(master, 2*time.Second); err != nil {
			return err
		}
	}
	s.running = false
	return nil
}

// waitGone waits until the master process and every process of the instance are gone.
func (s *Server) waitGone(master int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pids := s.instancePIDs()
		// A process that is exiting has no environment to recognise it by any more,
		// but may not have closed its files (the listening socket) yet: it is still
		// in the master's process group (master calls setsid).
		if master > 0 {
			pids = append(pids, groupMembers(master)...)
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v of the instance (master %d) still running after %v", pids, master, timeout)
		}
		time.Sleep(pollInterval)
	}
}

// killInstance sends SIGKILL to every process of the instance.
func (s *Server) killInstance() error {
	var errs []error
	for _, pid := range s.instancePIDs() {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("kill %d: %w", pid, err))
		}
	}
	return errors.Join(errs...)
}

// masterPID reads the master's pid file, queue_directory/pid/master.pid.
func (s *Server) masterPID() (int, error) {
	b, err := os.ReadFile(filepath.Join(s.queueDir, "pid", "master.pid"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// instancePIDs returns the processes whose environment has this instance's MAIL_CONFIG.
func (s *Server) instancePIDs() []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if s.isInstance(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// isInstance reports whether pid is a live process of this instance. A process that
// has exited (or a zombie, whose environment reads empty) is not.
func (s *Server) isInstance(pid int) bool {
	env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return false
	}
	want := []byte("MAIL_CONFIG=" + s.configDir + "\x00")
	return bytes.HasPrefix(env, want) || bytes.Contains(env, append([]byte{0}, want...))
}

// groupMembers returns the processes of process group pgid that have not exited:
// zombies (state Z) and dead ones (X) are left out, they hold no files any more.
func groupMembers(pgid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// "pid (comm) state ppid pgrp ...": comm may hold anything, even ")".
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if g, err := strconv.Atoi(f[2]); err == nil && g == pgid {
			pids = append(pids, pid)
		}
	}
	return pids
}
