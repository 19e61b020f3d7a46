package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"entgo.io/ent/dialect"
	"github.com/jackc/pgx/v5"

	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/config"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/faultproxy"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/migrator"
)

// benchSecret signs the harness's tokens, and benchWebhookSecret its Stripe
// events. Both are fixed and public: the server lives only as long as the
// run and listens on loopback.
const (
	benchSecret        = "tallybench-secret-of-at-least-thirty-two-bytes"
	benchWebhookSecret = "whsec_tallybench_public_benchmark_secret"
)

const (
	readerExternalID = "bench-w3-reader"
	// seedBalance is far more than any run can spend, so that no spend is
	// ever refused for want of credits.
	seedBalance  = int64(1) << 40
	readerCredit = int64(1000)
)

// seedActor writes the harness's own seed data through the ledger.
var seedActor = ledger.Actor{Kind: ledger.ActorAdmin, ID: "tallybench"}

// env is everything one benchmark runs against: a fresh migrated database,
// a Tally server in a child process over real HTTP on loopback, the
// harness's own pool and ledger (for seeding and checks), and a pool for
// the raw-SQL baselines.
type env struct {
	o        options
	dialect  string
	db       *database.DB
	ledger   *ledger.Service
	raw      rawStore
	server   *tallyServer
	receiver *eventReceiver    // with --low-balance-threshold
	proxy    *faultproxy.Proxy // with --db-latency or --round-trips
	api      *gqlClient
	poolSize int

	serviceToken, readerToken, historyToken string
	readerUserID, historyUserID             string
	depths                                  []depthCursor
	packID                                  string

	sets    []*accountSet
	lotless map[string]bool
	hooks   []*hookSet
	seeding []seedTime

	cleanup []func()
}

// Close stops the server and removes the database, last created first.
func (e *env) Close() {
	for i := len(e.cleanup) - 1; i >= 0; i-- {
		e.cleanup[i]()
	}
}

func newEnv(ctx context.Context, o options) (_ *env, err error) {
	e := &env{o: o, lotless: map[string]bool{}}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	url, err := e.freshDatabase(ctx, o)
	if err != nil {
		return nil, err
	}
	// The harness's own pool (seeding, checks) goes straight to the
	// database; the server and the baselines through the proxy, if any.
	serverURL := url
	if o.dbLatency > 0 || o.roundTrips {
		if serverURL, err = e.proxied(url, o.dbLatency); err != nil {
			return nil, err
		}
	}
	// The server's configuration comes from the environment like a real
	// deployment's (so that TALLY_DB_MAX_CONNS and friends can be tried),
	// except what the harness must control.
	fixed := map[string]string{
		"DATABASE_URL":     serverURL,
		"TALLY_JWT_SECRET": benchSecret,
		// Set together with the secret, a public key is a config error.
		"TALLY_JWT_PUBLIC_KEY":  "",
		"STRIPE_WEBHOOK_SECRET": benchWebhookSecret,
		"TALLY_RATE_LIMIT":      "0", // the limiter would refuse the load
		// One log line per request would be a large part of the work.
		"TALLY_LOG_LEVEL": "error",
	}
	for k, v := range outboundEnv(o.lowBalance) {
		fixed[k] = v
	}
	cfg, err := config.Load(func(k string) string {
		if v, ok := fixed[k]; ok {
			return v
		}
		return os.Getenv(k)
	})
	if err != nil {
		return nil, err
	}
	// The baselines get a pool of the server's size, whatever the default.
	e.poolSize = cfg.DBMaxConns
	if e.db, err = database.Open(ctx, url, database.Options{MaxOpenConns: cfg.DBMaxConns}); err != nil {
		return nil, err
	}
	e.cleanup = append(e.cleanup, func() { e.db.Close() })
	e.dialect = e.db.Dialect
	if e.poolSize <= 0 {
		e.poolSize = map[string]int{dialect.Postgres: 20, dialect.SQLite: 8}[e.dialect]
	}
	m, err := migrator.New(e.db)
	if err != nil {
		return nil, err
	}
	if _, err := m.Up(ctx); err != nil {
		return nil, fmt.Errorf("migrating the benchmark database: %w", err)
	}
	e.ledger = ledger.New(e.db)
	if err := e.startServer(ctx, fixed); err != nil {
		return nil, err
	}
	if err := e.openBaselines(ctx, serverURL); err != nil {
		return nil, err
	}
	e.api = newGQLClient(e.server.baseURL, max(maxClients(o.clients), openLoopWorkers))
	if o.lowBalance > 0 {
		if err := e.setUpOutbound(ctx); err != nil {
			return nil, err
		}
	}
	return e, e.seedCommon(ctx)
}

// freshDatabase creates the run's database: a SQLite file in a temporary
// directory, or a new database on the PostgreSQL server (a whole database
// rather than a schema, so that nothing of an earlier run or another user
// of the server is in the tables the invariants are checked over).
func (e *env) freshDatabase(ctx context.Context, o options) (string, error) {
	switch o.db {
	case "sqlite":
		dir, err := os.MkdirTemp("", "tallybench-")
		if err != nil {
			return "", err
		}
		e.cleanup = append(e.cleanup, func() { os.RemoveAll(dir) })
		return "sqlite://" + filepath.Join(dir, "tally.db"), nil
	case "postgres":
		url, drop, err := database.ScratchPostgresDatabase(ctx, o.pgURL, "tallybench")
		if err != nil {
			return "", err
		}
		e.cleanup = append(e.cleanup, func() {
			if err := drop(context.Background()); err != nil {
				logf("dropping the benchmark database: %v", err)
			}
		})
		return url, nil
	}
	return "", fmt.Errorf("--db must be sqlite or postgres, not %q", o.db)
}

