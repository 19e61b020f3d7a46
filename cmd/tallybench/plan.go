package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"entgo.io/ent/dialect"
)

// workload is one thing measured: an operation per client, run against
// the server or, for a baseline, against the database directly.
type workload struct {
	name, desc string
	// group is the API workload this one is compared with (its own name
	// for the API workload), so that reports keep them together.
	group string
	// baselines are what an API workload is compared with, the one the
	// issue's targets use first.
	baselines []string
	viaServer bool
	// open runs at a constant rate, a share of the group's peak, rather
	// than as a closed loop.
	open  bool
	newOp func(client int) op
	// hooks is the webhook set a W4 workload delivers to.
	hooks *hookSet
}

// group is workloads run back to back with the same client counts, in an
// order that rotates every round so that none always runs first (on a
// colder cache) or last (on a more bloated database).
type group struct {
	members []*workload
	clients []int
}

func (g group) order(round int) []*workload {
	n := len(g.members)
	out := make([]*workload, n)
	for i := range n {
		out[i] = g.members[(i+round)%n]
	}
	return out
}

// openLoopShare is the share of W4's measured peak that W4o sends at.
const openLoopShare = 0.8

// plan seeds what the chosen workloads need and returns them in groups.
// W1 and W3's balance read run at every --clients count; W2, W3's pages
// and W4 at the largest only (64 by default, as the issue states them).
func (e *env) plan(ctx context.Context) ([]group, error) {
	o := e.o
	top := []int{maxClients(o.clients)}
	var groups []group
	for _, w := range []struct {
		name string
		plan func() ([]group, error)
	}{
		{"W1", func() ([]group, error) { return e.planW1(ctx) }},
		{"W2", func() ([]group, error) { return e.planW2(ctx, top) }},
		{"W3", func() ([]group, error) { return e.planW3(ctx, top) }},
		{"W4", func() ([]group, error) { return e.planW4(ctx, top) }},
	} {
		if !o.workloads[w.name] {
			continue
		}
		gs, err := w.plan()
		if err != nil {
			return nil, err
		}
		groups = append(groups, gs...)
	}
	return groups, nil
}

// planW1 is spends on one hot account, through the API and raw.
func (e *env) planW1(ctx context.Context) ([]group, error) {
	o := e.o
	var groups []group
	b2 := "raw spend: guarded UPDATE + inserts as one statement (CTE)"
	if e.dialect == dialect.SQLite {
		b2 = "raw spend: UPDATE … RETURNING + inserts, one transaction (no DML in CTEs)"
	}
	hot, err := e.seedAccounts(ctx, "bench-w1-api-", 1, seedBalance, false)
	if err != nil {
		return nil, err
	}
	raw, err := e.seedAccounts(ctx, "bench-w1-raw-", 1, seedBalance, true)
	if err != nil {
		return nil, err
	}
	one := func() int { return 0 }
	groups = append(groups, group{clients: o.clients, members: []*workload{
		{name: "W1", desc: "spendCredits, one hot account", group: "W1", baselines: []string{"B1", "B2"}, viaServer: true,
			newOp: func(c int) op { return apiSpendOp(e.api, e.serviceToken, hot, one, c) }},
		{name: "B1", desc: "raw spend: SELECT … FOR UPDATE, inserts, UPDATE", group: "W1",
			newOp: func(int) op { return rawSpendOp(e.raw.spendLocked, raw, one) }},
		{name: "B2", desc: b2, group: "W1",
			newOp: func(int) op { return rawSpendOp(e.raw.spendStatement, raw, one) }},
	}})
	return groups, nil
}

