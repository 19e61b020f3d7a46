package main

import (
	"strings"
	"testing"
)

func TestTargets(t *testing.T) {
	r := &results{Settings: settings{Clients: []int{1, 32, 64}}}
	w1 := summary{Workload: "W1", Clients: 32, OpsPerSec: 90, P99ms: 30, ServerRSSMiB: 70, Versus: []ratio{{"B1", 0.9, 1.2}, {"B2", 0.5, 2}}}
	r.Summary = []summary{
		{Workload: "W1", Clients: 1, Versus: []ratio{{"B1", 0.1, 9}}},
		w1,
		// The first page slower than a deep one is not flat either.
		{Workload: "W3p0", Clients: 64, P50ms: 100, ServerRSSMiB: 160},
		{Workload: "W3p9000", Clients: 64, P50ms: 10},
		{Workload: "W4o", TargetRate: 500, P99ms: 80},
		{Workload: "W3", Clients: 32, Versus: []ratio{{"B3", 0.2, 3}}},
		{Workload: "H0", Clients: 32, Versus: []ratio{{"B3", 0.3, 2}}},
	}
	r.Runs = []runResult{{Check: "ok"}, {Check: "invariants violated: x"}}
	got := map[string]target{}
	for _, tg := range evaluateTargets(r) {
		got[strings.SplitN(tg.What, " ", 2)[0]+" "+tg.Want] = tg
	}
	want := []struct {
		key string
		met bool
	}{
		{"W1 ≥ 0.8×", true}, // at 32 clients, not 1
		{"W1 ≤ 1.5×", true}, // p99 vs B1, not B2
		{"W3 ≥ 0.4×", false},
		{"history ≤ 1.25× (flat)", false},
		{"webhook < 100 ms", true},
		{"server < 150 MiB", false},
		{"invariant 0", false},
	}
	for _, w := range want {
		tg, ok := got[w.key]
		if !ok {
			t.Errorf("no target %q in %v", w.key, got)
			continue
		}
		if tg.Met != w.met {
			t.Errorf("%s: met %v (got %s), want %v", tg.What, tg.Met, tg.Got, w.met)
		}
	}
	if g := got["W3 ≥ 0.4×"].Got; g != "0.20× (HTTP floor H0: 0.30×)" {
		t.Errorf("W3 target reads %q, want the ratio and the HTTP floor's beside it", g)
	}
	if _, ok := got["W2u ≥ 0.6×"]; ok {
		t.Error("a target for a workload that did not run")
	}
}
