package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// runSeq numbers what the process starts (runs, clients' key prefixes,
// random seeds), so that idempotency keys never collide.
var runSeq atomic.Int64

// runResult is one run of one workload in one round.
type runResult struct {
	summary
	Round int    `json:"round"`
	Check string `json:"check"` // "ok", or the invariants violated
	// DuplicateShare is the share of W4's deliveries that were duplicates
	// (the setting, unless the pending payments ran out).
	DuplicateShare float64 `json:"duplicate_share,omitempty"`
}

// results is everything the JSON file holds.
type results struct {
	Started  time.Time   `json:"started"`
	Seconds  float64     `json:"seconds"`
	Machine  machine     `json:"machine"`
	Settings settings    `json:"settings"`
	Seeding  []seedTime  `json:"seeding,omitempty"`
	Summary  []summary   `json:"summary"`
	Runs     []runResult `json:"runs"`
	Targets  []target    `json:"targets,omitempty"`
	Soak     *soakResult `json:"soak,omitempty"`

	samples   map[string][]sample // by workload and clients, for the summary
	workloads map[string]*workload
	rates     map[string][]float64 // open-loop target rates, by key
	order     []string
	rank      map[string]int // plan order: group, then member
}

// seedTime records how long seeding took, which says something of the
// ledger's speed on its own.
type seedTime struct {
	What    string  `json:"what"`
	Seconds float64 `json:"seconds"`
}

type machine struct {
	GOOS      string `json:"goos"`
	GOARCH    string `json:"goarch"`
	NumCPU    int    `json:"num_cpu"`
	GoVersion string `json:"go_version"`
	CPUModel  string `json:"cpu_model,omitempty"`
	MemoryMiB int64  `json:"memory_mib,omitempty"`
	Revision  string `json:"vcs_revision,omitempty"`
}

type settings struct {
	Database       string   `json:"database"`
	BaselineDriver string   `json:"baseline_driver"`
	Duration       string   `json:"duration"`
	Warmup         string   `json:"warmup"`
	Rounds         int      `json:"rounds"`
	Clients        []int    `json:"clients"`
	Workloads      []string `json:"workloads"`
	Accounts       int      `json:"accounts"`
	History        int      `json:"history"`
	// LowBalanceThreshold is --low-balance-threshold (0: none).
	LowBalanceThreshold int64 `json:"low_balance_threshold,omitempty"`
	// AutoRechargeThreshold is --auto-recharge (0: off).
	AutoRechargeThreshold int64 `json:"auto_recharge_threshold,omitempty"`
	// CrossingShare is --crossing-share (0: none).
	CrossingShare  float64  `json:"crossing_share,omitempty"`
	Depths         []int    `json:"depths"`
	DuplicateShare float64  `json:"duplicate_share"`
	PoolSize       int      `json:"pool_size"`
	Env            []string `json:"env,omitempty"` // TALLY_* settings passed through
}

func newResults(o options, poolSize int) *results {
	m := machine{GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, NumCPU: runtime.NumCPU(), GoVersion: runtime.Version(),
		CPUModel: cpuModel(), MemoryMiB: memoryMiB()}
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
	driver := "database/sql"
	if o.db == "postgres" && o.baselineDriver == "pgx" {
		driver = "pgx (pgxpool)"
	}
	var ws []string
	for _, w := range allWorkloads {
		if o.workloads[w] {
			ws = append(ws, w)
		}
	}
	return &results{
		Started: time.Now().UTC(),
		Machine: m,
		Settings: settings{Database: o.db, BaselineDriver: driver, Duration: o.duration.String(), Warmup: o.warmup.String(), Rounds: o.rounds,
			Clients: o.clients, Workloads: ws, Accounts: o.accounts, History: o.history, Depths: o.depths,
			DuplicateShare: o.dupShare, PoolSize: poolSize, Env: env, LowBalanceThreshold: o.lowBalance,
			AutoRechargeThreshold: o.autoRecharge, CrossingShare: o.crossingShare},
		samples:   map[string][]sample{},
		workloads: map[string]*workload{},
		rates:     map[string][]float64{},
		rank:      map[string]int{},
	}
}

