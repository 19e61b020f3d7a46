// Command tallybench is Tally's load generator (issue 6). It creates a
// fresh database, starts a real Tally server in process on a loopback port,
// and runs each workload over HTTP alternated with its raw-SQL baseline on
// the same database, round after round, checking the money invariants
// after every run. It prints a Markdown table and writes JSON.
//
//	go run ./cmd/tallybench --db sqlite --duration 3s --rounds 1 --clients 1,8
//	go run ./cmd/tallybench --db postgres --pg-url postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
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
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	db       string
	pgURL    string
	duration time.Duration
	rounds   int
	clients  []int
	out      string
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "tallybench:", err)
		os.Exit(2)
	}
	// Ctrl-C stops between runs: the run in progress finishes (it is
	// bounded by --duration) and the database is still dropped.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := bench(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "tallybench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("tallybench", flag.ContinueOnError)
	var o options
	var clients string
	fs.StringVar(&o.db, "db", "sqlite", "database: sqlite or postgres")
	fs.StringVar(&o.pgURL, "pg-url", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
		"PostgreSQL server on which a fresh database is created and dropped (with --db postgres)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each run")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds; each runs every workload and its baseline, alternated")
	fs.StringVar(&clients, "clients", "1,8,32,64", "concurrent client counts, comma-separated")
	fs.StringVar(&o.out, "out", "results", "directory for results.json")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.db != "sqlite" && o.db != "postgres" {
		return o, fmt.Errorf("--db must be sqlite or postgres, not %q", o.db)
	}
	if o.duration <= 0 || o.rounds < 1 {
		return o, errors.New("--duration and --rounds must be positive")
	}
	for _, f := range strings.Split(clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 1024 {
			return o, fmt.Errorf("--clients: %q is not a count from 1 to 1024", f)
		}
		o.clients = append(o.clients, n)
	}
	return o, nil
}

// workload is one thing measured: an operation per client, and what to
// check after a run.
type workload struct {
	name     string
	baseline string // the workload this one is compared with; "" for a baseline
	newOp    func(client int) op
	account  *spendLedger // the spending account to check, or nil for reads
}

func bench(ctx context.Context, o options) error {
	started := time.Now()
	logf("setting up a fresh %s database and a Tally server", o.db)
	e, err := newEnv(ctx, o)
	if err != nil {
		return err
	}
	defer e.Close()
	logf("tally is serving on %s", e.baseURL)

	hot := &spendLedger{userID: e.hotUserID}
	rawAcct := &spendLedger{userID: e.rawUserID}
	// Workloads come in pairs, each with its baseline, run back to back on
	// the same database so that both see the same machine state.
	pairs := [][2]workload{
		{
			{name: "W1", baseline: "B1", account: hot, newOp: func(c int) op {
				return spendOp(e.api, e.serviceToken, hotExternalID, fmt.Sprintf("w1-%d", runSeq.Add(1)), c)
			}},
			{name: "B1", account: rawAcct, newOp: func(int) op { return rawSpendOp(e.raw, e.rawUserID) }},
		},
		{
			{name: "W3", baseline: "B3", newOp: func(int) op { return balanceOp(e.api, e.readerToken, readerCredit) }},
			{name: "B3", newOp: func(int) op { return rawReadOp(e.raw, e.readerUserID, readerCredit) }},
		},
	}

	res := newResults(o, o.db)
	violations := 0
rounds:
	for round := range o.rounds {
		for _, clients := range o.clients {
			for _, pair := range pairs {
				// Alternate which of the pair goes first, so that neither
				// always runs on a warmer (or more bloated) database.
				order := []workload{pair[0], pair[1]}
				if round%2 == 1 {
					order[0], order[1] = order[1], order[0]
				}
				for _, w := range order {
					if ctx.Err() != nil {
						logf("interrupted: reporting what has run")
						break rounds
					}
					s := run(clients, o.duration, w.newOp)
					checkErr := e.verify(ctx, w.account, len(s.latencies)-s.errors)
					r := res.add(round+1, w, clients, s, checkErr)
					logf("round %d %s clients=%d: %.0f ops/s p99 %.2f ms errors %d check %s",
						round+1, w.name, clients, r.OpsPerSec, r.P99ms, r.Errors, r.Check)
					if checkErr != nil {
						violations++
					}
				}
			}
		}
	}
	res.finish(time.Since(started))
	fmt.Print(res.markdown())
	if err := res.writeJSON(o.out); err != nil {
		return err
	}
	logf("wrote %s", jsonPath(o.out))
	if violations > 0 {
		return fmt.Errorf("%d runs broke the money invariants (see the check column)", violations)
	}
	return nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}
