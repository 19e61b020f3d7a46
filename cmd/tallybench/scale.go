package main

// The --scale mode (issue 18, item 2): the same API operations timed on a
// small and a large seeded PostgreSQL database, side by side, with how much
// each grew. See docs/benchmarks.md, "Cost at scale".

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"entgo.io/ent/dialect"

	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/database"
)

// scaleOptions are the --scale mode's settings.
type scaleOptions struct {
	smallURL, largeURL string
	// requests is how many timed requests each operation gets, unless
	// budget runs out first (after at least scaleMinRequests).
	requests int
	budget   time.Duration
	warmup   int
	clients  int
	duration time.Duration
	tallyBin string
}

// scaleMinRequests is the fewest timed requests of an operation, however
// slow (but see timeBoth): with fewer, a p99 would be one lucky or unlucky
// request.
const scaleMinRequests = 3

// scaleDeepest is the depth of the deep history page on a database whose
// heavy user has enough history (the "500,000 deep"); a smaller
// history is read at half its length.
const scaleDeepest = 500_000

// scaleThroughputUsers is how many ordinary users the throughput run
// spends from, round robin, so that it measures spends rather than one
// account's row lock.
const scaleThroughputUsers = 64

// scaleResult is what one database measured.
type scaleResult struct {
	url          string
	startup      time.Duration
	ops          map[string]opStats
	throughput   float64
	throughErr   int
	dbBytes      int64
	transactions int64
	depth        int
}

// opStats are an operation's timed requests.
type opStats struct {
	n, errors int
	p50, p99  time.Duration
}

// runScale measures both databases, prints the table, and returns an error
// when a request failed or a row breaks its bound (after printing).
func runScale(ctx context.Context, o scaleOptions, w io.Writer) error {
	for _, u := range []string{o.smallURL, o.largeURL} {
		loc, err := database.Parse(u)
		if err != nil {
			return fmt.Errorf("--scale: %w", err)
		}
		if loc.Dialect != dialect.Postgres {
			return fmt.Errorf("--scale measures PostgreSQL databases seeded by `tallybench seed`; %s is %s", database.Redacted(u), loc.Dialect)
		}
	}
	bin := o.tallyBin
	if bin == "" {
		dir, err := os.MkdirTemp("", "tallybench-bin-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if bin, err = buildTally(ctx, dir); err != nil {
			return err
		}
	}
	small, err := openScaleTarget(ctx, o, bin, o.smallURL)
	if err != nil {
		return err
	}
	defer small.close()
	large, err := openScaleTarget(ctx, o, bin, o.largeURL)
	if err != nil {
		return err
	}
	defer large.close()
	both := []*scaleTarget{small, large}
	for _, op := range scaleOps() {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		timeBoth(o, op, both)
	}
	throughputBoth(o, both)
	for _, t := range both {
		if err := t.finish(ctx); err != nil {
			return err
		}
	}
	t := scaleTable(o, small.res, large.res)
	if _, err := io.WriteString(w, t.markdown()); err != nil {
		return err
	}
	return t.verdict()
}

// scaleTarget is one database under measurement, with its own server.
type scaleTarget struct {
	name string
	srv  *tallyServer
	db   *database.DB
	s    *scaleSession
	res  scaleResult
}

func (t *scaleTarget) close() {
	if t.srv != nil {
		t.srv.Stop()
	}
	if t.db != nil {
		t.db.Close()
	}
}

