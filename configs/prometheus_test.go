package configs

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	"github.com/mxdrop/mxdrop/internal/testenv"
)

// TestPrometheusRules checks the alerting rules in configs/prometheus with promtool
// (Debian package prometheus): they parse, and their unit tests (mxdrop.rules.test.yml)
// pass: each alert fires on the series that should trigger it and not on healthy ones.
// Every alert has at least one test in which it fires.
func TestPrometheusRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		testenv.Unavailable(t, "promtool not found (Debian package prometheus)")
	}
	for _, args := range [][]string{
		{"check", "rules", "mxdrop.rules.yml"},
		{"test", "rules", "mxdrop.rules.test.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}

	rules, err := os.ReadFile(filepath.Join("prometheus", "mxdrop.rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(filepath.Join("prometheus", "mxdrop.rules.test.yml"))
	if err != nil {
		t.Fatal(err)
	}
	alerts := submatches(regexp.MustCompile(`(?m)^\s*- alert: (\S+)$`), rules)
	if len(alerts) < 8 {
		t.Fatalf("only %d alerts in mxdrop.rules.yml: %v", len(alerts), alerts)
	}
	// An alert is tested firing when an exp_alerts list under its alertname is not empty.
	firing := submatches(regexp.MustCompile(`(?m)^\s*alertname: (\S+)\n\s*exp_alerts:\n\s*- exp_labels`), tests)
	for _, a := range alerts {
		if !slices.Contains(firing, a) {
			t.Errorf("alert %s has no unit test in which it fires", a)
		}
	}
}

// submatches returns the first submatch of every match of re in b.
func submatches(re *regexp.Regexp, b []byte) []string {
	var out []string
	for _, m := range re.FindAllSubmatch(b, -1) {
		out = append(out, string(m[1]))
	}
	return out
}
