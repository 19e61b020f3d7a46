package main

import (
	"math"
	"slices"
	"time"
)

// sample is what one run of a workload measured: the latency of every
// operation that completed (successful or not), how many failed, and, for
// a workload served by Tally, what the server process used meanwhile.
type sample struct {
	latencies []time.Duration
	errors    int
	elapsed   time.Duration
	server    serverUsage
}

// serverUsage is the Tally process's share of a run, read from /proc and
// from its /metrics counters.
type serverUsage struct {
	measured bool
	// peakRSS is the largest resident set seen during the run, in bytes.
	peakRSS int64
	// rssMethod says how peakRSS was taken: "VmHWM" (the kernel's own
	// high-water mark, reset before the run) or "sampled" (VmRSS every
	// 100 ms, when the mark cannot be reset).
	rssMethod string
	// cpu is the user+system time the process used during the run.
	cpu time.Duration
	// The ledger's counters over the run (differences of /metrics).
	retries, conflicts, ledgerTxns float64
}

// add pools two runs' usage: peaks take the larger, times and counts add.
func (u serverUsage) add(o serverUsage) serverUsage {
	if !o.measured {
		return u
	}
	if !u.measured {
		return o
	}
	u.peakRSS = max(u.peakRSS, o.peakRSS)
	if u.rssMethod != o.rssMethod {
		u.rssMethod = "mixed"
	}
	u.cpu += o.cpu
	u.retries += o.retries
	u.conflicts += o.conflicts
	u.ledgerTxns += o.ledgerTxns
	return u
}

// merge pools samples of the same workload and client count taken in
// several rounds, so that the percentiles are over every operation rather
// than an average of per-round percentiles (which would hide a bad round).
func merge(ss []sample) sample {
	var out sample
	for _, s := range ss {
		out.latencies = append(out.latencies, s.latencies...)
		out.errors += s.errors
		out.elapsed += s.elapsed
		out.server = out.server.add(s.server)
	}
	return out
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted: the smallest value such that at least p% of the values are at or
// below it. Nearest rank never invents a latency that was not observed,
// and p99 of fewer than 100 values is the maximum, which is the honest
// answer for a short run.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// summary is one row of the report.
type summary struct {
	Workload    string `json:"workload"`
	Description string `json:"description"`
	// Group is the API workload a baseline row belongs to, so that the
	// table and the chart put each workload beside its baselines.
	Group    string `json:"group"`
	Database string `json:"database"`
	Clients  int    `json:"clients"`
	// TargetRate is the request rate of an open-loop run (0 for closed
	// loop, where Clients is the concurrency).
	TargetRate float64 `json:"target_rate,omitempty"`
	Rounds     int     `json:"rounds"`
	Ops        int     `json:"ops"`
	Errors     int     `json:"errors"`
	ErrorRate  float64 `json:"error_rate"`
	Seconds    float64 `json:"seconds"`
	OpsPerSec  float64 `json:"ops_per_sec"`
	P50ms      float64 `json:"p50_ms"`
	P95ms      float64 `json:"p95_ms"`
	P99ms      float64 `json:"p99_ms"`

	// The server's share, for workloads it serves (baselines do not go
	// through it): ledger retries and conflicts over the run, retries per
	// successful operation, peak RSS and CPU in cores (1.35 = one core and
	// a third busy on average).
	ViaServer    bool    `json:"via_server"`
	Retries      int64   `json:"retries,omitempty"`
	Conflicts    int64   `json:"conflicts,omitempty"`
	RetryRate    float64 `json:"retry_rate,omitempty"`
	ServerRSSMiB float64 `json:"server_peak_rss_mib,omitempty"`
	RSSMethod    string  `json:"server_rss_method,omitempty"`
	ServerCPU    float64 `json:"server_cpu_cores,omitempty"`

	// Comparisons: this row's throughput and p99 over those of each
	// baseline of the same client count (the first is the one the issue's
	// targets are stated against).
	Versus []ratio `json:"versus,omitempty"`
}

// ratio compares a workload with one baseline.
type ratio struct {
	Baseline string  `json:"baseline"`
	Ops      float64 `json:"ops_ratio"`
	P99      float64 `json:"p99_ratio"`
}

// summarize computes throughput and latency percentiles. Ops counts
// successful operations only: a failed request is not throughput.
func summarize(w *workload, db string, clients int, rate float64, rounds int, s sample) summary {
	sorted := slices.Clone(s.latencies)
	slices.Sort(sorted)
	ok := len(sorted) - s.errors
	out := summary{
		Workload: w.name, Description: w.desc, Group: w.group, Database: db,
		Clients: clients, TargetRate: rate, Rounds: rounds,
		Ops: ok, Errors: s.errors, Seconds: s.elapsed.Seconds(),
		P50ms: ms(percentile(sorted, 50)),
		P95ms: ms(percentile(sorted, 95)),
		P99ms: ms(percentile(sorted, 99)),
	}
	if len(sorted) > 0 {
		out.ErrorRate = float64(s.errors) / float64(len(sorted))
	}
	if s.elapsed > 0 {
		out.OpsPerSec = float64(ok) / s.elapsed.Seconds()
	}
	if u := s.server; u.measured {
		out.ViaServer = true
		out.Retries, out.Conflicts = int64(u.retries), int64(u.conflicts)
		if ok > 0 {
			out.RetryRate = u.retries / float64(ok)
		}
		out.ServerRSSMiB = float64(u.peakRSS) / (1 << 20)
		out.RSSMethod = u.rssMethod
		if s.elapsed > 0 {
			out.ServerCPU = u.cpu.Seconds() / s.elapsed.Seconds()
		}
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// compare records r's ratios to baseline b, replacing an earlier
// comparison with the same baseline.
func compare(r *summary, b summary) {
	c := ratio{Baseline: b.Workload}
	if b.OpsPerSec > 0 {
		c.Ops = r.OpsPerSec / b.OpsPerSec
	}
	if b.P99ms > 0 {
		c.P99 = r.P99ms / b.P99ms
	}
	for i := range r.Versus {
		if r.Versus[i].Baseline == b.Workload {
			r.Versus[i] = c
			return
		}
	}
	r.Versus = append(r.Versus, c)
}

// versus returns r's comparison with the named baseline, if any.
func (r summary) versus(baseline string) (ratio, bool) {
	for _, c := range r.Versus {
		if c.Baseline == baseline {
			return c, true
		}
	}
	return ratio{}, false
}

// slope fits y = a + b·x by least squares and returns b; with fewer than
// two distinct x it returns 0 (no trend can be told).
func slope(xs, ys []float64) float64 {
	n := float64(len(xs))
	if len(xs) < 2 || len(xs) != len(ys) {
		return 0
	}
	var sx, sy float64
	for i := range xs {
		sx += xs[i]
		sy += ys[i]
	}
	mx, my := sx/n, sy/n
	var num, den float64
	for i := range xs {
		num += (xs[i] - mx) * (ys[i] - my)
		den += (xs[i] - mx) * (xs[i] - mx)
	}
	if den == 0 {
		return 0
	}
	return num / den
}