// openScaleTarget starts a server on the database (timing its start-up,
// which includes applying the migrations the database has not had yet, as
// a deployment's does) and prepares the session that acts on it.
func openScaleTarget(ctx context.Context, o scaleOptions, bin, url string) (_ *scaleTarget, err error) {
	t := &scaleTarget{name: database.Redacted(url), res: scaleResult{url: url, ops: map[string]opStats{}}}
	defer func() {
		if err != nil {
			t.close()
			err = fmt.Errorf("%s: %w", t.name, err)
		}
	}()
	started := time.Now()
	if t.srv, err = startTally(ctx, bin, map[string]string{
		"DATABASE_URL":          url,
		"TALLY_JWT_SECRET":      benchSecret,
		"TALLY_JWT_PUBLIC_KEY":  "",
		"STRIPE_WEBHOOK_SECRET": benchWebhookSecret,
		"TALLY_RATE_LIMIT":      "0",
		"TALLY_LOG_LEVEL":       "error",
	}); err != nil {
		return nil, err
	}
	t.res.startup = time.Since(started)
	logf("tally (pid %d) on %s was ready in %s", t.srv.pid, t.name, t.res.startup.Round(time.Millisecond))
	if t.db, err = database.Open(ctx, url, database.Options{MaxOpenConns: 2}); err != nil {
		return nil, err
	}
	// The size as seeded (and grown by earlier runs), before this run adds
	// its own transactions (the throughput run's spends: about 15,000).
	if err := t.db.SQL.QueryRowContext(ctx,
		`SELECT pg_database_size(current_database()), (SELECT COUNT(*) FROM credit_transactions)`).Scan(&t.res.dbBytes, &t.res.transactions); err != nil {
		return nil, fmt.Errorf("reading the database's size: %w", err)
	}
	// Statistics as autovacuum would keep them (it is off on some test
	// servers): earlier runs' writes must not leave the planner with stale
	// ones on one database and fresh ones on the other.
	if tables, err := (&env{dialect: dialect.Postgres, db: t.db}).refreshStatistics(ctx); err != nil {
		return nil, err
	} else if len(tables) > 0 {
		logf("analyzed %s on %s", strings.Join(tables, ", "), t.name)
	}
	f, err := loadScaleFixture(ctx, t.db)
	if err != nil {
		return nil, err
	}
	t.res.depth = f.deep.depth
	if t.s, err = newScaleSession(ctx, newGQLClient(t.srv.baseURL, o.clients), f); err != nil {
		return nil, err
	}
	return t, nil
}

// finish checks that the server lived through the run.
func (t *scaleTarget) finish(ctx context.Context) error {
	if err := t.srv.alive(); err != nil {
		return fmt.Errorf("%s: %w", t.name, err)
	}
	return nil
}

// scaleSession is the clients and tokens one database is measured with.
type scaleSession struct {
	api                                  *gqlClient
	f                                    scaleFixture
	heavyToken, adminToken, serviceToken string
	prefix                               string
	spender                              *accountSet
	spendOne                             op
}

func newScaleSession(ctx context.Context, api *gqlClient, f scaleFixture) (*scaleSession, error) {
	s := &scaleSession{api: api, f: f, prefix: fmt.Sprintf("scale%d", time.Now().UnixNano())}
	for _, t := range []struct {
		to   *string
		sub  string
		role auth.Role
	}{
		{&s.heavyToken, heavyExternalID, auth.RoleUser},
		{&s.adminToken, seedAdminExternalID, auth.RoleAdmin},
		{&s.serviceToken, "tallybench", auth.RoleService},
	} {
		var err error
		if *t.to, err = auth.Mint([]byte(benchSecret), auth.MintClaims{Subject: t.sub, Role: t.role}, 24*time.Hour); err != nil {
			return nil, err
		}
	}
	// Credits enough for every spend and capture of the run, granted
	// before anything is timed (the seeded balances are small).
	spenders := append([]string{f.ordinary}, f.throughputUsers...)
	for i, u := range slices.Compact(spenders) {
		if err := s.grant(ctx, u, 1_000_000, s.key("setup", i)); err != nil {
			return nil, fmt.Errorf("granting %s the run's credits: %w", u, err)
		}
	}
	s.spender = &accountSet{name: s.prefix, external: []string{f.ordinary}, spent: make([]atomic.Int64, 1)}
	s.spendOne = apiSpendOp(api, s.serviceToken, s.spender, func() int { return 0 }, 0)
	return s, nil
}

func (s *scaleSession) spend(ctx context.Context) error { return s.spendOne(ctx) }

// timeBoth warms so up, then times up to o.requests sequential requests
// on each database within o.budget, alternating between the databases
// request by request, so that whatever else loads the machine meanwhile
// weighs on both alike.
func timeBoth(o scaleOptions, so scaleOp, both []*scaleTarget) {
	seq := 0
	dos := make([]op, len(both))
	for i, t := range both {
		dos[i] = func(ctx context.Context) error { seq++; return so.do(ctx, t.s, seq) }
	}
	var warm sample
	started := time.Now()
	for i := range o.warmup {
		if i > 0 && time.Since(started) > o.budget/4 {
			break
		}
		for _, do := range dos {
			warm.record(do, time.Now())
		}
	}
	// An operation whose one warm-up turn outlasted the whole budget (a
	// report over every row of a large ledger) gets a single timed turn:
	// three would hold the run for minutes to tell nothing more.
	least := scaleMinRequests
	if time.Since(started) > o.budget {
		least = 1
	}
	smps := make([]sample, len(both))
	started = time.Now()
	for i := 0; i < o.requests && (i < least || time.Since(started) < o.budget); i++ {
		for _, j := range turnOrder(i, len(dos)) {
			smps[j].record(dos[j], time.Now())
		}
	}
	for i, t := range both {
		sorted := slices.Clone(smps[i].latencies)
		slices.Sort(sorted)
		st := opStats{n: len(sorted), errors: smps[i].errors, p50: percentile(sorted, 50), p99: percentile(sorted, 99)}
		t.res.ops[so.name] = st
		logf("  %-5s %-52s n %4d p50 %8.2f ms p99 %8.2f ms errors %d", []string{"small", "large"}[i], so.name, st.n, ms(st.p50), ms(st.p99), st.errors)
	}
}