// planW2 is spends over many accounts, uniform and Zipf-distributed.
func (e *env) planW2(ctx context.Context, top []int) ([]group, error) {
	o := e.o
	var groups []group
	api, err := e.seedAccounts(ctx, "bench-w2-api-", o.accounts, seedBalance, false)
	if err != nil {
		return nil, err
	}
	raw, err := e.seedAccounts(ctx, "bench-w2-raw-", o.accounts, seedBalance, true)
	if err != nil {
		return nil, err
	}
	for _, dist := range []struct{ name, suffix, desc string }{
		{"uniform", "u", "uniform"}, {"zipf", "z", fmt.Sprintf("Zipf s=%.1f", zipfExponent)},
	} {
		pick := func(c int) func() int { return newChooser(dist.name, o.accounts, chooserSeed(c)) }
		w := "W2" + dist.suffix
		groups = append(groups, group{clients: top, members: []*workload{
			{name: w, desc: fmt.Sprintf("spendCredits, %d accounts, %s", o.accounts, dist.desc), group: w,
				baselines: []string{"B1" + dist.suffix, "B2" + dist.suffix}, viaServer: true,
				newOp: func(c int) op { return apiSpendOp(e.api, e.serviceToken, api, pick(c), c) }},
			{name: "B1" + dist.suffix, desc: "B1 on " + dist.desc + " accounts", group: w,
				newOp: func(c int) op { return rawSpendOp(e.raw.spendLocked, raw, pick(c)) }},
			{name: "B2" + dist.suffix, desc: "B2 on " + dist.desc + " accounts", group: w,
				newOp: func(c int) op { return rawSpendOp(e.raw.spendStatement, raw, pick(c)) }},
		}})
	}
	return groups, nil
}

// planW3 is balance reads at every client count, then history pages at
// each depth.
func (e *env) planW3(ctx context.Context, top []int) ([]group, error) {
	o := e.o
	var groups []group
	groups = append(groups, group{clients: o.clients, members: []*workload{
		{name: "W3", desc: "viewer { creditsBalance }", group: "W3", baselines: []string{"B3"}, viaServer: true,
			newOp: func(int) op { return apiBalanceOp(e.api, e.readerToken, readerCredit) }},
		{name: "B3", desc: "raw SELECT balance", group: "W3",
			newOp: func(int) op { return rawReadOp(e.raw, e.readerUserID, readerCredit) }},
		// Not a target: what any request to the server costs, compared
		// with B3 so that W3's ratio can be read against it.
		{name: "H0", desc: "HTTP floor: GET /healthz (no auth, GraphQL or database)", group: "W3",
			baselines: []string{"B3"}, viaServer: true,
			newOp: func(int) op { return apiHealthOp(e.api) }},
	}})
	if err := e.seedHistory(ctx, o.history, o.depths); err != nil {
		return nil, err
	}
	for _, d := range e.depths {
		w, b := fmt.Sprintf("W3p%d", d.depth), fmt.Sprintf("B3p%d", d.depth)
		groups = append(groups, group{clients: top, members: []*workload{
			{name: w, desc: fmt.Sprintf("viewer { transactions(first: %d) } at depth %d", historyPage, d.depth), group: w,
				baselines: []string{b}, viaServer: true,
				newOp: func(int) op { return apiPageOp(e.api, e.historyToken, d) }},
			{name: b, desc: fmt.Sprintf("raw keyset SELECT at depth %d", d.depth), group: w,
				newOp: func(int) op { return rawPageOp(e.raw, e.historyUserID, d) }},
		}})
	}
	return groups, nil
}

// planW4 is webhook deliveries, closed loop, then open loop at a share of
// the closed loop's peak.
func (e *env) planW4(ctx context.Context, top []int) ([]group, error) {
	o := e.o
	var groups []group
	api, err := e.seedHooks(ctx, "bench-w4-api-", false, o.dupShare)
	if err != nil {
		return nil, err
	}
	raw, err := e.seedHooks(ctx, "bench-w4-raw-", true, o.dupShare)
	if err != nil {
		return nil, err
	}
	dup := fmt.Sprintf("%.0f%% duplicates", 100*o.dupShare)
	groups = append(groups, group{clients: top, members: []*workload{
		{name: "W4", desc: "signed checkout.session.completed, " + dup, group: "W4", baselines: []string{"B4"},
			viaServer: true, hooks: api,
			newOp: func(c int) op { return apiHookOp(e.api, api, benchWebhookSecret, c) }},
		{name: "B4", desc: "raw event insert ON CONFLICT DO NOTHING + credit, " + dup, group: "W4", hooks: raw,
			newOp: func(c int) op { return rawHookOp(e.raw, raw, c) }},
	}}, group{clients: []int{0}, members: []*workload{
		{name: "W4o", desc: fmt.Sprintf("W4 open loop at %.0f%% of W4's peak", 100*openLoopShare), group: "W4o",
			viaServer: true, open: true, hooks: api,
			newOp: func(c int) op { return apiHookOp(e.api, api, benchWebhookSecret, c) }},
	}})
	return groups, nil
}

