//go:build mxdrop_stages

package watcher

import (
	"bufio"
	"fmt"
	"os"
	"sync"
	"time"
)

// A build made with -tags mxdrop_stages notes when each drop file reached each stage
// of its way to visibility and after (see the stage constants), and writes one line
// per file at the end of Manager.Run to the file named by MXDROP_STAGES:
//
//	<name> <read> <worker> <claimed> <visible> <synced>
//
// in Unix nanoseconds, 0 for a stage not reached. mxdrop-bench -mode latency -stages
// joins them with its own send and arrival times. The notes are kept in memory until
// the end: a diagnostic build for benchmark runs, never for service.

var stageLog = struct {
	sync.Mutex
	on    bool
	files map[string]*[stageCount]int64
}{on: os.Getenv("MXDROP_STAGES") != "", files: map[string]*[stageCount]int64{}}

func stage(name string, s int) {
	if !stageLog.on {
		return
	}
	t := time.Now().UnixNano()
	stageLog.Lock()
	f := stageLog.files[name]
	if f == nil {
		f = new([stageCount]int64)
		stageLog.files[name] = f
	}
	f[s] = t
	stageLog.Unlock()
}

func stagePath(path string, s int) { stage(OriginalName(path), s) }

func writeStages() {
	if !stageLog.on {
		return
	}
	out, err := os.Create(os.Getenv("MXDROP_STAGES"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "mxdrop stages:", err)
		return
	}
	defer out.Close()
	w := bufio.NewWriter(out)
	stageLog.Lock()
	defer stageLog.Unlock()
	for name, f := range stageLog.files {
		fmt.Fprint(w, name)
		for _, t := range f {
			fmt.Fprint(w, " ", t)
		}
		fmt.Fprintln(w)
	}
	if err := w.Flush(); err != nil {
		fmt.Fprintln(os.Stderr, "mxdrop stages:", err)
	}
}
