package main

// The Grafana dashboard (configs/grafana) and the alerting rules (configs/prometheus)
// against a real Prometheus scraping the real mxdrop binary.

import (
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/internal/dovecottest"
	"github.com/mxdrop/mxdrop/internal/testenv"
)

const (
	dashboardPath = "../../configs/grafana/mxdrop-dashboard.json"
	rulesPath     = "../../configs/prometheus/mxdrop.rules.yml"
)

// promServer is a Prometheus started by a test.
type promServer struct {
	base string // http://127.0.0.1:PORT
}

// startPrometheus starts the Debian package's Prometheus on loopback, scraping target
// every second under job "mxdrop" and evaluating the rules file every second. It stops
// in t.Cleanup.
func startPrometheus(t *testing.T, target, rules string) *promServer {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		testenv.Unavailable(t, "prometheus (Debian package prometheus) not found: %v", err)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - %s
scrape_configs:
  - job_name: mxdrop
    static_configs:
      - targets: ['%s']
`, rules, target)), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("prometheus log:\n%s", tail(string(b), 4096))
		}
	})
	p := &promServer{base: "http://" + addr}
	waitUntil(t, "prometheus ready", 20*time.Second, func() bool {
		code, _ := httpGet(t, p.base+"/-/ready")
		return code == 200
	})
	return p
}

// promResult is one sample of an instant vector.
type promResult struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// query runs an instant query and returns its vector; any API error is t.Fatal.
func (p *promServer) query(t *testing.T, q string) []promResult {
	t.Helper()
	code, body := httpGet(t, p.base+"/api/v1/query?query="+url.QueryEscape(q))
	var resp struct {
		Status, Error string
		Data          struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		}
	}
	if err := json.Unmarshal([]byte(body), &resp); err != nil || code != 200 || resp.Status != "success" {
		t.Fatalf("query %s: HTTP %d, %v: %s", q, code, err, tail(body, 512))
	}
	if resp.Data.ResultType != "vector" {
		t.Fatalf("query %s: result type %s, want vector", q, resp.Data.ResultType)
	}
	var out []promResult
	if err := json.Unmarshal(resp.Data.Result, &out); err != nil {
		t.Fatalf("query %s: %v", q, err)
	}
	return out
}

// hasData reports whether a vector has a sample whose value is a number (not NaN).
func hasData(v []promResult) bool {
	for _, r := range v {
		s, _ := r.Value[1].(string)
		if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsNaN(f) {
			return true
		}
	}
	return false
}

func (p *promServer) waitFor(t *testing.T, q string) {
	t.Helper()
	waitUntil(t, q, 20*time.Second, func() bool { return len(p.query(t, q)) > 0 })
}

// dashboard is the part of a Grafana dashboard the test reads.
type dashboard struct {
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		Title   string `json:"title"`
		Type    string `json:"type"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// TestDashboardQueries runs mxdrop with a drop folder (delivered, spam and failed mail,
// and a DSN the unreachable relay keeps in the outbox) and two pollers of a real Dovecot
// (one working, one with a wrong password), scraped by a real Prometheus that also
// evaluates the alerting rules. Every query of every dashboard panel must return data;
// every rule must evaluate without error, and every mxdrop series the rules name must
// exist.
func TestDashboardQueries(t *testing.T) {
	var dash dashboard
	raw, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	rules, err := filepath.Abs(rulesPath)
	if err != nil {
		t.Fatal(err)
	}

	srv := dovecottest.Start(t, dovecottest.Options{Users: map[string]string{"popuser": "pop-secret"}})
	srv.Append(t, "popuser", "INBOX", pollMsg("popuser", 1))
	popHost, popPort := splitHostPort(t, srv.POP3Addr())
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	relayPort := freePort(t) // nothing listens there: DSNs wait in the outbox

	poller := func(name, password string) string {
		return fmt.Sprintf(`  - name: %s
    protocol: pop3
    host: %s
    port: %s
    tls: none
    interval: 1s
    timeout: 10s
    username: popuser
    auth: {method: password, password: %s}
    mode: single
    deliver_to: alice@example.com
`, name, popHost, popPort, password)
	}
	root := t.TempDir()
	e := &env{t: t, root: root, drop: filepath.Join(root, "drop"), mail: filepath.Join(root, "mail"), cfgPath: filepath.Join(root, "mxdrop.yaml")}
	if err := os.MkdirAll(e.drop, 0o750); err != nil {
		t.Fatal(err)
	}
	e.writeConfig(fmt.Sprintf(`state_dir: ./state
log: {level: info, format: json}
metrics:
  listen: %s
smtp:
  host: 127.0.0.1
  port: %d
  tls: none
  reporting_mta: mx.example.com
accounts:
  - address: alice@example.com
    maildir: ./mail/alice
connectors:
  - name: mx
    drop_folder: ./drop
    subdomains: [example.com]
    settle: 100ms
    spam_check: true
spam:
  words: [lottery]
pollers:
`, metricsAddr, relayPort) + poller("pop", "pop-secret") + poller("pop-badpass", "wrong-secret"))
	p := e.start("run")
	p.waitLog(t, "metrics endpoint listening", 10*time.Second)
	prom := startPrometheus(t, metricsAddr, rules)
	prom.waitFor(t, `up{job="mxdrop"} == 1`)

	// Two batches, scraped in between, so that the counters and the latency histogram
	// move between samples and rates and quantiles are numbers.
	batch := func(n int) {
		dropFile(t, e.drop, fmt.Sprintf("ok-%d", n), msg(fmt.Sprintf("ok-%d@test", n), "X-Original-To", "alice@example.com"))
		spam := msg(fmt.Sprintf("spam-%d@test", n), "X-Original-To", "alice@example.com")
		spam = []byte(strings.Replace(string(spam), "Subject: ", "Subject: lottery ", 1))
		dropFile(t, e.drop, fmt.Sprintf("spam-%d", n), spam)
		dropFile(t, e.drop, fmt.Sprintf("unknown-%d", n), msg(fmt.Sprintf("unknown-%d@test", n), "X-Original-To", "nobody@example.com"))
	}
	batch(1)
	prom.waitFor(t, `sum(mxdrop_messages_total{kind="connector"}) >= 3`)
	batch(2)
	prom.waitFor(t, `sum(mxdrop_messages_total{kind="connector"}) >= 6`)
	prom.waitFor(t, `increase(mxdrop_poller_cycles_total{poller="pop", result="ok"}[1m]) > 0`)
	prom.waitFor(t, `increase(mxdrop_poller_cycles_total{poller="pop-badpass", result="error"}[1m]) > 0`)
	prom.waitFor(t, `mxdrop_outbox_queued > 0`)

	// The template variables: label_values(metric, label) must list the instance.
	vars := map[string]string{"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1m"}
	labelValues := regexp.MustCompile(`^label_values\((\w+),\s*(\w+)\)$`)
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := labelValues.FindStringSubmatch(v.Definition)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(metric, label)", v.Name, v.Definition)
			continue
		}
		_, body := httpGet(t, prom.base+"/api/v1/label/"+m[2]+"/values?match[]="+url.QueryEscape(m[1]))
		var resp struct{ Data []string }
		json.Unmarshal([]byte(body), &resp)
		if !slices.Contains(resp.Data, metricsAddr) {
			t.Errorf("variable %s (%s) = %q, want it to list %s", v.Name, v.Definition, resp.Data, metricsAddr)
		}
		// Grafana puts a multi-value variable into a regex with its values escaped.
		vars["$"+v.Name] = strings.ReplaceAll(regexp.QuoteMeta(metricsAddr), `\`, `\\`)
	}

	var queries int
	for _, panel := range dash.Panels {
		if panel.Type == "row" {
			continue
		}
		if len(panel.Targets) == 0 {
			t.Errorf("panel %q has no query", panel.Title)
		}
		for _, target := range panel.Targets {
			q := target.Expr
			for k, v := range vars {
				q = strings.ReplaceAll(q, k, v)
			}
			if strings.Contains(q, "$") {
				t.Errorf("panel %q %s: a variable is left in %s", panel.Title, target.RefID, q)
				continue
			}
			queries++
			if v := prom.query(t, q); !hasData(v) {
				t.Errorf("panel %q %s: no data for %s: %v", panel.Title, target.RefID, q, v)
			}
		}
	}
	if queries < 15 {
		t.Errorf("only %d queries in the dashboard", queries)
	}

	// The rules: every mxdrop series they name exists, and each rule evaluates cleanly.
	text, err := os.ReadFile(rules)
	if err != nil {
		t.Fatal(err)
	}
	names := regexp.MustCompile(`\bmxdrop_[a-z_]+\b`).FindAllString(string(text), -1)
	slices.Sort(names)
	for _, name := range slices.Compact(names) {
		if v := prom.query(t, name); len(v) == 0 {
			t.Errorf("the rules name %s, which mxdrop does not export", name)
		}
	}
	var evaluated []string
	waitUntil(t, "every rule evaluated", 10*time.Second, func() bool {
		_, body := httpGet(t, prom.base+"/api/v1/rules")
		var resp struct {
			Data struct {
				Groups []struct {
					Rules []struct {
						Name, Health, LastError string
					}
				}
			}
		}
		json.Unmarshal([]byte(body), &resp)
		evaluated = evaluated[:0]
		for _, g := range resp.Data.Groups {
			for _, r := range g.Rules {
				switch r.Health {
				case "ok":
					evaluated = append(evaluated, r.Name)
				case "unknown":
					return false
				default:
					t.Errorf("rule %s: health %s: %s", r.Name, r.Health, r.LastError)
				}
			}
		}
		return len(evaluated) > 0
	})
	if want := strings.Count(string(text), "- alert: "); len(evaluated) != want || want == 0 {
		t.Errorf("Prometheus evaluated %d rules (%v), want the %d of %s", len(evaluated), evaluated, want, rulesPath)
	}
	p.stop(t)
}