// runOne runs one workload once and checks the invariants after it. The
// error is for what stops the benchmark (the server died, a check could
// not run); broken invariants are in the result's check field. A run,
// once started, is not interrupted: it is bounded by --duration, and its
// measurements and checks must complete for its result to mean anything.
func (e *env) runOne(ctx context.Context, res *results, round int, w *workload, clients int) (runResult, error) {
	ctx = context.WithoutCancel(ctx)
	var rate float64
	if w.open {
		rate = openLoopShare * w.hooks.peak
		if rate <= 0 {
			return runResult{}, errSkip
		}
	}
	if h := w.hooks; h != nil {
		if err := h.ensurePending(ctx, e.db.Ent, h.budget(e.o.duration, rate)); err != nil {
			return runResult{}, err
		}
		h.startRun()
	}
	if _, err := e.refreshStatistics(ctx); err != nil {
		return runResult{}, err
	}
	var probe *usageProbe
	if w.viaServer {
		var err error
		if probe, err = e.server.begin(ctx, e.api); err != nil {
			return runResult{}, err
		}
	}
	var s sample
	if w.open {
		s = runOpen(rate, e.o.duration, w.newOp)
	} else {
		s = runClosed(clients, e.o.duration, w.newOp)
	}
	if probe != nil {
		var err error
		if s.server, err = probe.end(ctx, e.api); err != nil {
			return runResult{}, err
		}
	}
	if err := e.server.alive(); err != nil {
		return runResult{}, err
	}
	checkErr := e.verify(ctx)
	var v *violation
	if checkErr != nil && !errors.As(checkErr, &v) {
		return runResult{}, checkErr
	}
	r := res.add(round, w, clients, rate, s, checkErr)
	if h := w.hooks; h != nil {
		if !w.open {
			h.peak = max(h.peak, r.OpsPerSec)
		}
		if n := h.deliveries.Load(); n > 0 {
			res.Runs[len(res.Runs)-1].DuplicateShare = float64(h.duplicates.Load()) / float64(n)
		}
	}
	return res.Runs[len(res.Runs)-1], nil
}

// errSkip is a run that cannot take place (W4o without a W4 peak).
var errSkip = errors.New("skipped")

// warmUp runs every closed-loop workload once, for --warmup, before the
// first round, and keeps nothing of it. Without it round 1 measured a
// database and a server just set up rather than ones in service: a fresh
// database whose pages are first written after a checkpoint (each first
// write logs a whole page) and caches not yet filled. On PostgreSQL that
// halved W2's first round, for the API and the baselines alike, and made
// the ratio swing with whichever of them ran first. W4 and W4o are not
// warmed: each of their events is delivered once, from a stock sized per
// run. The invariants are still checked after every measured run, so
// whatever the warm-up wrote is checked too.
func (e *env) warmUp(ctx context.Context, groups []group) error {
	if e.o.warmup <= 0 {
		return nil
	}
	for _, g := range groups {
		for _, clients := range g.clients {
			for _, w := range g.members {
				if !w.warmed() {
					continue
				}
				if ctx.Err() != nil {
					return nil
				}
				s := runClosed(clients, e.o.warmup, w.newOp)
				if err := e.server.alive(); err != nil {
					return err
				}
				sum := summarize(w, e.o.db, clients, 0, 1, s)
				logf("warm-up %s clients=%d: %.0f ops/s, %d errors (not counted)", w.name, clients, sum.OpsPerSec, sum.Errors)
			}
		}
	}
	return nil
}

// warmed says whether warmUp runs w: closed loops that draw from no stock
// of webhook events.
func (w *workload) warmed() bool { return !w.open && w.hooks == nil }

// estimate is how long the plan's runs take, for the log.
func (o options) estimate(groups []group) time.Duration {
	runs, warmups := 0, 0
	for _, g := range groups {
		runs += len(g.members) * len(g.clients)
		for _, w := range g.members {
			if w.warmed() {
				warmups += len(g.clients)
			}
		}
	}
	return time.Duration(runs*o.rounds)*o.duration + time.Duration(warmups)*o.warmup
}
