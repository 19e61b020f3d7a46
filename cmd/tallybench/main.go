// Command tallybench is Tally's load generator (issue 6). It creates a
// fresh database, migrates it, builds and starts the real Tally server as
// a child process on a loopback port, and runs each workload over HTTP
// alternated with its raw-SQL baselines on the same database, round after
// round, checking the money invariants after every run. It prints a
// Markdown table and writes results.json and chart.svg.
//
//	go run ./cmd/tallybench --db sqlite --duration 2s --rounds 1 --clients 1,8
//	go run ./cmd/tallybench --db postgres --workloads W1,W4
//	go run ./cmd/tallybench --db postgres --soak 5m
//	go run ./cmd/tallybench --scale --small-url URL --large-url URL
//
// The seed subcommand fills an empty PostgreSQL database with a large,
// consistent history instead (see seed.go):
//
//	go run ./cmd/tallybench seed --database-url URL --users N --transactions M [--heavy-user-transactions K]
//
// See docs/benchmarks.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// allWorkloads are what --workloads chooses from.
var allWorkloads = []string{"W1", "W2", "W3", "W4"}

type options struct {
	db             string
	pgURL          string
	duration       time.Duration
	warmup         time.Duration
	rounds         int
	clients        []int
	out            string
	workloads      map[string]bool
	accounts       int
	history        int
	depths         []int
	dupShare       float64
	soak           time.Duration
	tallyBin       string
	baselineDriver string
	scale          bool
	lowBalance     int64   // TALLY_LOW_BALANCE_THRESHOLD for the server; 0: none
	autoRecharge   int64   // every account's auto-recharge threshold; 0: off
	crossingShare  float64 // of the accounts, those whose thresholds are their seeded balance
	scaleOpts      scaleOptions
	// dbLatency puts a proxy delaying every packet this long each way
	// between the server (and the baselines) and PostgreSQL.
	dbLatency time.Duration
	// roundTrips runs the round-trips table instead of the workloads.
	roundTrips bool
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "seed" {
		os.Exit(seedMain(os.Args[2:]))
	}
	o, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tallybench:", err)
		os.Exit(2)
	}
	if o.scale {
		os.Exit(scaleMain(o))
	}
	// Ctrl-C stops between runs (or ends a soak early): the run in progress
	// finishes (it is bounded by --duration), what has run is reported,
	// and the server and the database are still cleaned up.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := bench(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "tallybench:", err)
		if errors.Is(err, errInterrupted) {
			os.Exit(130) // the shell's code for a command stopped by Ctrl-C
		}
		os.Exit(1)
	}
}

