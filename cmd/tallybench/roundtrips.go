package main

// Database round trips per request (issue 22, item 1). With --db-latency
// D the server (and the baselines) reach PostgreSQL through a proxy of
// the harness's own that holds every packet D each way, as a managed
// database D away would; --round-trips then times each operation at one
// client and reports its p50 over 2D, next to the round trips the proxy
// counted. See docs/benchmarks.md, "Round trips".

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/faultproxy"
)

// proxied starts the proxy in front of the PostgreSQL server of dbURL
// and returns dbURL through it.
func (e *env) proxied(dbURL string, delay time.Duration) (string, error) {
	p, through, err := faultproxy.Through(dbURL)
	if err != nil {
		return "", fmt.Errorf("--db-latency: %w", err)
	}
	p.SetDelay(delay)
	e.proxy = p
	e.cleanup = append(e.cleanup, func() { _ = p.Close() })
	return through, nil
}

// rtRow is one operation's line of the round-trips table.
type rtRow struct {
	Op string `json:"op"`
	N  int    `json:"n"`
	// P50 is the median latency; Counted the median of the round trips the
	// proxy saw during each request (other traffic of the server, such as
	// its job queue's polling, shows in a few requests, not the median).
	P50     time.Duration `json:"p50_ns"`
	Counted int64         `json:"counted"`
}

// rtOp is an operation the table times.
type rtOp struct {
	name string
	do   func(ctx context.Context, seq int) error
}

// roundTripOps are the operations of the table: a spend, a grant, a
// reservation captured, a purchase webhook, and a balance read.
func (e *env) roundTripOps(ctx context.Context, n int) ([]rtOp, error) {
	set, err := e.seedAccounts(ctx, "rt-user", 1, seedBalance, false)
	if err != nil {
		return nil, err
	}
	admin, err := auth.Mint([]byte(benchSecret), auth.MintClaims{Subject: "tallybench-admin", Role: auth.RoleAdmin}, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	s := &scaleSession{api: e.api, adminToken: admin, serviceToken: e.serviceToken,
		prefix: fmt.Sprintf("rt%d", time.Now().UnixNano()),
		f:      scaleFixture{ordinary: set.external[0], granted: set.external[0]}}
	spend := apiSpendOp(e.api, e.serviceToken, set, func() int { return 0 }, 0)
	hooks, err := e.seedHooks(ctx, "rt-buyer", false, 0)
	if err != nil {
		return nil, err
	}
	if err := hooks.ensurePending(ctx, e.db.Ent, n+rtWarmup); err != nil {
		return nil, err
	}
	deliver := apiHookOp(e.api, hooks, benchWebhookSecret, 0)
	read := apiBalanceOp(e.api, e.readerToken, readerCredit)
	return []rtOp{
		{"spendCredits", func(ctx context.Context, _ int) error { return spend(ctx) }},
		{"reserveCredits + captureReservation", s.reserveCapture},
		{"grantCredits", func(ctx context.Context, seq int) error {
			return s.grant(ctx, s.f.granted, 1, s.key("grant", seq))
		}},
		{"purchase webhook (checkout.session.completed)", func(ctx context.Context, _ int) error { return deliver(ctx) }},
		{"viewer { creditsBalance }", func(ctx context.Context, _ int) error { return read(ctx) }},
	}, nil
}

// rtWarmup requests of each operation come first, untimed: each of the
// server's connections prepares a statement once, a round trip of its
// own, and the job queue's polling makes the pool hand requests other
// connections now and then (with 10, a median of 5 was seen for a spend
// of 4).
const rtWarmup = 40

// roundTrips times each operation n times in a row at one client.
func (e *env) roundTrips(ctx context.Context, n int) ([]rtRow, error) {
	ops, err := e.roundTripOps(ctx, n)
	if err != nil {
		return nil, err
	}
	var rows []rtRow
	seq := 0
	for _, op := range ops {
		for range rtWarmup {
			seq++
			if err := op.do(ctx, seq); err != nil {
				return nil, fmt.Errorf("%s: %w", op.name, err)
			}
		}
		latencies := make([]time.Duration, n)
		counted := make([]int64, n)
		for i := range n {
			seq++
			before, started := e.proxy.RoundTrips(), time.Now()
			if err := op.do(ctx, seq); err != nil {
				return nil, fmt.Errorf("%s: %w", op.name, err)
			}
			latencies[i], counted[i] = time.Since(started), e.proxy.RoundTrips()-before
		}
		slices.Sort(latencies)
		slices.Sort(counted)
		row := rtRow{Op: op.name, N: n, P50: percentile(latencies, 50), Counted: counted[n/2]}
		logf("  %-48s p50 %8.2f ms, %d round trips counted", row.Op, ms(row.P50), row.Counted)
		rows = append(rows, row)
	}
	return rows, nil
}

// rtMarkdown is the round-trips table.
func rtMarkdown(rows []rtRow, delay time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n### Database round trips per request (one client, --db-latency %s)\n\n", delay)
	b.WriteString("| operation | p50 | p50 / 2D | round trips counted (median) |\n|---|---|---|---|\n")
	for _, r := range rows {
		ratio := "—"
		if delay > 0 {
			ratio = fmt.Sprintf("%.1f", float64(r.P50)/float64(2*delay))
		}
		fmt.Fprintf(&b, "| %s | %.2f ms | %s | %d |\n", r.Op, ms(r.P50), ratio, r.Counted)
	}
	return b.String()
}
