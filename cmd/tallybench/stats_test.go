package main

import (
	"math"
	"testing"
	"time"
)

func TestPercentileNearestRank(t *testing.T) {
	var xs []time.Duration
	for i := 1; i <= 100; i++ {
		xs = append(xs, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{
		{50, 50 * time.Millisecond}, {95, 95 * time.Millisecond},
		{99, 99 * time.Millisecond}, {100, 100 * time.Millisecond},
		{0.1, 1 * time.Millisecond},
	} {
		if got := percentile(xs, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if got := percentile(nil, 99); got != 0 {
		t.Errorf("p99 of nothing = %v, want 0", got)
	}
	// Fewer than 100 values: p99 is the maximum, never an interpolation.
	small := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if got := percentile(small, 99); got != 10 {
		t.Errorf("p99 of 10 values = %v, want the maximum 10", got)
	}
	if got := percentile(small, 50); got != 5 {
		t.Errorf("p50 of 10 values = %v, want 5", got)
	}
}

func TestSummarize(t *testing.T) {
	s := sample{
		// Unsorted on purpose: summarize must sort a copy.
		latencies: []time.Duration{4 * time.Millisecond, 1 * time.Millisecond, 3 * time.Millisecond, 2 * time.Millisecond},
		errors:    1,
		elapsed:   time.Second,
	}
	got := summarize(&workload{name: "W1", group: "W1"}, "sqlite", 8, 0, 1, s)
	if got.Ops != 3 || got.Errors != 1 || got.OpsPerSec != 3 || got.ErrorRate != 0.25 {
		t.Errorf("summary = %+v", got)
	}
	if got.P50ms != 2 || got.P99ms != 4 {
		t.Errorf("p50 %v p99 %v, want 2 and 4", got.P50ms, got.P99ms)
	}
	if s.latencies[0] != 4*time.Millisecond {
		t.Error("summarize sorted the caller's slice")
	}
	compare(&got, summary{Workload: "B1", OpsPerSec: 6, P99ms: 2})
	compare(&got, summary{Workload: "B2", OpsPerSec: 12, P99ms: 8})
	// A second comparison with the same baseline replaces the first.
	compare(&got, summary{Workload: "B1", OpsPerSec: 6, P99ms: 2})
	if v, ok := got.versus("B1"); !ok || v.Ops != 0.5 || v.P99 != 2 || len(got.Versus) != 2 {
		t.Errorf("compare with B1: %+v", got.Versus)
	}
	if v, ok := got.versus("B2"); !ok || v.Ops != 0.25 || v.P99 != 0.5 {
		t.Errorf("compare with B2: %+v", got.Versus)
	}
	m := merge([]sample{s, s})
	if len(m.latencies) != 8 || m.errors != 2 || m.elapsed != 2*time.Second {
		t.Errorf("merge: %+v", m)
	}
}

func TestServerUsagePooled(t *testing.T) {
	a := sample{latencies: []time.Duration{1, 2}, elapsed: time.Second,
		server: serverUsage{measured: true, peakRSS: 100 << 20, rssMethod: "VmHWM", cpu: 500 * time.Millisecond, retries: 2}}
	b := sample{latencies: []time.Duration{3, 4}, elapsed: time.Second,
		server: serverUsage{measured: true, peakRSS: 60 << 20, rssMethod: "VmHWM", cpu: 1500 * time.Millisecond, retries: 6}}
	got := summarize(&workload{name: "W1"}, "postgres", 8, 0, 2, merge([]sample{a, b}))
	// Peaks take the larger, CPU is averaged over the time of both runs,
	// retries are per successful operation.
	if got.ServerRSSMiB != 100 || got.ServerCPU != 1 || got.Retries != 8 || got.RetryRate != 2 || got.RSSMethod != "VmHWM" {
		t.Errorf("pooled server usage: %+v", got)
	}
	base := summarize(&workload{name: "B1"}, "postgres", 8, 0, 1, sample{latencies: []time.Duration{1}, elapsed: time.Second})
	if base.ServerRSSMiB != 0 || base.ServerCPU != 0 || base.RetryRate != 0 {
		t.Errorf("a baseline has no server usage: %+v", base)
	}
}

func TestSlope(t *testing.T) {
	for _, c := range []struct {
		name   string
		xs, ys []float64
		want   float64
	}{
		{"rising", []float64{0, 1, 2, 3}, []float64{10, 12, 14, 16}, 2},
		{"flat", []float64{0, 1, 2}, []float64{5, 5, 5}, 0},
		{"noisy falling", []float64{0, 1, 2, 3}, []float64{4, 3.5, 2, 1.5}, -0.9},
		{"one point", []float64{1}, []float64{3}, 0},
		{"no spread in x", []float64{2, 2}, []float64{1, 9}, 0},
	} {
		if got := slope(c.xs, c.ys); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("%s: slope %v, want %v", c.name, got, c.want)
		}
	}
}

func TestRSSTrendSkipsWarmUp(t *testing.T) {
	// The heap grows to its working size in the first 30 s, then holds:
	// the trend must be flat, not the growth of the warm-up.
	rss := []rssSample{{0, 20}, {10, 40}, {20, 55}, {30, 60}, {40, 60}, {50, 60}, {60, 60}}
	if got := rssTrend(rss, 30*time.Second); got != 0 {
		t.Errorf("trend after warm-up = %v MiB/min, want 0", got)
	}
	// 1 MiB every 10 s is 6 MiB a minute.
	growing := []rssSample{{30, 60}, {40, 61}, {50, 62}, {60, 63}}
	if got := rssTrend(growing, 30*time.Second); math.Abs(got-6) > 1e-9 {
		t.Errorf("trend = %v MiB/min, want 6", got)
	}
}
