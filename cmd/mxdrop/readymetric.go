package main

import "github.com/prometheus/client_golang/prometheus"

var readyDesc = prometheus.NewDesc("mxdrop_ready",
	"1 when /readyz answers 200 (every watcher runs, state_dir is writable, no poller fails for longer than poller_failure_unready), else 0.", nil, nil)

// readyCollector exports /readyz's verdict as a gauge, so that an alert can tell a
// process that is up but not ready (a watcher down, a full disk) from one that is gone.
type readyCollector struct{ mt *metrics }

func (c readyCollector) Describe(ch chan<- *prometheus.Desc) { ch <- readyDesc }

func (c readyCollector) Collect(ch chan<- prometheus.Metric) {
	if c.mt.getLive() == nil {
		return
	}
	ready, _ := c.mt.readiness()
	v := 0.0
	if ready {
		v = 1
	}
	ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, v)
}
