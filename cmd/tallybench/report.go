package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"
)

// runSeq numbers the runs of the process, so that idempotency keys of
// different runs never collide.
var runSeq atomic.Int64

// runResult is one run of one workload in one round.
type runResult struct {
	summary
	Round int    `json:"round"`
	Check string `json:"check"` // "ok", or the invariant violated
}

// results is everything the JSON file holds.
type results struct {
	Started  time.Time   `json:"started"`
	Seconds  float64     `json:"seconds"`
	Machine  machine     `json:"machine"`
	Settings settings    `json:"settings"`
	Summary  []summary   `json:"summary"`
	Runs     []runResult `json:"runs"`

	samples map[string][]sample // by workload and clients, for the summary
	order   []string
}

type machine struct {
	GOOS      string `json:"goos"`
	GOARCH    string `json:"goarch"`
	NumCPU    int    `json:"num_cpu"`
	GoVersion string `json:"go_version"`
	CPUModel  string `json:"cpu_model,omitempty"`
	Revision  string `json:"vcs_revision,omitempty"`
}

type settings struct {
	Database string   `json:"database"`
	Duration string   `json:"duration"`
	Rounds   int      `json:"rounds"`
	Clients  []int    `json:"clients"`
	Env      []string `json:"env,omitempty"` // TALLY_* settings passed through
}

func newResults(o options, db string) *results {
	m := machine{GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, NumCPU: runtime.NumCPU(), GoVersion: runtime.Version(), CPUModel: cpuModel()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				m.Revision = s.Value
			}
		}
	}
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "TALLY_") && !strings.HasPrefix(kv, "TALLY_JWT_") {
			env = append(env, kv)
		}
	}
	return &results{
		Started:  time.Now().UTC(),
		Machine:  m,
		Settings: settings{Database: db, Duration: o.duration.String(), Rounds: o.rounds, Clients: o.clients, Env: env},
		samples:  map[string][]sample{},
	}
}

// cpuModel reads the processor's name on Linux; elsewhere it is left out.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func key(workload string, clients int) string { return fmt.Sprintf("%s/%d", workload, clients) }

func (r *results) add(round int, w workload, clients int, s sample, checkErr error) runResult {
	rr := runResult{summary: summarize(w.name, r.Settings.Database, clients, 1, s), Round: round, Check: "ok"}
	rr.Baseline = w.baseline
	if checkErr != nil {
		rr.Check = checkErr.Error()
	}
	r.Runs = append(r.Runs, rr)
	k := key(w.name, clients)
	if _, seen := r.samples[k]; !seen {
		r.order = append(r.order, k)
	}
	r.samples[k] = append(r.samples[k], s)
	// A run's own ratio compares it with its baseline's run in the same
	// round, when that has already run.
	if w.baseline != "" {
		for _, b := range r.Runs {
			if b.Round == round && b.Workload == w.baseline && b.Clients == clients {
				compare(&r.Runs[len(r.Runs)-1].summary, b.summary)
			}
		}
	} else {
		for i := range r.Runs {
			x := &r.Runs[i]
			if x.Round == round && x.Baseline == w.name && x.Clients == clients {
				compare(&x.summary, rr.summary)
			}
		}
	}
	return r.Runs[len(r.Runs)-1]
}

// finish pools every round of each workload and client count, and
// compares each workload with its baseline pooled the same way.
func (r *results) finish(took time.Duration) {
	r.Seconds = took.Seconds()
	baselineOf := map[string]string{}
	for _, run := range r.Runs {
		if run.Baseline != "" {
			baselineOf[run.Workload] = run.Baseline
		}
	}
	byKey := map[string]summary{}
	for _, k := range r.order {
		ss := r.samples[k]
		name, _, _ := strings.Cut(k, "/")
		var clients int
		fmt.Sscanf(k[len(name)+1:], "%d", &clients)
		byKey[k] = summarize(name, r.Settings.Database, clients, len(ss), merge(ss))
	}
	r.Summary = nil
	for _, k := range r.order {
		s := byKey[k]
		if b, ok := baselineOf[s.Workload]; ok {
			if bs, ok := byKey[key(b, s.Clients)]; ok {
				compare(&s, bs)
			}
		}
		r.Summary = append(r.Summary, s)
	}
	// Workload, then clients: the table reads one workload at a time.
	sortSummaries(r.Summary)
}

func sortSummaries(s []summary) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && less(s[j], s[j-1]); j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// less orders W1, B1, W3, B3: each workload beside its baseline.
func less(a, b summary) bool {
	ga, gb := a.Workload[1:], b.Workload[1:]
	if ga != gb {
		return ga < gb
	}
	if a.Clients != b.Clients {
		return a.Clients < b.Clients
	}
	return a.Workload > b.Workload // W before B
}

func (r *results) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%s, %s per run, %d round(s); %d CPUs, %s\n\n", r.Settings.Database, r.Settings.Duration, r.Settings.Rounds, r.Machine.NumCPU, r.Machine.GoVersion)
	b.WriteString("| workload | clients | ops/s | p50 ms | p95 ms | p99 ms | errors | ops/s vs baseline | p99 vs baseline |\n")
	b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, s := range r.Summary {
		ratio, p99 := "", ""
		if s.Baseline != "" {
			ratio = fmt.Sprintf("%.2f× %s", s.Ratio, s.Baseline)
			p99 = fmt.Sprintf("%.2f×", s.P99Ratio)
		}
		fmt.Fprintf(&b, "| %s %s | %d | %.0f | %.2f | %.2f | %.2f | %d (%.2f%%) | %s | %s |\n",
			s.Workload, describeWorkload(s.Workload), s.Clients, s.OpsPerSec, s.P50ms, s.P95ms, s.P99ms, s.Errors, 100*s.ErrorRate, ratio, p99)
	}
	bad := 0
	for _, run := range r.Runs {
		if run.Check != "ok" {
			bad++
		}
	}
	fmt.Fprintf(&b, "\nInvariant checks: %d of %d runs OK.\n", len(r.Runs)-bad, len(r.Runs))
	return b.String()
}

func describeWorkload(name string) string {
	switch name {
	case "W1":
		return "spendCredits, hot account"
	case "B1":
		return "raw SQL spend"
	case "W3":
		return "viewer { creditsBalance }"
	case "B3":
		return "raw SELECT balance"
	}
	return ""
}

func jsonPath(dir string) string { return filepath.Join(dir, "results.json") }

func (r *results) writeJSON(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(jsonPath(dir), append(b, '\n'), 0o644)
}
