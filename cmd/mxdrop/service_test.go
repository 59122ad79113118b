package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/internal/testenv"
)

// TestSystemdUnitVerifies runs systemd-analyze verify over configs/mxdrop.service with
// ExecStart pointing at the built binary.
func TestSystemdUnitVerifies(t *testing.T) {
	tool, err := exec.LookPath("systemd-analyze")
	if err != nil {
		testenv.Unavailable(t, "systemd-analyze is not installed (Debian package systemd; .ci/run installs it)")
	}
	unit, err := os.ReadFile("../../configs/mxdrop.service")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(unit), "/usr/local/bin/mxdrop", binary, 1)
	if text == string(unit) {
		t.Fatal("the unit has no ExecStart=/usr/local/bin/mxdrop")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "mxdrop.service")
	os.WriteFile(path, []byte(text), 0o644)
	out, err := exec.Command(tool, "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, want := range []string{"Type=notify", "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths="} {
		if !strings.Contains(text, want) {
			t.Errorf("unit lacks %s", want)
		}
	}
}

// TestSdNotify: run under a NOTIFY_SOCKET, mxdrop says READY=1 once its watchers are up
// and STOPPING=1 on SIGTERM, as a Type=notify service must.
func TestSdNotify(t *testing.T) {
	e := newEnv(t, "")
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cmd := exec.Command(binary, "--config", e.cfgPath, "run")
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	read := func() string {
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 256)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		return string(buf[:n])
	}
	if got := read(); got != "READY=1" {
		t.Errorf("first notification %q, want READY=1", got)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if got := read(); got != "STOPPING=1" {
		t.Errorf("notification after SIGTERM %q, want STOPPING=1", got)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit: %v", err)
	}
}
