package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/watcher"
)

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metricValue returns the value of the sample whose name and labels match, or -1.
func metricValue(body, name, labels string) float64 {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\{` + regexp.QuoteMeta(labels) + `\} (\S+)$`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// TestMetricsAndReadiness scrapes /metrics while mxdrop imports and checks the counters
// move as they should, and that /readyz turns unready when the drop folder is removed
// and ready again when it returns.
func TestMetricsAndReadiness(t *testing.T) {
	port := freePort(t)
	e := newEnv(t, fmt.Sprintf("metrics:\n  listen: 127.0.0.1:%d\n", port))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	p := e.start("run")
	p.waitLog(t, "metrics endpoint listening", 10*time.Second)
	waitUntil(t, "ready", 10*time.Second, func() bool { code, _ := httpGet(t, base+"/readyz"); return code == 200 })
	if code, body := httpGet(t, base+"/healthz"); code != 200 || !strings.Contains(body, `"ok"`) {
		t.Errorf("/healthz = %d %s", code, body)
	}
	_, before := httpGet(t, base+"/metrics")
	if v := metricValue(before, "mxdrop_messages_total", `kind="connector",outcome="delivered",source="mx"`); v > 0 {
		t.Fatalf("delivered counter starts at %v", v)
	}
	for i := 0; i < 5; i++ {
		dropFile(t, e.drop, fmt.Sprintf("m%d", i), msg(fmt.Sprintf("metrics-%d@test", i), "Envelope-to", "alice@example.com", "bob@example.com"))
	}
	dropFile(t, e.drop, "unknown", msg("metrics-unknown@test", "X-Original-To", "nobody@example.com"))
	var body string
	waitUntil(t, "counters to move", 10*time.Second, func() bool {
		_, body = httpGet(t, base+"/metrics")
		return metricValue(body, "mxdrop_messages_total", `kind="connector",outcome="delivered",source="mx"`) == 5 &&
			metricValue(body, "mxdrop_messages_total", `kind="connector",outcome="failed",source="mx"`) == 1
	})
	for _, c := range []struct {
		name, labels string
		want         float64
	}{
		{"mxdrop_deliveries_total", `folder="inbox",source="mx"`, 10},
		{"mxdrop_failed_recipients_total", `source="mx",status="5.1.1"`, 1},
		{"mxdrop_import_duration_seconds_count", `source="mx"`, 6},
		{"mxdrop_import_failed_files", `connector="mx"`, 1},
		{"mxdrop_drop_folder_backlog", `connector="mx"`, 0},
		{"mxdrop_watcher_up", `connector="mx"`, 1},
	} {
		if got := metricValue(body, c.name, c.labels); got != c.want {
			t.Errorf("%s{%s} = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if metricValue(body, "mxdrop_message_bytes_total", `source="mx"`) <= 0 {
		t.Error("no bytes counted")
	}
	readyRE := regexp.MustCompile(`(?m)^mxdrop_ready (\S+)$`)
	if m := readyRE.FindStringSubmatch(body); m == nil || m[1] != "1" {
		t.Errorf("mxdrop_ready = %v while /readyz answers 200, want 1", m)
	}

	// The drop folder goes away: unready, with the reason.
	if err := os.RemoveAll(e.drop); err != nil {
		t.Fatal(err)
	}
	var ready struct {
		Ready  bool
		Checks []struct {
			Name, Reason string
			OK           bool
		}
	}
	waitUntil(t, "unready", 10*time.Second, func() bool {
		code, b := httpGet(t, base+"/readyz")
		json.Unmarshal([]byte(b), &ready)
		return code == 503 && !ready.Ready
	})
	found := false
	for _, c := range ready.Checks {
		if c.Name == "watcher mx" && !c.OK && c.Reason != "" {
			found = true
		}
	}
	if !found {
		t.Errorf("/readyz does not say why: %+v", ready)
	}
	_, body = httpGet(t, base+"/metrics")
	if m := readyRE.FindStringSubmatch(body); m == nil || m[1] != "0" {
		t.Errorf("mxdrop_ready = %v while /readyz answers 503, want 0", m)
	}
	os.MkdirAll(e.drop, 0o750)
	waitUntil(t, "ready again", 20*time.Second, func() bool { code, _ := httpGet(t, base+"/readyz"); return code == 200 })
	p.stop(t)
}

// TestFolderBacklogCountsClaims: the backlog counts files waiting in the drop folder
// and its new/, and claimed ones (claim names beside them, files in claims folders),
// never writers' dot-files nor mxdrop's own lock and lease; the oldest is among them.
func TestFolderBacklogCountsClaims(t *testing.T) {
	drop := t.TempDir()
	put := func(rel string, age time.Duration) {
		t.Helper()
		p := filepath.Join(drop, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o640); err != nil {
			t.Fatal(err)
		}
		mt := time.Now().Add(-age)
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	put("waiting", time.Minute)
	put("new/waiting", time.Minute)
	put(".mxdrop-claim.0123456789abcdef.0.claimed", time.Hour)
	put("new/.mxdrop-claim.0123456789abcdef.2.claimed", time.Minute)
	put(".mxdrop/claims/mx1-1-a/older-layout", time.Minute)
	put(".mxdrop/claims/mx1-1-a/.lease", 2*time.Hour)
	put(".writer-tmp", 3*time.Hour)
	n, claimed, oldest := folderBacklog(&watcher.Connector{DropFolder: drop})
	if n != 5 {
		t.Errorf("backlog %d, want 5", n)
	}
	if claimed != 3 {
		t.Errorf("claimed %d, want 3", claimed)
	}
	if age := time.Since(oldest); age < 59*time.Minute || age > 61*time.Minute {
		t.Errorf("oldest %s ago, want the claimed file's hour", age)
	}
}
