package main

import (
	"fmt"
	"strings"
)

// target is one of the goals, evaluated on a run's summary. They
// are reported, not enforced: only broken invariants fail the command.
type target struct {
	What string `json:"what"`
	Want string `json:"want"`
	Got  string `json:"got"`
	Met  bool   `json:"met"`
}

// Thresholds the issue does not quantify, chosen here and documented in
// docs/benchmarks.md.
const (
	// flatDepth: a history page at the slowest depth may take at most this
	// much longer (p50) than at the fastest, whichever depths they are.
	flatDepth = 1.25
	// soakSlopeMax is the RSS growth per minute, after the warm-up, below
	// which a soak counts as not growing.
	soakSlopeMax = 1.0
)

// evaluateTargets checks what the run measured against the goals,
// at the client counts the issue names when they ran (32 for W1 and W3's
// balance read, 64 for the rest), else at the largest that ran.
func evaluateTargets(r *results) []target {
	var ts []target
	ratioTarget := func(w, b string, clients int, min float64) {
		s, ok := findSummary(r, w, clients)
		if !ok {
			return
		}
		if v, ok := s.versus(b); ok {
			ts = append(ts, target{What: fmt.Sprintf("%s throughput vs %s, %d clients", w, b, s.Clients),
				Want: fmt.Sprintf("≥ %.1f×", min), Got: fmt.Sprintf("%.2f×", v.Ops), Met: v.Ops >= min})
		}
	}
	ratioTarget("W1", "B1", 32, 0.8)
	if s, ok := findSummary(r, "W1", 32); ok {
		if v, ok := s.versus("B1"); ok {
			ts = append(ts, target{What: fmt.Sprintf("W1 p99 vs B1's, %d clients", s.Clients),
				Want: "≤ 1.5×", Got: fmt.Sprintf("%.2f×", v.P99), Met: v.P99 <= 1.5})
		}
	}
	ratioTarget("W2u", "B1u", 64, 0.6)
	ratioTarget("W2z", "B1z", 64, 0.6)
	ratioTarget("W3", "B3", 32, 0.4)
	// Beside W3: how far the HTTP floor itself reaches, the most any
	// request answered over HTTP could.
	if n := len(ts); n > 0 && strings.HasPrefix(ts[n-1].What, "W3 ") {
		if h, ok := findSummary(r, "H0", 32); ok {
			if v, ok := h.versus("B3"); ok {
				ts[n-1].Got += fmt.Sprintf(" (HTTP floor H0: %.2f×)", v.Ops)
			}
		}
	}
	if t, ok := historyDepthTarget(r); ok {
		ts = append(ts, t)
	}
	ratioTarget("W4", "B4", 64, 0.7)
	if s, ok := findSummary(r, "W4o", 0); ok {
		ts = append(ts, target{What: fmt.Sprintf("webhook ack p99 at %.0f/s (%.0f%% of peak)", s.TargetRate, 100*openLoopShare),
			Want: "< 100 ms", Got: fmt.Sprintf("%.1f ms", s.P99ms), Met: s.P99ms < 100})
	}
	if t, ok := peakRSSTarget(r); ok {
		ts = append(ts, t)
	}
	if s := r.Soak; s != nil {
		ts = append(ts, target{What: fmt.Sprintf("soak RSS growth after %s warm-up", s.WarmUp),
			Want: fmt.Sprintf("≤ %.1f MiB/min", soakSlopeMax), Got: fmt.Sprintf("%.2f MiB/min", s.SlopeMiBPerMin), Met: s.SlopeMiBPerMin <= soakSlopeMax})
	}
	v := r.violations()
	ts = append(ts, target{What: "invariant violations", Want: "0", Got: fmt.Sprint(v), Met: v == 0})
	return ts
}

// findSummary is a workload's summary at a number of clients, else at the
// largest number that ran.
func findSummary(r *results, w string, clients int) (summary, bool) {
	var best summary
	found := false
	for _, s := range r.Summary {
		if s.Workload != w {
			continue
		}
		if s.Clients == clients {
			return s, true
		}
		if !found || s.Clients > best.Clients {
			best, found = s, true
		}
	}
	return best, found
}

// historyDepthTarget compares the history page's p50 at its slowest depth
// with its fastest; there is none unless two depths ran.
func historyDepthTarget(r *results) (target, bool) {
	var fastest, slowest summary
	for _, s := range r.Summary {
		var d int
		if _, err := fmt.Sscanf(s.Workload, "W3p%d", &d); err != nil || s.P50ms <= 0 {
			continue
		}
		if fastest.Workload == "" || s.P50ms < fastest.P50ms {
			fastest = s
		}
		if slowest.Workload == "" || s.P50ms > slowest.P50ms {
			slowest = s
		}
	}
	if fastest.Workload != "" && slowest.Workload != fastest.Workload {
		g := slowest.P50ms / fastest.P50ms
		return target{What: fmt.Sprintf("history p50, slowest depth (%s) vs fastest (%s)",
			strings.TrimPrefix(slowest.Workload, "W3p"), strings.TrimPrefix(fastest.Workload, "W3p")),
			Want: fmt.Sprintf("≤ %.2f× (flat)", flatDepth), Got: fmt.Sprintf("%.2f×", g), Met: g <= flatDepth}, true
	}
	return target{}, false
}

// peakRSSTarget is the server's peak RSS over the workloads run at the
// largest client count; there is none when no RSS was measured.
func peakRSSTarget(r *results) (target, bool) {
	top := 0
	for _, c := range r.Settings.Clients {
		top = max(top, c)
	}
	peak, at := 0.0, ""
	for _, s := range r.Summary {
		if s.Clients == top && s.ServerRSSMiB > peak {
			peak, at = s.ServerRSSMiB, s.Workload
		}
	}
	if peak > 0 {
		return target{What: fmt.Sprintf("server peak RSS at %d clients (%s)", top, at),
			Want: "< 150 MiB", Got: fmt.Sprintf("%.1f MiB", peak), Met: peak < 150}, true
	}
	return target{}, false
}

func targetsMarkdown(ts []target) string {
	var b strings.Builder
	b.WriteString("\n| target | want | got | met |\n| --- | --- | --- | --- |\n")
	for _, t := range ts {
		met := "no"
		if t.Met {
			met = "yes"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", t.What, t.Want, t.Got, met)
	}
	return b.String()
}
