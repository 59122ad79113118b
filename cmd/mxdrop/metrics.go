package main

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/mxdrop/mxdrop/bounce"
	"github.com/mxdrop/mxdrop/importer"
	"github.com/mxdrop/mxdrop/importer/intake"
	"github.com/mxdrop/mxdrop/pollers"
	"github.com/mxdrop/mxdrop/watcher"
)

// metrics are mxdrop's Prometheus metrics. Counters are fed by the components' Observe
// hooks; the backlog, outbox and poller gauges are read at scrape time.
type metrics struct {
	reg *prometheus.Registry

	messages    *prometheus.CounterVec
	deliveries  *prometheus.CounterVec
	linked      *prometheus.CounterVec
	failedRcpts *prometheus.CounterVec
	bytes       *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	bounces     *prometheus.CounterVec
	cycles      *prometheus.CounterVec

	mu   sync.Mutex
	live *liveState
}

// liveState is what the scrape-time gauges and /readyz look at; replaced on reload.
type liveState struct {
	a       *app
	m       *watcher.Manager
	bouncer *bounce.Bouncer
	ps      []*pollers.Poller
}

func newMetrics() *metrics {
	mt := &metrics{reg: prometheus.NewRegistry()}
	mt.messages = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mxdrop_messages_total",
		Help: "Messages processed, by source (connector or poller), kind and outcome (delivered, partial, failed, rejected, retry; duplicate for pollers).",
	}, []string{"source", "kind", "outcome"})
	mt.deliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mxdrop_deliveries_total",
		Help: "Copies written into account Maildirs, by source and folder (inbox or the spam folder).",
	}, []string{"source", "folder"})
	mt.linked = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mxdrop_linked_deliveries_total",
		Help: "Deliveries that are the message's own drop file, hard linked into the Maildir instead of copied (counted in mxdrop_deliveries_total too), by source.",
	}, []string{"source"})
	mt.failedRcpts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mxdrop_failed_recipients_total",
		Help: "Recipients that could not be delivered, by source and enhanced status code.",
	}, []string{"source", "status"})
	mt.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mxdrop_message_bytes_total",
		Help: "Bytes of imported messages, by source.",
	}, []string{"source"})
	mt.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "mxdrop_import_duration_seconds",
		Help:    "Time to import one message (a drop-folder file, a polled message), durable deliveries and acknowledgement included.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
	}, []string{"source"})
	mt.bounces = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mxdrop_bounces_total",
		Help: "DSN decisions, by source, action (queued, unsent, duplicate, suppressed, disabled) and suppressing rule.",
	}, []string{"source", "action", "rule"})
	mt.cycles = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mxdrop_poller_cycles_total",
		Help: "Poller cycles, by poller and result (ok, error).",
	}, []string{"poller", "result"})
	mt.reg.MustRegister(mt.messages, mt.deliveries, mt.linked, mt.failedRcpts, mt.bytes, mt.duration, mt.bounces, mt.cycles,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), mt, readyCollector{mt})
	return mt
}

// observeMessage is the intake's Observe hook, for connectors and pollers alike.
func (mt *metrics) observeMessage(ev intake.Event) {
	var outcome string
	switch ev.Outcome {
	case intake.Skipped:
		return
	case intake.Retry, intake.Duplicate:
		outcome = string(ev.Outcome)
	default:
		outcome = string(ev.Result.Outcome)
	}
	mt.messages.WithLabelValues(ev.Source, ev.Kind, outcome).Inc()
	mt.observeResult(ev.Source, ev.Result)
	mt.duration.WithLabelValues(ev.Source).Observe(ev.Duration.Seconds())
}

func (mt *metrics) observeResult(source string, res importer.Result) {
	for _, dl := range res.Delivered {
		folder := dl.Folder
		if folder == "" {
			folder = "inbox"
		}
		mt.deliveries.WithLabelValues(source, folder).Inc()
		if dl.Linked {
			mt.linked.WithLabelValues(source).Inc()
		}
	}
	for _, f := range res.Failed {
		mt.failedRcpts.WithLabelValues(source, f.Status).Inc()
	}
	if res.Size > 0 {
		mt.bytes.WithLabelValues(source).Add(float64(res.Size))
	}
}

