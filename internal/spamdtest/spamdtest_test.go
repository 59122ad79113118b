package spamdtest

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// running counts the processes of process group pgid that are not zombies, from
// /proc/PID/stat: "pid (comm) state ppid pgrp ...".
func running(t *testing.T, pgid int) int {
	t.Helper()
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // gone meanwhile
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 3 || f[0] == "Z" {
			continue
		}
		if g, _ := strconv.Atoi(f[2]); g == pgid {
			n++
		}
	}
	return n
}

// TestStartStop starts spamd, checks that it answers, and that Stop leaves no process
// of its group behind and can be called again.
func TestStartStop(t *testing.T) {
	s := Start(t)
	if err := ping(s.Addr); err != nil {
		t.Fatalf("PING after Start: %v", err)
	}
	pgid := s.cmd.Process.Pid
	s.Stop()
	// The children may linger as zombies until init reaps them; none may still run.
	deadline := time.Now().Add(5 * time.Second)
	for n := running(t, pgid); n > 0; n = running(t, pgid) {
		if time.Now().After(deadline) {
			t.Fatalf("%d processes of group %d still run after Stop", n, pgid)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := ping(s.Addr); err == nil {
		t.Error("spamd answers PING after Stop")
	}
	s.Stop() // again: nothing to do
	if _, err := os.Stat(s.dir); err != nil {
		t.Errorf("the server's folder is gone before the cleanup: %v", err)
	}
}
