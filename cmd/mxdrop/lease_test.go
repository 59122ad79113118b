package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/internal/testenv"
)

// TestLeaseRefusedWarned runs mxdrop as nobody (65534) over drop files that a writer
// running as root writes in place: one there before mxdrop starts (found by the first
// scan) and one arriving while it runs (found by its event). Not owning them and without
// CAP_LEASE, mxdrop cannot take the read lease that tells whether a writer still has a
// file open (EACCES), and falls back to the settle time: it says so once for the folder,
// at warn level, with what it needs.
func TestLeaseRefusedWarned(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the test runs mxdrop as nobody and writes as root: run it as root")
	}
	const nobody = 65534
	// nobody must reach the installation and run a copy of the binary: the folder is
	// one other users can pass through, wherever the checkout and TMPDIR are.
	e := newEnvAt(t, testenv.ReachableDir(t, "mxdrop-lease-"), "")
	bin := filepath.Join(e.root, "mxdrop")
	b, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	filepath.Walk(e.root, func(p string, _ os.FileInfo, err error) error {
		if err == nil {
			err = os.Lchown(p, nobody, nobody)
		}
		return err
	})
	writeInPlace := func(name, id string) {
		f, err := os.OpenFile(filepath.Join(e.drop, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		data := msg(id, "X-Original-To", "alice@example.com")
		f.Write(data[:len(data)/2])
		time.Sleep(50 * time.Millisecond)
		f.Write(data[len(data)/2:])
		f.Close()
	}
	writeInPlace("early.eml", "early@test")
	time.Sleep(300 * time.Millisecond) // older than settle: the scan asks for a lease
	cmd := exec.Command(bin, "--config", e.cfgPath, "run")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}}
	p := startProc(t, cmd)
	p.waitLog(t, "mxdrop started", 10*time.Second)
	waitUntil(t, "the early file delivered", 10*time.Second, func() bool {
		ids, _ := maildirIDs(t, filepath.Join(e.mail, "alice"))
		return ids["early@test"] == 1
	})
	if !strings.Contains(p.Logs(), "no write lease") {
		t.Errorf("the refused lease of a file found by the scan was not reported")
	}
	writeInPlace("late.eml", "late@test")
	waitUntil(t, "both delivered", 10*time.Second, func() bool {
		ids, _ := maildirIDs(t, filepath.Join(e.mail, "alice"))
		return ids["early@test"] == 1 && ids["late@test"] == 1
	})
	p.stop(t)
	var warns []map[string]any
	for _, line := range strings.Split(p.Logs(), "\n") {
		var ev map[string]any
		if json.Unmarshal([]byte(line), &ev) == nil && ev["level"] == "warn" && strings.Contains(fmt.Sprint(ev["message"]), "no write lease") {
			warns = append(warns, ev)
		}
	}
	if len(warns) != 1 {
		t.Fatalf("%d warnings of the refused lease, want 1 for the folder", len(warns))
	}
	if ev := warns[0]; ev["folder"] != e.drop || !strings.Contains(fmt.Sprint(ev["message"]), "CAP_LEASE") {
		t.Errorf("warning %v: want the folder and what mxdrop needs", ev)
	}
}