// throughputBoth runs o.clients clients spending 1 credit each from each
// database's throughput users, in one-second turns, alternating (see
// turnOrder), until each database has had o.duration (after a second of
// warm-up each).
func throughputBoth(o scaleOptions, both []*scaleTarget) {
	newOps := make([]func(int) op, len(both))
	for i, t := range both {
		set := &accountSet{name: t.s.prefix + "-t", external: t.s.f.throughputUsers,
			spent: make([]atomic.Int64, len(t.s.f.throughputUsers))}
		newOps[i] = func(client int) op {
			next := client
			pick := func() int { next = (next + 1) % len(set.external); return next }
			return apiSpendOp(t.s.api, t.s.serviceToken, set, pick, client)
		}
		runClosed(o.clients, time.Second, newOps[i])
	}
	turns := max(1, int(o.duration/time.Second))
	smps := make([][]sample, len(both))
	for turn := range turns {
		for _, i := range turnOrder(turn, len(both)) {
			smps[i] = append(smps[i], runClosed(o.clients, o.duration/time.Duration(turns), newOps[i]))
		}
	}
	for i, t := range both {
		m := merge(smps[i])
		t.res.throughput = float64(len(m.latencies)-m.errors) / m.elapsed.Seconds()
		t.res.throughErr = m.errors
		logf("  %-5s spend throughput at %d clients: %.0f/s (errors %d)", []string{"small", "large"}[i], o.clients, t.res.throughput, m.errors)
	}
}

// turnOrder is the order of the n databases in turn i: forwards, then
// backwards, so that neither always goes first (after the other's writes,
// or while its own server is warmer).
func turnOrder(i, n int) []int {
	order := make([]int, n)
	for j := range order {
		order[j] = j
	}
	if i%2 == 1 {
		slices.Reverse(order)
	}
	return order
}

var errScaleBound = errors.New("a row breaks its bound")

// scaleFlags completes and checks the --scale mode's options: --clients is
// one count there (32 unless given), --duration the throughput run's.
func scaleFlags(fs *flag.FlagSet, o *options, clients string) error {
	s := &o.scaleOpts
	if s.smallURL == "" || s.largeURL == "" {
		return errors.New("--scale needs --small-url and --large-url (databases filled by `tallybench seed`)")
	}
	if s.requests < scaleMinRequests || s.budget <= 0 || o.duration <= 0 {
		return fmt.Errorf("--requests must be at least %d, --op-budget and --duration positive", scaleMinRequests)
	}
	s.clients = 32
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == "clients" })
	if set {
		n, err := intList("--clients", clients, 1, 1024)
		if err != nil || len(n) != 1 {
			return fmt.Errorf("--clients with --scale is one count from 1 to 1024, not %q", clients)
		}
		s.clients = n[0]
	}
	s.warmup, s.duration = scaleWarmup, o.duration
	if o.tallyBin != "" {
		var err error
		if s.tallyBin, err = filepath.Abs(o.tallyBin); err != nil {
			return err
		}
	}
	return nil
}

// scaleWarmup is how many untimed requests of each operation come first
// (fewer when they take more than a quarter of --op-budget).
const scaleWarmup = 5

// scaleMain runs the mode and returns the exit code: 3 when the table
// shows a bound broken, 1 when the measurement itself failed.
func scaleMain(o options) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := runScale(ctx, o.scaleOpts, os.Stdout)
	if err == nil {
		return 0
	}
	fmt.Fprintln(os.Stderr, "tallybench --scale:", err)
	if errors.Is(err, errScaleBound) {
		return 3
	}
	return 1
}
