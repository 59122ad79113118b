package postfixtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/mxdrop/mxdrop/internal/testenv"
)

// binaries are the Postfix programs and facts an instance needs, found once per process.
type binaries struct {
	postfix, postmap, postqueue string
	daemonDir, metaDir          string
	version                     string
	deliveryUser                string // name of DeliveryUID, for pipe(8)'s user=
	mailOwnerUID                int    // mail_owner (postfix)
	setgidGID                   int    // setgid_group (postdrop)
}

var (
	probeOnce sync.Once
	probed    binaries
	probeErr  error
)

// Require skips the test when this machine cannot run a Postfix test instance: the
// Postfix binaries (3.4 or later) are missing, the process is not root, or the users
// and groups Postfix needs (postfix, postdrop, and uid/gid 65534 for deliveries) do not
// exist. Under CI=true it fails the test instead, so CI never passes by skipping. The
// message says what is missing and how to install it.
func Require(t testing.TB) {
	t.Helper()
	require(t)
}

func require(t testing.TB) binaries {
	t.Helper()
	probeOnce.Do(func() { probed, probeErr = probe() })
	if probeErr != nil {
		unusable(t, probeErr)
	}
	return probed
}

// unusable ends the test for a machine that cannot run an instance: t.Fatal under
// CI=true, t.Skip otherwise.
func unusable(t testing.TB, cause error) {
	t.Helper()
	msg := "postfixtest: cannot run a Postfix test instance: " + cause.Error() +
		" (install it with `DEBIAN_FRONTEND=noninteractive apt-get install -y postfix`" +
		" and run the tests as root; the system instance need not be configured or running)"
	testenv.Unavailable(t, "%s", msg)
}

// probe finds the Postfix commands and checks the rest of what Start relies on.
func probe() (binaries, error) {
	var b binaries
	var err error
	// /usr/sbin is often missing from a non-login root PATH.
	for name, dst := range map[string]*string{"postfix": &b.postfix, "postmap": &b.postmap, "postqueue": &b.postqueue} {
		if *dst, err = lookPath(name); err != nil {
			return b, err
		}
	}
	postconf, err := lookPath("postconf")
	if err != nil {
		return b, err
	}
	// -d: compiled-in defaults, so the missing or foreign /etc/postfix/main.cf of an
	// unconfigured system does not matter.
	out, err := exec.Command(postconf, "-d", "-h", "daemon_directory", "meta_directory", "mail_version").Output()
	if err != nil {
		return b, fmt.Errorf("postconf -d: %w", err)
	}
	lines := strings.Fields(string(out))
	if len(lines) != 3 {
		return b, fmt.Errorf("postconf -d: unexpected output %q", out)
	}
	b.daemonDir, b.metaDir, b.version = lines[0], lines[1], lines[2]
	if _, err := os.Stat(filepath.Join(b.daemonDir, "master")); err != nil {
		return b, fmt.Errorf("postfix master program: %w", err)
	}
	if !versionAtLeast(b.version, 3, 4) {
		return b, fmt.Errorf("postfix %s is older than 3.4 (no postlogd)", b.version)
	}
	if os.Geteuid() != 0 {
		return b, errors.New("not root (Postfix's master must start as root)")
	}
	owner, err := user.Lookup("postfix")
	if err != nil {
		return b, fmt.Errorf("mail_owner: %w", err)
	}
	group, err := user.LookupGroup("postdrop")
	if err != nil {
		return b, fmt.Errorf("setgid_group: %w", err)
	}
	b.mailOwnerUID, _ = strconv.Atoi(owner.Uid)
	b.setgidGID, _ = strconv.Atoi(group.Gid)
	u, err := user.LookupId(strconv.Itoa(DeliveryUID))
	if err != nil {
		return b, fmt.Errorf("delivery user: %w", err)
	}
	if u.Gid != strconv.Itoa(DeliveryGID) {
		return b, fmt.Errorf("delivery user %s has gid %s, want %d", u.Username, u.Gid, DeliveryGID)
	}
	b.deliveryUser = u.Username
	return b, nil
}

func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in $PATH, /usr/sbin or /sbin", name)
}

// versionAtLeast reports whether a Postfix version such as "3.7.11" (or a snapshot,
// "3.10-20250101") is major.minor or later.
func versionAtLeast(v string, major, minor int) bool {
	ma, rest, ok := strings.Cut(v, ".")
	if !ok {
		return false
	}
	mi := rest
	if i := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		mi = rest[:i]
	}
	a, err1 := strconv.Atoi(ma)
	b, err2 := strconv.Atoi(mi)
	if err1 != nil || err2 != nil {
		return false
	}
	return a > major || a == major && b >= minor
}
