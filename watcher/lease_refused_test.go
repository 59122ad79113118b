package watcher

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/mxdrop/mxdrop/internal/testenv"
)

// TestNoWriterRefused: a process that neither owns a drop file nor has CAP_LEASE gets
// EACCES for the write lease; noWriter reports that as refused (so the watcher can say
// so) rather than silently as "no lease support". The check runs in a copy of the test
// binary as nobody (65534), since root has CAP_LEASE.
func TestNoWriterRefused(t *testing.T) {
	if path := os.Getenv("MXDROP_NOWRITER_CHILD"); path != "" {
		free, ok, refused := noWriter(path)
		fmt.Printf("free=%v ok=%v refused=%v\n", free, ok, refused)
		return
	}
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "needs root to run a check as another user")
	}
	dir, err := os.MkdirTemp("/tmp", "mxdrop-lease-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "watcher.test")
	copyFile(t, self, bin, 0o755)
	file := filepath.Join(dir, "msg.eml")
	if err := os.WriteFile(file, []byte("Subject: x\n\nx\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestNoWriterRefused$")
	cmd.Env = append(os.Environ(), "MXDROP_NOWRITER_CHILD="+file)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child as nobody: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "free=false ok=false refused=true") {
		t.Errorf("noWriter as a non-owner: %s, want refused", out)
	}
	// As the owner (root) the lease is granted: the file is free.
	if free, ok, refused := noWriter(file); !free || !ok || refused {
		t.Errorf("noWriter as root: free=%v ok=%v refused=%v", free, ok, refused)
	}
}

func copyFile(t *testing.T, src, dst string, perm os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
