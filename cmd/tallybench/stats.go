package main

import (
	"math"
	"slices"
	"time"
)

// sample is what one run of a workload measured: the latency of every
// operation that completed (successful or not) and how many failed.
type sample struct {
	latencies []time.Duration
	errors    int
	elapsed   time.Duration
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
	Workload  string  `json:"workload"`
	Database  string  `json:"database"`
	Clients   int     `json:"clients"`
	Rounds    int     `json:"rounds"`
	Ops       int     `json:"ops"`
	Errors    int     `json:"errors"`
	ErrorRate float64 `json:"error_rate"`
	Seconds   float64 `json:"seconds"`
	OpsPerSec float64 `json:"ops_per_sec"`
	P50ms     float64 `json:"p50_ms"`
	P95ms     float64 `json:"p95_ms"`
	P99ms     float64 `json:"p99_ms"`
	// Baseline names the row this one is compared with, and Ratio is this
	// row's throughput over the baseline's (empty and 0 for a baseline).
	Baseline string  `json:"baseline,omitempty"`
	Ratio    float64 `json:"ratio_to_baseline,omitempty"`
	// P99Ratio is this row's p99 over the baseline's p99.
	P99Ratio float64 `json:"p99_ratio_to_baseline,omitempty"`
}

// summarize computes throughput and latency percentiles. Ops counts
// successful operations only: a failed request is not throughput.
func summarize(workload, db string, clients, rounds int, s sample) summary {
	sorted := slices.Clone(s.latencies)
	slices.Sort(sorted)
	ok := len(sorted) - s.errors
	out := summary{
		Workload: workload, Database: db, Clients: clients, Rounds: rounds,
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
	return out
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// compare fills in r's ratios to its baseline b.
func compare(r *summary, b summary) {
	r.Baseline = b.Workload
	if b.OpsPerSec > 0 {
		r.Ratio = r.OpsPerSec / b.OpsPerSec
	}
	if b.P99ms > 0 {
		r.P99Ratio = r.P99ms / b.P99ms
	}
}