// setPlan records the plan's order, which the report follows.
func (r *results) setPlan(groups []group) {
	for gi, g := range groups {
		for mi, m := range g.members {
			r.rank[m.name] = gi*100 + mi
		}
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

// memoryMiB reads the machine's memory on Linux; elsewhere it is left out.
func memoryMiB() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	n, err := parseStatusField(string(b), "MemTotal")
	if err != nil {
		return 0
	}
	return n >> 20
}

func key(workload string, clients int) string { return fmt.Sprintf("%s/%d", workload, clients) }

func (r *results) add(round int, w *workload, clients int, rate float64, s sample, checkErr error) runResult {
	rr := runResult{summary: summarize(w, r.Settings.Database, clients, rate, 1, s), Round: round, Check: "ok"}
	if checkErr != nil {
		rr.Check = checkErr.Error()
	}
	r.Runs = append(r.Runs, rr)
	k := key(w.name, clients)
	if _, seen := r.samples[k]; !seen {
		r.order = append(r.order, k)
	}
	r.samples[k] = append(r.samples[k], s)
	r.workloads[k] = w
	if w.open {
		r.rates[k] = append(r.rates[k], rate)
	}
	// A run's own ratios compare it with its baselines' runs in the same
	// round, whichever ran first.
	for i := range r.Runs {
		x := &r.Runs[i]
		if x.Round != round || x.Clients != clients {
			continue
		}
		last := &r.Runs[len(r.Runs)-1]
		if slices.Contains(w.baselines, x.Workload) {
			compare(&last.summary, x.summary)
		}
		if wx := r.workloads[key(x.Workload, clients)]; wx != nil && slices.Contains(wx.baselines, w.name) {
			compare(&x.summary, last.summary)
		}
	}
	return r.Runs[len(r.Runs)-1]
}

// finish pools every round of each workload and client count, and
// compares each workload with its baselines pooled the same way.
func (r *results) finish(took time.Duration) {
	r.Seconds = took.Seconds()
	byKey := map[string]summary{}
	for _, k := range r.order {
		ss := r.samples[k]
		w := r.workloads[k]
		rate := 0.0
		for _, x := range r.rates[k] {
			rate += x / float64(len(r.rates[k]))
		}
		byKey[k] = summarize(w, r.Settings.Database, r.clientsOf(k), rate, len(ss), merge(ss))
	}
	r.Summary = nil
	for _, k := range r.order {
		s := byKey[k]
		for _, b := range r.workloads[k].baselines {
			if bs, ok := byKey[key(b, s.Clients)]; ok {
				compare(&s, bs)
			}
		}
		r.Summary = append(r.Summary, s)
	}
	slices.SortStableFunc(r.Summary, func(a, b summary) int {
		ra, rb := r.rank[a.Workload], r.rank[b.Workload]
		if ra/100 != rb/100 {
			return ra/100 - rb/100
		}
		if a.Clients != b.Clients {
			return a.Clients - b.Clients
		}
		return ra%100 - rb%100
	})
	r.Targets = evaluateTargets(r)
}

func (r *results) clientsOf(k string) int {
	var clients int
	_, c, _ := strings.Cut(k, "/")
	fmt.Sscanf(c, "%d", &clients)
	return clients
}

func (r *results) violations() int {
	n := 0
	for _, run := range r.Runs {
		if run.Check != "ok" {
			n++
		}
	}
	if r.Soak != nil && r.Soak.Check != "ok" {
		n++
	}
	return n
}

func (r *results) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%s (baselines through %s, pools of %d), %s per run, %d round(s) after a %s warm-up; %d CPUs, %s\n\n",
		r.Settings.Database, r.Settings.BaselineDriver, r.Settings.PoolSize, r.Settings.Duration, r.Settings.Rounds, r.Settings.Warmup,
		r.Machine.NumCPU, r.Machine.GoVersion)
	if r.Settings.LowBalanceThreshold > 0 {
		fmt.Fprintf(&b, "Low-balance threshold %d on every account, events delivered to a local receiver.\n\n", r.Settings.LowBalanceThreshold)
	}
	if r.Settings.AutoRechargeThreshold > 0 {
		fmt.Fprintf(&b, "Auto-recharge on every account below %d credits (recharges stay in flight: no Stripe key).\n\n", r.Settings.AutoRechargeThreshold)
	}
	if r.Settings.CrossingShare > 0 {
		fmt.Fprintf(&b, "A share %g of the accounts has these thresholds at its seeded balance: each of them crosses at its first spend.\n\n", r.Settings.CrossingShare)
	}
	b.WriteString("| workload | clients | ops/s | p50 ms | p95 ms | p99 ms | errors | retries/op | server RSS MiB | server CPU | ops/s vs baseline | p99 vs baseline |\n")
	b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, s := range r.Summary {
		clients := fmt.Sprint(s.Clients)
		if s.TargetRate > 0 {
			clients = fmt.Sprintf("open, %.0f/s", s.TargetRate)
		}
		retries, rss, cpu := "", "", ""
		if s.ViaServer {
			retries = fmt.Sprintf("%.2f%%", 100*s.RetryRate)
			if s.Conflicts > 0 {
				retries += fmt.Sprintf(" (%d conflicts)", s.Conflicts)
			}
			rss, cpu = fmt.Sprintf("%.1f", s.ServerRSSMiB), fmt.Sprintf("%.2f", s.ServerCPU)
		}
		var ops, p99 []string
		for _, v := range s.Versus {
			ops = append(ops, fmt.Sprintf("%.2f× %s", v.Ops, v.Baseline))
			p99 = append(p99, fmt.Sprintf("%.2f×", v.P99))
		}
		fmt.Fprintf(&b, "| %s %s | %s | %.0f | %.2f | %.2f | %.2f | %d (%.2f%%) | %s | %s | %s | %s | %s |\n",
			s.Workload, s.Description, clients, s.OpsPerSec, s.P50ms, s.P95ms, s.P99ms, s.Errors, 100*s.ErrorRate,
			retries, rss, cpu, strings.Join(ops, ", "), strings.Join(p99, ", "))
	}
	fmt.Fprintf(&b, "\nInvariant checks: %d of %d runs OK.\n", len(r.Runs)-r.violations(), len(r.Runs))
	if len(r.Seeding) > 0 {
		var parts []string
		for _, s := range r.Seeding {
			parts = append(parts, fmt.Sprintf("%s %.1fs", s.What, s.Seconds))
		}
		fmt.Fprintf(&b, "Seeding: %s.\n", strings.Join(parts, "; "))
	}
	if len(r.Targets) > 0 {
		b.WriteString(targetsMarkdown(r.Targets))
	}
	return b.String()
}

func (r *results) writeJSON(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "results.json"), append(b, '\n'), 0o644)
}
