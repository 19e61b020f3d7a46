package main

import (
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
	got := summarize("W1", "sqlite", 8, 1, s)
	if got.Ops != 3 || got.Errors != 1 || got.OpsPerSec != 3 || got.ErrorRate != 0.25 {
		t.Errorf("summary = %+v", got)
	}
	if got.P50ms != 2 || got.P99ms != 4 {
		t.Errorf("p50 %v p99 %v, want 2 and 4", got.P50ms, got.P99ms)
	}
	if s.latencies[0] != 4*time.Millisecond {
		t.Error("summarize sorted the caller's slice")
	}
	b := summary{Workload: "B1", OpsPerSec: 6, P99ms: 2}
	compare(&got, b)
	if got.Ratio != 0.5 || got.P99Ratio != 2 || got.Baseline != "B1" {
		t.Errorf("compare: %+v", got)
	}
	m := merge([]sample{s, s})
	if len(m.latencies) != 8 || m.errors != 2 || m.elapsed != 2*time.Second {
		t.Errorf("merge: %+v", m)
	}
}
