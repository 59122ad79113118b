package configs

import (
	"os/exec"
	"testing"

	"github.com/mxdrop/mxdrop/internal/testenv"
)

// TestPrometheusRules checks the alerting rules in configs/prometheus with promtool
// (Debian package prometheus): they parse, and their unit tests (mxdrop.rules.test.yml)
// pass: each alert fires on the series that should trigger it and not on healthy ones.
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
}
