package address

import "testing"

func TestUntagged(t *testing.T) {
	for in, want := range map[string]string{
		"alice":      "alice",
		"alice+news": "alice",
		"alice+a+b":  "alice",
		"+alice":     "+alice", // nothing before the tag: not a sub-address
		`"alice+x"`:  `"alice+x"`,
		"v20+q":      "v20",
		"":           "",
	} {
		if got := Untagged(in); got != want {
			t.Errorf("Untagged(%q) = %q, want %q", in, got, want)
		}
	}
}
