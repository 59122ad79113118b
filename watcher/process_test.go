package watcher

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// TestProcessVanishedClaim: a claimed file that someone else removed is not retried
// forever; it is given up at once.
func TestProcessVanishedClaim(t *testing.T) {
	c, _ := testConnector(t)
	if got := c.process(context.Background(), filepath.Join(c.DropFolder, "gone.eml"), true); got != Skipped {
		t.Errorf("vanished claim: outcome %v, want Skipped (not Retry)", got)
	}
}

// TestProcessNotRegular: a claimed symbolic link or FIFO is quarantined unread with the
// reason not_regular_file; the link's target stays untouched and unread.
func TestProcessNotRegular(t *testing.T) {
	c, root := testConnector(t)
	target := filepath.Join(root, "secret")
	if err := os.WriteFile(target, []byte("Subject: secret\n\nsecret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(c.DropFolder, "link.eml")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if got := c.process(context.Background(), link, false); got != Quarantined {
		t.Fatalf("symbolic link: outcome %v, want Quarantined", got)
	}
	q := filepath.Join(c.DropFolder, "ImportFailed", "link.eml")
	if fi, err := os.Lstat(q); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the link itself is not in ImportFailed/: %v", err)
	}
	data, err := os.ReadFile(q + ".json")
	if err != nil {
		t.Fatal(err)
	}
	var rec struct{ Reason string }
	if err := json.Unmarshal(data, &rec); err != nil || rec.Reason != "not_regular_file" {
		t.Errorf("reason %q (%v), want not_regular_file", rec.Reason, err)
	}
	if _, err := os.Stat(target); err != nil {
		t.Errorf("the link's target was touched: %v", err)
	}
	if f, err := openRegular(q); err == nil {
		f.Close()
		t.Errorf("openRegular opened a symbolic link")
	}
}
