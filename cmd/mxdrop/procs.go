package main

import (
	"os"
	"runtime"
)

// procsPerCPU is how many Go processors (GOMAXPROCS) mxdrop runs per CPU it may use.
//
// mxdrop's file work is blocking system calls (fdatasync, fsync, renames, links), and
// a goroutine in one keeps its processor until the runtime's sysmon thread takes it
// back, one to several of its ticks later (20 µs at best, up to 10 ms after a quiet
// spell). With one processor per CPU, a slow disk holds both processors of a 2-CPU
// machine in fdatasync, and the inotify reader, the event loop and the next worker
// wait for sysmon: at 2,000 files/s on a slow disk, timestamps inside the daemon put
// the wait between a file's offer and its worker at 0.3-0.5 ms median and 7 ms at the
// 90th percentile, most of a message's latency. Spare processors let a goroutine made
// runnable start at once on an idle one (the kernel still shares the CPUs). With 8 on
// that machine the wait fell to 0.05 ms median, and the benchmark's median latency to
// 0.9-1.9 ms from 2.9-5 ms in four interleaved pairs. Where system calls never block
// (a tmpfs) the spare processors cost about 10% more CPU per file.
const procsPerCPU = 4

// setProcs gives the runtime procsPerCPU processors per CPU (the runtime's default,
// which follows the CPU affinity and the cgroup's CPU limit), unless the GOMAXPROCS
// environment variable sets them. It returns the number in effect.
func setProcs() int {
	if os.Getenv("GOMAXPROCS") != "" {
		return runtime.GOMAXPROCS(0)
	}
	n := procsFor(runtime.GOMAXPROCS(0))
	runtime.GOMAXPROCS(n)
	return n
}

// procsFor is the number of processors for a default of def.
func procsFor(def int) int { return max(def, 1) * procsPerCPU }
