package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/internal/dovecottest"
)

// metricSum sums the samples of the metric name whose labels include every one of
// labels (`k="v"`); -1 when there is none.
func metricSum(body, name string, labels ...string) float64 {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\{([^}]*)\} (\S+)$`)
	sum, found := 0.0, false
	for _, m := range re.FindAllStringSubmatch(body, -1) {
		all := true
		for _, l := range labels {
			if !strings.Contains(","+m[1]+",", ","+l+",") {
				all = false
			}
		}
		if all {
			v, _ := strconv.ParseFloat(m[2], 64)
			sum, found = sum+v, true
		}
	}
	if !found {
		return -1
	}
	return sum
}

// TestPollerIntakeLikeConnector: a collection poller against a real Dovecot and a
// drop-folder connector get the same three messages (one for alice, one for dave and
// nobody, neither of whom exists, one for bob and dave). The poller's metrics move
// exactly as the connector's; mxdrop status shows the poller's quarantined message;
// after dave is added, mxdrop replay delivers it from the poller's quarantine without
// the server, and the sender, bounced once for it, is not bounced again although
// nobody@ fails again.
func TestPollerIntakeLikeConnector(t *testing.T) {
	relay := startSink(t)
	srv := dovecottest.Start(t, dovecottest.Options{Users: map[string]string{"collect": "collect-secret"}})
	host, port := splitHostPort(t, srv.POP3Addr())
	mport := freePort(t)
	e := newEnv(t, fmt.Sprintf(`metrics:
  listen: 127.0.0.1:%d
smtp:
  host: 127.0.0.1
  port: %d
  tls: none
  reporting_mta: mx.example.com
pollers:
  - name: collect
    protocol: pop3
    host: %s
    port: %s
    tls: none
    interval: 1s
    timeout: 10s
    username: collect
    auth: {method: password, password: collect-secret}
    keep: delete
    mode: collection
    accepted_domains: [example.com, example.org]
