package configs

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./configs -run %s -update to create it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("%s differs from the output (go test ./configs -run %s -update rewrites it); got:\n%s", path, t.Name(), got)
	}
}

// describe loads a configuration and returns Describe's output with the machine's
// folders replaced by $TESTDATA and $REPO, so the golden files hold on any checkout.
func describe(t *testing.T, path string) string {
	t.Helper()
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := Describe(&b, cfg); err != nil {
		t.Fatal(err)
	}
	testdata, _ := filepath.Abs("testdata")
	repo, _ := filepath.Abs("..")
	out := strings.ReplaceAll(b.String(), testdata, "$TESTDATA")
	return strings.ReplaceAll(out, repo, "$REPO")
}

func TestDescribeGolden(t *testing.T) {
	t.Parallel()
	out := describe(t, "testdata/describe.yaml")
	golden(t, "describe.golden", out)
	for _, s := range []string{"relay-password-DO-NOT-PRINT", "pop-password-DO-NOT-PRINT"} {
		if strings.Contains(out, s) {
			t.Errorf("Describe shows the secret %q", s)
		}
	}
}

func TestDescribeExampleGolden(t *testing.T) {
	t.Parallel()
	golden(t, "example.golden", describe(t, "example.yaml"))
}