// startServer builds (unless --tally names a binary) and starts the real
// `tally serve` as a child process.
func (e *env) startServer(ctx context.Context, fixed map[string]string) error {
	bin := e.o.tallyBin
	if bin == "" {
		dir, err := os.MkdirTemp("", "tallybench-bin-")
		if err != nil {
			return err
		}
		e.cleanup = append(e.cleanup, func() { os.RemoveAll(dir) })
		if bin, err = buildTally(ctx, dir); err != nil {
			return err
		}
	}
	s, err := startTally(ctx, bin, fixed)
	if err != nil {
		return err
	}
	e.server = s
	e.cleanup = append(e.cleanup, s.Stop)
	return nil
}

// openBaselines opens the baselines' own pool: pgx on PostgreSQL (unless
// --baseline-driver sql), database/sql on SQLite.
func (e *env) openBaselines(ctx context.Context, url string) error {
	if e.dialect == dialect.Postgres && e.o.baselineDriver == "pgx" {
		s, err := newPgxStore(ctx, url, e.poolSize)
		if err != nil {
			return err
		}
		e.raw = s
		e.cleanup = append(e.cleanup, s.Close)
		return nil
	}
	rawDB, err := database.Open(ctx, url, database.Options{MaxOpenConns: e.poolSize})
	if err != nil {
		return err
	}
	e.cleanup = append(e.cleanup, func() { rawDB.Close() })
	s, err := newSQLStore(ctx, rawDB)
	if err != nil {
		return err
	}
	e.raw = s
	e.cleanup = append(e.cleanup, s.Close)
	return nil
}

// seedCommon mints the tokens and creates W3's reader.
func (e *env) seedCommon(ctx context.Context) error {
	var err error
	if e.serviceToken, err = auth.Mint([]byte(benchSecret), auth.MintClaims{Subject: "tallybench", Role: auth.RoleService}, 24*time.Hour); err != nil {
		return err
	}
	if e.readerToken, err = auth.Mint([]byte(benchSecret), auth.MintClaims{Subject: readerExternalID}, 24*time.Hour); err != nil {
		return err
	}
	u, err := e.db.Ent.User.Create().SetExternalID(readerExternalID).Save(ctx)
	if err != nil {
		return fmt.Errorf("creating the reader: %w", err)
	}
	e.readerUserID = u.ID
	if _, err := e.ledger.Grant(ctx, seedActor, ledger.GrantRequest{
		UserID: u.ID, Amount: readerCredit, IdempotencyKey: "seed-" + readerExternalID,
	}); err != nil {
		return fmt.Errorf("granting the reader's credits: %w", err)
	}
	return nil
}

// refreshStatistics analyzes the PostgreSQL tables that autovacuum would
// analyze now: those changed by more than 50 rows + 10% since their last
// analysis (autovacuum's default threshold and scale factor). It runs
// after seeding and before every run, outside the measured time, so that
// every run starts from statistics that describe the data, as a
// deployment's autovacuum keeps them, whether or not autovacuum runs on
// the server at hand (it is off on the test server here). Without it the
// planner saw freshly filled tables as nearly empty: it estimated 23 rows
// for a user with 10,001 and sorted all of them for every history page
// (5 ms instead of 0.07 ms). SQLite is left as Tally leaves it: Tally
// never runs ANALYZE there, so a deployment's SQLite has no statistics.
func (e *env) refreshStatistics(ctx context.Context) ([]string, error) {
	if e.dialect != dialect.Postgres {
		return nil, nil
	}
	rows, err := e.db.SQL.QueryContext(ctx,
		`SELECT relname FROM pg_stat_user_tables WHERE n_mod_since_analyze > 50 + 0.1 * n_live_tup ORDER BY relname`)
	if err != nil {
		return nil, fmt.Errorf("reading the tables' statistics: %w", err)
	}
	var tables []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			rows.Close()
			return nil, fmt.Errorf("reading the tables' statistics: %w", err)
		}
		tables = append(tables, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the tables' statistics: %w", err)
	}
	for _, t := range tables {
		if _, err := e.db.SQL.ExecContext(ctx, "ANALYZE "+pgx.Identifier{t}.Sanitize()); err != nil {
			return nil, fmt.Errorf("analyzing %s: %w", t, err)
		}
	}
	return tables, nil
}

// analyzeSeed refreshes the statistics after seeding, and says so.
func (e *env) analyzeSeed(ctx context.Context) error {
	started := time.Now()
	tables, err := e.refreshStatistics(ctx)
	if err != nil {
		return err
	}
	if len(tables) > 0 {
		logf("analyzed %d seeded tables in %.1fs", len(tables), time.Since(started).Seconds())
	}
	return nil
}

func maxClients(cs []int) int {
	m := 1
	for _, c := range cs {
		m = max(m, c)
	}
	return m
}
