package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Latency mode with -stages: an mxdrop built with -tags mxdrop_stages notes when each
// drop file reached each stage (watcher/stages_on.go) and writes the notes where
// MXDROP_STAGES says as it exits. The benchmark joins them with its own send and arrival
// times and prints where the slowest 1% of the messages spent their time, beside the
// fastest half: a tail that builds up before the event is read is the machine's (or
// the inotify reader's wake-up), one between read and worker is the hand-off, and so
// on. Both processes read the same clock (CLOCK_REALTIME through time.Now).

// The stages in the daemon's lines, in their order there.
const (
	stRead = iota
	stWorker
	stClaimed
	stVisible
	stSynced
	stCount
)

// stageSpans names the spans printed, from one stage (or the send, -1) to the next
// (or the arrival seen by the benchmark, stCount).
var stageSpans = []struct {
	name     string
	from, to int
}{
	{"sent -> event read", -1, stRead},
	{"event read -> worker", stRead, stWorker},
	{"worker -> claimed", stWorker, stClaimed},
	{"claimed -> visible", stClaimed, stVisible},
	{"visible -> seen by the benchmark", stVisible, stCount},
	{"visible -> synced (after; not in the latency)", stVisible, stSynced},
}

// readStages reads the daemon's stage lines: a name and stCount times each. Lines of
// other names (not the benchmark's m%06d) are skipped.
func readStages(r io.Reader, n int) (map[int][stCount]int64, error) {
	out := map[int][stCount]int64{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != stCount+1 {
			return nil, fmt.Errorf("stage line %q: want a name and %d times", sc.Text(), stCount)
		}
		i, err := strconv.Atoi(strings.TrimPrefix(f[0], "m"))
		if !strings.HasPrefix(f[0], "m") || err != nil || i < 0 || i >= n {
			continue
		}
		var t [stCount]int64
		for k := range t {
			if t[k], err = strconv.ParseInt(f[k+1], 10, 64); err != nil {
				return nil, fmt.Errorf("stage line %q: %w", sc.Text(), err)
			}
		}
		out[i] = t
	}
	return out, sc.Err()
}

// stageSummary is the mean of each span over the slowest 1% and over the fastest
// half of the messages with every stage noted.
type stageSummary struct {
	slow, fast   []time.Duration // per span of stageSpans
	nSlow, nFast int
}

// summarizeStages ranks the messages with all stages noted by their latency (arrival
// minus send) and averages each span over the slowest 1% and the fastest half.
func summarizeStages(st map[int][stCount]int64, sent, arrived []time.Time) stageSummary {
	type row struct {
		lat  time.Duration
		span []time.Duration
	}
	var rows []row
	for i, t := range st {
		if i >= len(sent) || sent[i].IsZero() || arrived[i].IsZero() {
			continue
		}
		complete := true
		for _, v := range t {
			complete = complete && v != 0
		}
		if !complete {
			continue
		}
		at := func(k int) int64 {
			switch k {
			case -1:
				return sent[i].UnixNano()
			case stCount:
				return arrived[i].UnixNano()
			}
			return t[k]
		}
		r := row{lat: arrived[i].Sub(sent[i])}
		for _, sp := range stageSpans {
			r.span = append(r.span, time.Duration(at(sp.to)-at(sp.from)))
		}
		rows = append(rows, r)
	}
	sort.Slice(rows, func(a, b int) bool { return rows[a].lat < rows[b].lat })
	mean := func(rs []row) []time.Duration {
		m := make([]time.Duration, len(stageSpans))
		for _, r := range rs {
			for k, d := range r.span {
				m[k] += d
			}
		}
		for k := range m {
			if len(rs) > 0 {
				m[k] /= time.Duration(len(rs))
			}
		}
		return m
	}
	slow := rows[len(rows)-len(rows)/100:]
	fast := rows[:len(rows)/2]
	return stageSummary{slow: mean(slow), fast: mean(fast), nSlow: len(slow), nFast: len(fast)}
}

// printStages reports the stages the daemon wrote to file, if it wrote any.
func printStages(label, file string, sent, arrived []time.Time) {
	f, err := os.Open(file)
	if err != nil {
		fmt.Printf("stages, %s: none written (%v): build it with -tags mxdrop_stages\n", label, err)
		return
	}
	defer f.Close()
	st, err := readStages(f, len(sent))
	if err != nil {
		fmt.Printf("stages, %s: %v\n", label, err)
		return
	}
	s := summarizeStages(st, sent, arrived)
	if s.nSlow == 0 {
		fmt.Printf("stages, %s: too few messages with every stage noted (%d)\n", label, len(st))
		return
	}
	fmt.Printf("stages, %s, mean of the slowest 1%% (%d messages) | of the fastest half (%d):\n", label, s.nSlow, s.nFast)
	for k, sp := range stageSpans {
		fmt.Printf("  %-46s %8v | %v\n", sp.name, s.slow[k].Round(time.Microsecond), s.fast[k].Round(time.Microsecond))
	}
}
