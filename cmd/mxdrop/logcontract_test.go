package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// documentedFields returns the field names of the README's log table named table.
func documentedFields(t *testing.T, table string) []string {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(readme)
	start := strings.Index(s, "<!-- log-fields:"+table+" -->")
	if start < 0 {
		t.Fatalf("README has no log-fields:%s table", table)
	}
	end := strings.Index(s[start:], "<!-- /log-fields -->")
	var fields []string
	for _, line := range strings.Split(s[start:start+end], "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		first := strings.SplitN(line, "|", 3)[1]
		for _, m := range regexp.MustCompile("`([a-z_]+)`").FindAllStringSubmatch(first, -1) {
			fields = append(fields, m[1])
		}
	}
	if len(fields) < 5 {
		t.Fatalf("only %d fields in the %s table", len(fields), table)
	}
	return fields
}

// eventKeys returns every key of the JSON events whose message is msg.
func eventKeys(t *testing.T, log []byte, msg string) map[string]bool {
	t.Helper()
	keys := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev map[string]any
		if json.Unmarshal(sc.Bytes(), &ev) != nil || ev["message"] != msg {
			continue
		}
		for k := range ev {
			keys[k] = true
		}
	}
	return keys
}

// TestLogContract imports real mail (delivered, partly failed, unknown, guessed,
// rejected) through the drop folder, and checks that every field the README documents
// for message events appears in the events the run wrote (the poller fields, in the
// poller test below).
func TestLogContract(t *testing.T) {
	e := newEnv(t, "")
	dropFile(t, e.drop, "ok", msg("ok@test", "X-Original-To", "alice@example.com"))
	dropFile(t, e.drop, "linked", msg("linked@test", "Delivered-To", "bob@example.com"))
	dropFile(t, e.drop, "partial", msg("partial@test", "Envelope-to", "alice@example.com", "nobody@example.com"))
	dropFile(t, e.drop, "guessed", []byte("Return-Path: <s@remote.test>\nFrom: s@remote.test\nTo: bob@example.com, someone@elsewhere.test\nMessage-ID: <guessed@test>\n\nhi\n"))
	dropFile(t, e.drop, "empty", nil)
	old := time.Now().Add(-time.Minute)
	entries, _ := os.ReadDir(e.drop)
	for _, en := range entries {
		os.Chtimes(filepath.Join(e.drop, en.Name()), old, old)
	}
	var out, errb bytes.Buffer
	if err := execMxdrop(e, &out, &errb, "run", "--once").Run(); err != nil {
		t.Fatalf("run --once: %v\n%s", err, errb.String())
	}
	keys := eventKeys(t, errb.Bytes(), "message")
	for _, f := range documentedFields(t, "message") {
		switch f {
		case "poller", "uid", "server", "spam", "spam_reason":
			// polled, quarantined polled and spam-checked messages: TestLogContractPoller,
			// TestPollerIntakeLikeConnector, TestSpamCheckWired
			continue
		}
		if !keys[f] {
			t.Errorf("documented field %q is in no message event", f)
		}
	}
	for _, f := range []string{"level", "time", "component"} {
		if !keys[f] {
			t.Errorf("field %q missing", f)
		}
	}
}

// TestSpamCheckWired: a connector with spam_check and a word table sends a spam word to
// the account's .Junk folder and clean mail to the inbox, through the real binary.
func TestSpamCheckWired(t *testing.T) {
	e := newEnv(t, "spam:\n  words: [\"cheap pills\"]\n  folder: Junk\n")
	cfg, _ := os.ReadFile(e.cfgPath)
	e.writeConfig(strings.Replace(string(cfg), "    bounce: false\n", "    bounce: false\n    spam_check: true\n", 1))
	dropFile(t, e.drop, "spam", []byte("Return-Path: <s@remote.test>\nX-Original-To: alice@example.com\nSubject: Cheap  Pills today\nMessage-ID: <spam@test>\n\nbuy\n"))
	dropFile(t, e.drop, "ham", []byte("Return-Path: <s@remote.test>\nX-Original-To: alice@example.com\nSubject: lunch\nMessage-ID: <ham@test>\n\npills are not cheap\n"))
	old := time.Now().Add(-time.Minute)
	for _, n := range []string{"spam", "ham"} {
		os.Chtimes(filepath.Join(e.drop, n), old, old)
	}
	var out, errb bytes.Buffer
	if err := execMxdrop(e, &out, &errb, "run", "--once").Run(); err != nil {
		t.Fatalf("run --once: %v\n%s", err, errb.String())
	}
	junk, _ := maildirIDs(t, filepath.Join(e.mail, "alice", ".Junk"))
	inbox, _ := maildirIDs(t, filepath.Join(e.mail, "alice"))
	if junk["spam@test"] != 1 || inbox["spam@test"] != 0 {
		t.Errorf("spam: %d in Junk, %d in the inbox", junk["spam@test"], inbox["spam@test"])
	}
	if inbox["ham@test"] != 1 || junk["ham@test"] != 0 {
		t.Errorf("ham: %d in the inbox, %d in Junk", inbox["ham@test"], junk["ham@test"])
	}
	keys := eventKeys(t, errb.Bytes(), "message")
	for _, f := range []string{"spam", "spam_reason"} {
		if !keys[f] {
			t.Errorf("no %q in the message events", f)
		}
	}
}