func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("tallybench", flag.ContinueOnError)
	var o options
	var clients, workloads, depths, threshold, recharge string
	fs.StringVar(&o.db, "db", "sqlite", "database: sqlite or postgres")
	fs.StringVar(&o.pgURL, "pg-url", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
		"PostgreSQL server on which a fresh database is created and dropped (with --db postgres)")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "length of each run")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds; each runs every workload and its baselines, in rotating order")
	fs.StringVar(&clients, "clients", "1,8,32,64", "concurrent client counts for W1 and W3's balance read; W2, W3's pages and W4 use the largest")
	fs.StringVar(&o.out, "out", "results", "directory for results.json and chart.svg")
	fs.StringVar(&workloads, "workloads", strings.Join(allWorkloads, ","), "workloads to run, comma-separated")
	fs.IntVar(&o.accounts, "accounts", 10000, "W2's accounts (each for the API and for the baselines)")
	fs.IntVar(&o.history, "history", 10000, "W3's history: transactions of the user whose pages are read")
	fs.StringVar(&depths, "depths", "", "W3's page depths (rows skipped), comma-separated (default 0, 10% and 90% of --history: 0,1000,9000)")
	fs.DurationVar(&o.warmup, "warmup", 3*time.Second, "before the first round, each closed-loop workload but W4's runs this long unmeasured (0: none)")
	fs.Float64Var(&o.dupShare, "duplicates", 0.3, "W4: share of deliveries that repeat an event already sent")
	fs.DurationVar(&o.soak, "soak", 0, "instead of the workloads, a mixed load for this long (e.g. 5m), watching the server's RSS")
	fs.StringVar(&o.tallyBin, "tally", "", "a tally binary to run instead of building ./cmd/tally")
	fs.StringVar(&o.baselineDriver, "baseline-driver", "pgx", "PostgreSQL baselines through pgx (pgxpool) or sql (database/sql over pgx's stdlib, as Tally)")
	fs.StringVar(&threshold, "low-balance-threshold", "", "the server's TALLY_LOW_BALANCE_THRESHOLD (seed: the seeded balance, so each account's first spend crosses it), with its events delivered to a receiver of the harness")
	fs.StringVar(&recharge, "auto-recharge", "", "turn auto-recharge on for every account below this threshold (seed: the seeded balance, so each account's first spend starts a recharge, which stays in flight: the server has no Stripe key)")
	fs.Float64Var(&o.crossingShare, "crossing-share", 0, "with --low-balance-threshold or --auto-recharge: the share of the accounts (e.g. 0.01) whose thresholds are their seeded balance, so that each crosses at its first spend; the others keep the thresholds given")
	fs.BoolVar(&o.scale, "scale", false, "instead of the workloads, time the API's operations on two seeded PostgreSQL databases, --small-url and --large-url")
	fs.StringVar(&o.scaleOpts.smallURL, "small-url", "", "--scale: the small seeded database")
	fs.StringVar(&o.scaleOpts.largeURL, "large-url", "", "--scale: the large seeded database")
	fs.IntVar(&o.scaleOpts.requests, "requests", 200, "--scale and --round-trips: timed requests of each operation (on each database)")
	fs.DurationVar(&o.dbLatency, "db-latency", 0, "with --db postgres, the server and the baselines reach the database through a proxy that delays every packet this long each way (e.g. 1ms, a managed database's distance)")
	fs.BoolVar(&o.roundTrips, "round-trips", false, "with --db postgres, instead of the workloads, time each operation at one client and count its database round trips (through the --db-latency proxy)")
	fs.DurationVar(&o.scaleOpts.budget, "op-budget", 20*time.Second, "--scale: an operation stops after this long (and at least 3 requests) even short of --requests")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.scale {
		return o, scaleFlags(fs, &o, clients)
	}
	if o.db != "sqlite" && o.db != "postgres" {
		return o, fmt.Errorf("--db must be sqlite or postgres, not %q", o.db)
	}
	if (o.dbLatency != 0 || o.roundTrips) && o.db != "postgres" {
		return o, errors.New("--db-latency and --round-trips proxy PostgreSQL's protocol: use them with --db postgres")
	}
	if o.dbLatency < 0 || o.scaleOpts.requests < 1 {
		return o, errors.New("--db-latency must not be negative, --requests must be positive")
	}
	if o.baselineDriver != "pgx" && o.baselineDriver != "sql" {
		return o, fmt.Errorf("--baseline-driver must be pgx or sql, not %q", o.baselineDriver)
	}
	if err := checkRanges(o); err != nil {
		return o, err
	}
	var err error
	if o.lowBalance, err = parseThreshold("--low-balance-threshold", threshold); err != nil {
		return o, err
	}
	if o.autoRecharge, err = parseThreshold("--auto-recharge", recharge); err != nil {
		return o, err
	}
	if o.crossingShare < 0 || o.crossingShare > 1 || (o.crossingShare > 0 && o.lowBalance == 0 && o.autoRecharge == 0) {
		return o, errors.New("--crossing-share is a share from 0 to 1, of accounts with --low-balance-threshold or --auto-recharge")
	}
	if o.clients, err = intList("--clients", clients, 1, 1024); err != nil {
		return o, err
	}
	if o.history <= historyPage {
		return o, fmt.Errorf("--history must be more than a page (%d)", historyPage)
	}
	if depths == "" {
		depths = fmt.Sprintf("0,%d,%d", o.history/10, o.history*9/10)
	}
	if o.depths, err = intList("--depths", depths, 0, o.history-historyPage-1); err != nil {
		return o, fmt.Errorf("%w (each depth needs a full page after it within --history %d)", err, o.history)
	}
	slices.Sort(o.depths)
	o.depths = slices.Compact(o.depths)
	o.workloads = map[string]bool{}
	for _, w := range strings.Split(workloads, ",") {
		w = strings.ToUpper(strings.TrimSpace(w))
		if !slices.Contains(allWorkloads, w) {
			return o, fmt.Errorf("--workloads: %q is not one of %s", w, strings.Join(allWorkloads, ", "))
		}
		o.workloads[w] = true
	}
	if o.tallyBin != "" {
		if o.tallyBin, err = filepath.Abs(o.tallyBin); err != nil {
			return o, err
		}
	}
	return o, nil
}

// checkRanges refuses numbers out of the range a run can use.
func checkRanges(o options) error {
	if o.duration <= 0 || o.rounds < 1 || o.soak < 0 || o.warmup < 0 {
		return errors.New("--duration and --rounds must be positive, --soak and --warmup not negative")
	}
	if o.dupShare < 0 || o.dupShare >= 1 {
		return errors.New("--duplicates must be from 0 to less than 1")
	}
	if o.accounts < 1 || o.accounts > 1_000_000 {
		return errors.New("--accounts must be from 1 to 1,000,000")
	}
	return nil
}

