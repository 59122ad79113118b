package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/internal/testenv"
)

// linkedEvents returns, by file name, the linked field of the message events in log.
func linkedEvents(t *testing.T, log string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev struct {
			Message, File, Outcome string
			Linked                 bool
		}
		if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.Message == "message" && ev.Outcome == "delivered" {
			out[ev.File] = ev.Linked
		}
	}
	return out
}

// TestLinkedDelivery runs the daemon with keep_imported over Postfix-style drop files
// (Return-Path and the recipient's Delivered-To on top) and a message for two accounts:
// each Postfix-style delivery is the drop file's inode, shared with its Imported/ copy;
// the two-account message is copied; the events say linked: true for the linked ones
// only, and mxdrop_linked_deliveries_total counts them.
func TestLinkedDelivery(t *testing.T) {
	port := freePort(t)
	e := newEnv(t, fmt.Sprintf("    keep_imported: true\nmetrics:\n  listen: 127.0.0.1:%d\n", port))
	p := e.start("run")
	p.waitLog(t, "mxdrop started", 10*time.Second)
	data := map[string][]byte{}
	for i, rcpt := range []string{"alice@example.com", "bob@example.com", "a.smith@example.com"} {
		name := fmt.Sprintf("pf%d", i)
		data[name] = msg(name+"@test", "Delivered-To", rcpt)
		dropFile(t, e.drop, name, data[name])
	}
	dropFile(t, e.drop, "two", msg("two@test", "Envelope-to", "alice@example.com", "bob@example.com"))
	waitUntil(t, "drop folder drained", 20*time.Second, func() bool {
		left, claimed := dropLeft(t, e.drop)
		ents, _ := os.ReadDir(filepath.Join(e.drop, "Imported"))
		return len(left) == 1 && len(claimed) == 0 && len(ents) == 4 // left: Imported/
	})
	_, body := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	p.stop(t)

	for name, want := range data {
		imported := filepath.Join(e.drop, "Imported", name)
		iIno, n := testenv.Inode(t, imported)
		if n != 2 {
			t.Errorf("%s: Imported/ copy has %d links, want 2 (itself and the delivery)", name, n)
		}
		var found bool
		for _, acct := range []string{"alice", "bob"} {
			news, _ := filepath.Glob(filepath.Join(e.mail, acct, "new", "*"))
			for _, f := range news {
				if got, _ := testenv.Inode(t, f); got == iIno {
					found = true
					if b, _ := os.ReadFile(f); !bytes.Equal(b, want) {
						t.Errorf("%s: linked delivery differs from the drop file", name)
					}
				}
			}
		}
		if !found {
			t.Errorf("%s: no delivery shares the drop file's inode", name)
		}
	}
	if _, n := testenv.Inode(t, filepath.Join(e.drop, "Imported", "two")); n != 1 {
		t.Errorf("the two-account message has %d links", n)
	}
	linked := linkedEvents(t, p.Logs())
	for _, name := range []string{"pf0", "pf1", "pf2"} {
		if !linked[name] {
			t.Errorf("%s: event without linked: true", name)
		}
	}
	if l, ok := linked["two"]; !ok || l {
		t.Errorf("two-account message: event found %v, linked %v", ok, l)
	}
	if got := metricValue(body, "mxdrop_linked_deliveries_total", `source="mx"`); got != 3 {
		t.Errorf("mxdrop_linked_deliveries_total = %v, want 3", got)
	}
	if got := metricValue(body, "mxdrop_deliveries_total", `folder="inbox",source="mx"`); got != 5 {
		t.Errorf("mxdrop_deliveries_total = %v, want 5", got)
	}
}

// TestCrashKill9Linked is TestCrashKill9 over Postfix-style drops that are delivered
// by hard link: 20 kills at random instants of linked imports (and of copies for two
// accounts, and quarantines) lose nothing and deliver nothing twice; every linked
// delivery holds the drop file's bytes, and once the drop folder is drained no
// delivery keeps a second name (no leftover link in tmp/ or the claims folder).
func TestCrashKill9Linked(t *testing.T) {
	if testing.Short() && !testenv.CI() {
		t.Skip("crash test is long (never skipped under CI=true)")
	}
	e := newEnv(t, "")
	const total = 1000
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewSource(seed))
	accts := []string{"alice", "bob", "carol"}
	addrs := []string{"alice@example.com", "bob@example.com", "carol@example.org"}
	want := map[string]map[string][]byte{"alice": {}, "bob": {}, "carol": {}}
	produce := func(i int) {
		id := fmt.Sprintf("link-%d@test", i)
		var data []byte
		switch i % 10 {
		case 0:
			data = msg(id, "Delivered-To", "nobody@example.com") // quarantined
		case 1:
			data = msg(id, "Envelope-to", addrs[0], addrs[1])
			want["alice"][id], want["bob"][id] = nil, nil
		default:
			data = msg(id, "Delivered-To", addrs[i%3])
			want[accts[i%3]][id] = data
		}
		dropFile(t, e.drop, fmt.Sprintf("m%05d", i), data)
	}
	handled := func() int {
		n := 0
		for _, a := range accts {
			ents, _ := os.ReadDir(filepath.Join(e.mail, a, "new"))
			n += len(ents)
		}
		ents, _ := os.ReadDir(filepath.Join(e.drop, "ImportFailed"))
		return n + len(ents)
	}
	logs := killRuns(t, e, rng, total, produce, handled)
	if n := strings.Count(logs, `"linked":true`); n == 0 {
		t.Error("no delivery was linked")
	} else {
		t.Logf("%d linked deliveries logged", n)
	}
	for _, acct := range accts {
		got, tmp := maildirIDs(t, filepath.Join(e.mail, acct))
		if tmp != 0 {
			t.Errorf("%s: %d files left in tmp/", acct, tmp)
		}
		for id := range want[acct] {
			if got[id] != 1 {
				t.Errorf("%s: %s delivered %d times", acct, id, got[id])
			}
		}
		for id, n := range got {
			if _, ok := want[acct][id]; !ok {
				t.Errorf("%s: unexpected %s (%d)", acct, id, n)
			}
		}
		for _, sub := range []string{"new", "cur"} {
			files, _ := filepath.Glob(filepath.Join(e.mail, acct, sub, "*"))
			for _, f := range files {
				if _, n := testenv.Inode(t, f); n != 1 {
					t.Errorf("%s has %d names", f, n)
				}
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				m := messageIDRE.FindSubmatch(b)
				if m == nil {
					continue
				}
				if w := want[acct][string(m[1])]; w != nil && !bytes.Equal(b, w) {
					t.Errorf("%s: %s differs from its drop file", acct, m[1])
				}
			}
		}
	}
	failed, _ := filepath.Glob(filepath.Join(e.drop, "ImportFailed", "m*"))
	msgs := 0
	for _, f := range failed {
		if !strings.HasSuffix(f, ".json") {
			msgs++
		}
	}
	if msgs != total/10 {
		t.Errorf("ImportFailed holds %d messages, want %d", msgs, total/10)
	}
}