`, mport, relay.port, host, port))
	msgs := [][]byte{
		msg("one@test", "Envelope-to", "alice@example.com"),
		msg("two@test", "Envelope-to", "dave@example.com", "nobody@example.com"),
		msg("three@test", "Envelope-to", "bob@example.com", "dave@example.com"),
	}
	for i, m := range msgs {
		srv.Append(t, "collect", "INBOX", m)
		// The poller stores what POP3 hands over with the LF line endings of the
		// original.
		dropFile(t, e.drop, fmt.Sprintf("m%d", i), m)
	}
	p := e.start("run")
	base := fmt.Sprintf("http://127.0.0.1:%d/metrics", mport)
	var body string
	waitUntil(t, "both sources handled three messages", 30*time.Second, func() bool {
		_, body = httpGet(t, base)
		return metricSum(body, "mxdrop_import_duration_seconds_count", `source="mx"`) == 3 &&
			metricSum(body, "mxdrop_import_duration_seconds_count", `source="collect"`) == 3
	})
	type series struct {
		name   string
		labels []string
		want   float64
	}
	for _, s := range []series{
		{"mxdrop_messages_total", []string{`outcome="delivered"`}, 1},
		{"mxdrop_messages_total", []string{`outcome="partial"`}, 1},
		{"mxdrop_messages_total", []string{`outcome="failed"`}, 1},
		{"mxdrop_deliveries_total", []string{`folder="inbox"`}, 2},
		{"mxdrop_failed_recipients_total", []string{`status="5.1.1"`}, 3},
		{"mxdrop_message_bytes_total", nil, float64(len(msgs[0]) + len(msgs[1]) + len(msgs[2]))},
		{"mxdrop_import_duration_seconds_count", nil, 3},
	} {
		conn := metricSum(body, s.name, append([]string{`source="mx"`}, s.labels...)...)
		poll := metricSum(body, s.name, append([]string{`source="collect"`}, s.labels...)...)
		if conn != s.want || poll != conn {
			t.Errorf("%s%v: connector %v, poller %v, want %v for both", s.name, s.labels, conn, poll, s.want)
		}
	}
	if c, p := metricSum(body, "mxdrop_import_failed_files", `connector="mx"`), metricSum(body, "mxdrop_import_failed_files", `connector="collect"`); c != 1 || p != 1 {
		t.Errorf("mxdrop_import_failed_files: connector %v, poller %v, want 1 for both", c, p)
	}
	if keys := eventKeys(t, []byte(p.Logs()), "message"); !keys["server"] {
		t.Error("the poller's quarantined message has no server field in its event")
	}
	// two@ and three@ were bounced by the poller (the connector has bounce: false).
	waitUntil(t, "the poller's two DSNs", 10*time.Second, func() bool { return relay.count() == 2 })

	var out, errb bytes.Buffer
	if err := execMxdrop(e, &out, &errb, "status").Run(); err != nil {
		t.Fatalf("status: %v\n%s", err, errb.String())
	}
	_, pollerPart, _ := strings.Cut(out.String(), "Pollers")
	for _, want := range []string{"collect (active)", "ImportFailed    1 messages", "no_deliverable_recipient  sender@remote.test dave@example.com 5.1.1, nobody@example.com 5.1.1"} {
		if !strings.Contains(pollerPart, want) {
			t.Errorf("status lacks %q for the poller:\n%s", want, out.String())
		}
	}
	p.stop(t)

	// dave exists now; nobody@ still does not.
	cfg, _ := os.ReadFile(e.cfgPath)
	e.writeConfig(strings.Replace(string(cfg), "connectors:", "  - address: dave@example.com\n    maildir: ./mail/dave\nconnectors:", 1))
	srv.Stop(t)
	out.Reset()
	errb.Reset()
	if err := execMxdrop(e, &out, &errb, "replay", "--poller", "collect").Run(); err != nil {
		t.Fatalf("replay: %v\n%s%s", err, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "replayed 1, failed 0") {
		t.Errorf("replay said %q\n%s", out.String(), errb.String())
	}
	ids, _ := maildirIDs(t, filepath.Join(e.mail, "dave"))
	if ids["two@test"] != 1 || ids["three@test"] != 0 {
		t.Errorf("dave holds %v, want two@test once", ids)
	}
	if n := len(pfNames(filepath.Join(e.root, "state", "ImportFailed", "collect"))); n != 0 {
		t.Errorf("the poller's quarantine still holds %d files", n)
	}
	time.Sleep(500 * time.Millisecond)
	if n := relay.count(); n != 2 {
		t.Errorf("the relay got %d DSNs, want 2: two@test's sender was bounced again", n)
	}
	out.Reset()
	if err := execMxdrop(e, &out, &errb, "status").Run(); err != nil {
		t.Fatalf("status: %v\n%s", err, errb.String())
	}
	if _, pollerPart, _ := strings.Cut(out.String(), "Pollers"); !strings.Contains(pollerPart, "ImportFailed    0 messages") {
		t.Errorf("status after replay:\n%s", out.String())
	}
}

// TestReloadConnectorOwnRelay: a connector added by a reload with an smtp block of its
// own bounces through that relay (not the top-level one) and keeps its quarantined
// message, with the DSN copy, in its own ImportFailed/.
func TestReloadConnectorOwnRelay(t *testing.T) {
	top, own := startSink(t), startSink(t)
	e := newEnv(t, fmt.Sprintf("smtp:\n  host: 127.0.0.1\n  port: %d\n  tls: none\n  reporting_mta: mx.example.com\n", top.port))
	p := e.start("run")
	p.waitLog(t, "mxdrop started", 10*time.Second)
	drop2 := filepath.Join(e.root, "drop2")
	if err := os.MkdirAll(drop2, 0o750); err != nil {
		t.Fatal(err)
	}
	cfg, _ := os.ReadFile(e.cfgPath)
	e.writeConfig(strings.Replace(string(cfg), "smtp:", fmt.Sprintf(`  - name: mx2
    drop_folder: ./drop2
    subdomains: [example.com]
    settle: 200ms
    smtp:
      host: 127.0.0.1
      port: %d
      tls: none
      reporting_mta: mx2.example.com
smtp:`, own.port), 1))
	p.waitLog(t, "configuration reloaded", 10*time.Second)
	dropFile(t, drop2, "lost", msg("own@test", "X-Original-To", "nobody@example.com"))
	waitUntil(t, "a DSN through the connector's own relay", 15*time.Second, func() bool { return own.count()+top.count() > 0 })
	time.Sleep(300 * time.Millisecond)
	if own.count() != 1 || top.count() != 0 {
		t.Errorf("DSNs: %d through the connector's relay, %d through the top-level one; want 1 and 0", own.count(), top.count())
	}
	own.mu.Lock()
	if len(own.msgs) > 0 && !bytes.Contains(own.msgs[0].data, []byte("mx2.example.com")) {
		t.Errorf("the DSN does not name the connector's reporting MTA:\n%s", own.msgs[0].data)
	}
	own.mu.Unlock()
	failed := filepath.Join(drop2, "ImportFailed")
	for _, f := range []string{"lost", "lost.json", "lost.dsn.eml"} {
		if _, err := os.Stat(filepath.Join(failed, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	p.stop(t)
}