// observeCycle is the pollers' Observe hook.
func (mt *metrics) observeCycle(poller string, st pollers.CycleStats, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	mt.cycles.WithLabelValues(poller, result).Inc()
	// The series exist from the first cycle, as a connector's exist from its first file.
	mt.deliveries.WithLabelValues(poller, "inbox").Add(0)
	mt.messages.WithLabelValues(poller, intake.KindPoller, string(importer.OutcomeDelivered)).Add(0)
	mt.messages.WithLabelValues(poller, intake.KindPoller, string(importer.OutcomeFailed)).Add(0)
}

// observeBounce is the bouncer's Observe hook.
func (mt *metrics) observeBounce(source, action, rule string) {
	mt.bounces.WithLabelValues(source, action, rule).Inc()
}

func (mt *metrics) setLive(l *liveState) {
	mt.mu.Lock()
	mt.live = l
	mt.mu.Unlock()
}

func (mt *metrics) getLive() *liveState {
	mt.mu.Lock()
	defer mt.mu.Unlock()
	return mt.live
}

var (
	backlogDesc = prometheus.NewDesc("mxdrop_drop_folder_backlog",
		"Files waiting in a connector's drop folder (claimed ones included).", []string{"connector"}, nil)
	oldestDesc = prometheus.NewDesc("mxdrop_drop_folder_oldest_age_seconds",
		"Age of the oldest file waiting in a connector's drop folder; 0 when it is empty.", []string{"connector"}, nil)
	quarantineDesc = prometheus.NewDesc("mxdrop_import_failed_files",
		"Quarantined messages in a source's ImportFailed folder; the label names the connector or poller.", []string{"connector"}, nil)
	outboxDesc = prometheus.NewDesc("mxdrop_outbox_queued",
		"DSNs waiting in the outbox for the relay.", nil, nil)
	outboxOldestDesc = prometheus.NewDesc("mxdrop_outbox_oldest_age_seconds",
		"Age of the oldest DSN waiting in the outbox; 0 when it is empty.", nil, nil)
	pollerSuccessDesc = prometheus.NewDesc("mxdrop_poller_last_success_timestamp_seconds",
		"Unix time of a poller's last successful cycle; 0 before the first.", []string{"poller"}, nil)
	pollerErrorsDesc = prometheus.NewDesc("mxdrop_poller_errors",
		"Failed cycles of a poller since mxdrop started.", []string{"poller"}, nil)
	spamDesc = prometheus.NewDesc("mxdrop_spam_checks_total",
		"Spam checks since the last configuration load, by result (clean, spam_sender, spam_word, spam_spamd, unchecked).", []string{"result"}, nil)
	watcherUpDesc = prometheus.NewDesc("mxdrop_watcher_up",
		"1 while a connector's drop-folder watcher runs, 0 while it waits to retry.", []string{"connector"}, nil)
)

// Describe and Collect make metrics a collector of the scrape-time gauges.
func (mt *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{spamDesc, backlogDesc, oldestDesc, quarantineDesc, outboxDesc, outboxOldestDesc, pollerSuccessDesc, pollerErrorsDesc, watcherUpDesc} {
		ch <- d
	}
}