func intList(flagName, s string, lo, hi int) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < lo || n > hi {
			return nil, fmt.Errorf("%s: %q is not a number from %d to %d", flagName, f, lo, hi)
		}
		out = append(out, n)
	}
	return out, nil
}

// errInterrupted ends a benchmark stopped by Ctrl-C, after reporting what
// ran; broken invariants take precedence (exit 1).
var errInterrupted = errors.New("interrupted")

func bench(ctx context.Context, o options) error {
	started := time.Now()
	logf("setting up a fresh %s database and a Tally server", o.db)
	e, err := newEnv(ctx, o)
	if err != nil {
		return err
	}
	defer e.Close()
	logf("tally (pid %d) is serving on %s", e.server.pid, e.server.baseURL)
	res := newResults(o, e.poolSize)
	if o.roundTrips {
		logf("round trips: %d requests of each operation, one at a time", o.scaleOpts.requests)
		rows, err := e.roundTrips(ctx, o.scaleOpts.requests)
		if err != nil {
			return err
		}
		fmt.Print(rtMarkdown(rows, o.dbLatency))
		return nil
	}
	if o.soak > 0 {
		if err := e.soak(ctx, res); err != nil {
			return err
		}
		res.Seeding = e.seeding
		if err := e.reportOutbound(ctx); err != nil {
			return err
		}
		res.finish(time.Since(started))
		fmt.Print(res.Soak.markdown())
		fmt.Print(targetsMarkdown(res.Targets))
		if err := e.report(res); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return errInterrupted
		}
		return nil
	}
	groups, err := e.plan(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%w while seeding: %v", errInterrupted, err)
		}
		return err
	}
	if err := e.analyzeSeed(ctx); err != nil {
		return err
	}
	res.setPlan(groups)
	res.Seeding = e.seeding
	logf("the runs take about %s (and the checks after each)", o.estimate(groups).Round(time.Second))
	if err := e.warmUp(ctx, groups); err != nil {
		return err
	}
rounds:
	for round := range o.rounds {
		for _, g := range groups {
			for _, clients := range g.clients {
				for _, w := range g.order(round) {
					if ctx.Err() != nil {
						logf("interrupted: reporting what has run")
						break rounds
					}
					r, err := e.runOne(ctx, res, round+1, w, clients)
					if errors.Is(err, errSkip) {
						logf("round %d %s: skipped (no peak measured to take a share of)", round+1, w.name)
						continue
					}
					if err != nil {
						return fmt.Errorf("round %d %s: %w", round+1, w.name, err)
					}
					logRun(r)
				}
			}
		}
	}
	if err := e.reportOutbound(ctx); err != nil {
		return err
	}
	res.finish(time.Since(started))
	fmt.Print(res.markdown())
	if err := e.report(res); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return errInterrupted
	}
	return nil
}

func logRun(r runResult) {
	extra := ""
	if r.ServerRSSMiB > 0 {
		extra = fmt.Sprintf(" retries %.2f%% rss %.0f MiB cpu %.2f", 100*r.RetryRate, r.ServerRSSMiB, r.ServerCPU)
	}
	if r.DuplicateShare > 0 {
		extra += fmt.Sprintf(" duplicates %.0f%%", 100*r.DuplicateShare)
	}
	who := fmt.Sprintf("clients=%d", r.Clients)
	if r.TargetRate > 0 {
		who = fmt.Sprintf("open %.0f/s", r.TargetRate)
	}
	logf("round %d %s %s: %.0f ops/s p99 %.2f ms errors %d%s check %s",
		r.Round, r.Workload, who, r.OpsPerSec, r.P99ms, r.Errors, extra, r.Check)
}

// report writes the JSON and the chart, and fails the command when any
// invariant was violated.
func (e *env) report(res *results) error {
	if err := res.writeJSON(e.o.out); err != nil {
		return fmt.Errorf("writing results.json: %w", err)
	}
	title := fmt.Sprintf("Tally on %s: each workload beside its raw-SQL baselines (%s runs, %d rounds)",
		res.Settings.Database, res.Settings.Duration, res.Settings.Rounds)
	rows := res.Summary
	if res.Soak != nil {
		title, rows = fmt.Sprintf("Tally on %s: soak of %s, by operation", res.Settings.Database, res.Soak.Duration), res.Soak.Ops
	}
	if err := writeChart(e.o.out, rows, title); err != nil {
		return fmt.Errorf("writing chart.svg: %w", err)
	}
	logf("wrote %s and chart.svg", filepath.Join(e.o.out, "results.json"))
	if n := res.violations(); n > 0 {
		return fmt.Errorf("%d runs broke the money invariants (see the check column and results.json)", n)
	}
	return nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}