func (mt *metrics) Collect(ch chan<- prometheus.Metric) {
	l := mt.getLive()
	if l == nil {
		return
	}
	now := time.Now()
	for _, c := range l.a.connectors {
		n, _, oldest := folderBacklog(c)
		age := 0.0
		if !oldest.IsZero() {
			age = now.Sub(oldest).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(backlogDesc, prometheus.GaugeValue, float64(n), c.Name)
		ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, age, c.Name)
		ch <- prometheus.MustNewConstMetric(quarantineDesc, prometheus.GaugeValue, float64(c.Intake.Quarantine.Count()), c.Name)
	}
	for _, h := range l.m.Health() {
		up := 0.0
		if h.Running {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(watcherUpDesc, prometheus.GaugeValue, up, h.Connector)
	}
	if ob := l.bouncer.Outbox(); ob != nil {
		var n int
		var oldest time.Time
		ob.Each(time.Time{}, func(state string, r bounce.Record) {
			if state != bounce.StateQueued {
				return
			}
			n++
			if oldest.IsZero() || r.Queued.Before(oldest) {
				oldest = r.Queued
			}
		})
		age := 0.0
		if !oldest.IsZero() {
			age = now.Sub(oldest).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(outboxDesc, prometheus.GaugeValue, float64(n))
		ch <- prometheus.MustNewConstMetric(outboxOldestDesc, prometheus.GaugeValue, age)
	}
	if l.a.spam != nil {
		n := l.a.spam.Counts()
		clean := n.Checked - n.Spam - n.Unchecked
		for result, v := range map[string]uint64{"clean": clean, "spam_sender": n.BySender, "spam_word": n.ByWord, "spam_spamd": n.BySpamd, "unchecked": n.Unchecked} {
			ch <- prometheus.MustNewConstMetric(spamDesc, prometheus.CounterValue, float64(v), result)
		}
	}
	for _, p := range l.ps {
		h := p.Health()
		ts := 0.0
		if !h.LastSuccess.IsZero() {
			ts = float64(h.LastSuccess.UnixNano()) / 1e9
		}
		ch <- prometheus.MustNewConstMetric(pollerSuccessDesc, prometheus.GaugeValue, ts, h.Poller)
		ch <- prometheus.MustNewConstMetric(pollerErrorsDesc, prometheus.GaugeValue, float64(h.Errors), h.Poller)
		ch <- prometheus.MustNewConstMetric(quarantineDesc, prometheus.GaugeValue, float64(p.Intake().Quarantine.Count()), h.Poller)
	}
}

// folderBacklog counts the files waiting in a connector's drop folder, and claimed
// ones (claim names there, and files in claims folders), how many of them are claimed,
// and finds the oldest mtime. It reads the folders on every call: its cost grows with
// the backlog, which is what it measures.
func folderBacklog(c *watcher.Connector) (n, claimed int, oldest time.Time) {
	drop := []string{c.DropFolder, filepath.Join(c.DropFolder, "new")}
	claimDirs, _ := filepath.Glob(filepath.Join(c.DropFolder, watcher.WorkDir, "claims", "*"))
	for i, dir := range append(drop, claimDirs...) {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			// Dot-files are writers' temporary files and a claims folder's lock and
			// lease, except claim names.
			named := watcher.IsClaimName(e.Name())
			if (strings.HasPrefix(e.Name(), ".") && !named) || !e.Type().IsRegular() {
				continue
			}
			n++
			if named || i >= len(drop) {
				claimed++
			}
			if fi, err := e.Info(); err == nil && (oldest.IsZero() || fi.ModTime().Before(oldest)) {
				oldest = fi.ModTime()
			}
		}
	}
	return n, claimed, oldest
}

// check is one line of /readyz's answer.
type check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Reason string `json:"reason,omitempty"`
}

// readiness evaluates /readyz: every active connector's watcher runs, the state folder is
// writable, and no poller has been failing for longer than poller_failure_unready.
func (mt *metrics) readiness() (bool, []check) {
	l := mt.getLive()
	if l == nil {
		return false, []check{{Name: "startup", Reason: "starting"}}
	}
	var checks []check
	ready := true
	add := func(c check) {
		checks = append(checks, c)
		if !c.OK {
			ready = false
		}
	}
	health := map[string]watcher.WatchHealth{}
	for _, h := range l.m.Health() {
		health[h.Connector] = h
	}
	for _, c := range l.a.connectors {
		h, ok := health[c.Name]
		switch {
		case !ok:
			add(check{Name: "watcher " + c.Name, Reason: "not started yet"})
		case !h.Running:
			add(check{Name: "watcher " + c.Name, Reason: "not running since " + h.Since.Format(time.RFC3339) + ": " + h.LastError})
		default:
			add(check{Name: "watcher " + c.Name, OK: true})
		}
	}
	stateDir := l.a.cfg.StateDir
	if err := probeWritable(stateDir); err != nil {
		add(check{Name: "state_dir", Reason: err.Error()})
	} else {
		add(check{Name: "state_dir", OK: true})
	}
	limit := l.a.cfg.Metrics.PollerFailureUnready.D()
	for _, p := range l.ps {
		h := p.Health()
		if !h.FailingSince.IsZero() && time.Since(h.FailingSince) > limit {
			add(check{Name: "poller " + h.Poller, Reason: "failing since " + h.FailingSince.Format(time.RFC3339) + ": " + h.LastError})
		} else {
			add(check{Name: "poller " + h.Poller, OK: true})
		}
	}
	return ready, checks
}

func probeWritable(dir string) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".readyz-")
	if err != nil {
		return err
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// serve runs the /metrics, /healthz and /readyz endpoint on addr until ctx is done.
func (mt *metrics) serve(ctx context.Context, addr string, log zerolog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(mt.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ready, checks := mt.readiness()
		w.Header().Set("Content-Type", "application/json")
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		json.NewEncoder(w).Encode(struct {
			Ready  bool    `json:"ready"`
			Checks []check `json:"checks"`
		}{ready, checks})
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	log.Info().Str("listen", ln.Addr().String()).Msg("metrics endpoint listening")
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
