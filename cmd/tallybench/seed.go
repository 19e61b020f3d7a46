package main

// The seed subcommand (issue 18, item 1): bulk-load a large, consistent
// ledger for sizing and for the scale benchmark.
//
//	go run ./cmd/tallybench seed --database-url URL --users N --transactions M [--heavy-user-transactions K]

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"entgo.io/ent/dialect"
	"github.com/jackc/pgx/v5"

	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/migrator"
	"github.com/tally-billing/tally/internal/payments"
	"github.com/tally-billing/tally/internal/pulid"
)

type seedOptions struct {
	url         string
	users       int
	txns        int
	heavy       int
	period      time.Duration
	randomSeed  uint64
	progress    io.Writer
	reportSizes io.Writer
}

// errSeedRefused is a database the seeder will not write to: not
// PostgreSQL, or not empty. It exits 2, like a usage error, because
// nothing was written.
var errSeedRefused = errors.New("seed: refused")

// errSeedBroken is a seed whose invariant check found problems.
var errSeedBroken = errors.New("seed: the invariant check found problems")

// seedMain runs the seed subcommand and returns the exit code.
func seedMain(args []string) int {
	o, err := parseSeedFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tallybench seed:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := seedDatabase(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "tallybench", err)
		if errors.Is(err, errSeedRefused) {
			return 2
		}
		return 1
	}
	return 0
}

func parseSeedFlags(args []string) (seedOptions, error) {
	fs := flag.NewFlagSet("tallybench seed", flag.ContinueOnError)
	o := seedOptions{progress: os.Stderr, reportSizes: os.Stdout}
	fs.StringVar(&o.url, "database-url", os.Getenv("DATABASE_URL"), "PostgreSQL database to migrate and fill; it must have no users")
	fs.IntVar(&o.users, "users", 1000, "ordinary users (user-000001…)")
	fs.IntVar(&o.txns, "transactions", 10000, "transactions spread over the ordinary users")
	fs.IntVar(&o.heavy, "heavy-user-transactions", 0, "transactions of one more user, heavy-user (0: no such user)")
	fs.DurationVar(&o.period, "period", 365*24*time.Hour, "how far back the history starts")
	fs.Uint64Var(&o.randomSeed, "seed", 1, "random seed of the amounts (ids are random regardless)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case o.url == "":
		return o, errors.New("--database-url is required")
	case o.users < 1 || o.txns < 0 || o.heavy < 0:
		return o, errors.New("--users must be at least 1, --transactions and --heavy-user-transactions at least 0")
	case o.period < time.Hour:
		return o, errors.New("--period must be at least 1h")
	}
	return o, nil
}

// seedSummary is what a seed wrote and how long it took.
type seedSummary struct {
	Users, Transactions int
	Rows                int64
	Load, Total         time.Duration
	Report              ledger.Report
}

// seedDatabase migrates, loads, analyzes and checks the database.
func seedDatabase(ctx context.Context, o seedOptions) (seedSummary, error) {
	started := time.Now()
	var sum seedSummary
	loc, err := database.Parse(o.url)
	if err != nil {
		return sum, fmt.Errorf("seed: --database-url: %w", err)
	}
	if loc.Dialect != dialect.Postgres {
		return sum, fmt.Errorf("%w: the seeder writes PostgreSQL only (COPY); %s is %s", errSeedRefused, database.Redacted(o.url), loc.Dialect)
	}
	db, err := database.Open(ctx, o.url, database.Options{})
	if err != nil {
		return sum, fmt.Errorf("seed: %w", err)
	}
	defer db.Close()
	if err := migrateForSeed(ctx, db); err != nil {
		return sum, err
	}
	conn, err := pgx.Connect(ctx, loc.DSN)
	if err != nil {
		return sum, fmt.Errorf("seed: connecting with pgx: %w", err)
	}
	defer conn.Close(ctx)
	if sum, err = loadSeed(ctx, conn, o); err != nil {
		return sum, err
	}
	fmt.Fprintf(o.progress, "seed: analyzing\n")
	if _, err := conn.Exec(ctx, "ANALYZE"); err != nil {
		return sum, fmt.Errorf("seed: analyzing: %w", err)
	}
	fmt.Fprintf(o.progress, "seed: checking the invariants\n")
	checkStarted := time.Now()
	sum.Report, err = payments.New(db, ledger.New(db), payments.Config{}).Check(ctx)
	if err != nil {
		return sum, fmt.Errorf("seed: checking the invariants: %w", err)
	}
	fmt.Fprintf(o.progress, "seed: invariant check of %d users, %d transactions, %d postings, %d lots took %s\n",
		sum.Report.Users, sum.Report.Transactions, sum.Report.Postings, sum.Report.Lots, time.Since(checkStarted).Round(time.Millisecond))
	if !sum.Report.OK() {
		for _, p := range sum.Report.Problems {
			fmt.Fprintf(o.progress, "  %s %s: %s\n", p.Invariant, p.Subject, p.Detail)
		}
		return sum, fmt.Errorf("%w: %d", errSeedBroken, len(sum.Report.Problems))
	}
	if err := printSeedSizes(ctx, conn, o.reportSizes, sum.Transactions); err != nil {
		return sum, err
	}
	sum.Total = time.Since(started)
	fmt.Fprintf(o.reportSizes, "seeded %d users and %d transactions (%d rows) in %s: load %s (%.0f rows/s, %.0f transactions/s)\n",
		sum.Users, sum.Transactions, sum.Rows, sum.Total.Round(time.Millisecond), sum.Load.Round(time.Millisecond),
		float64(sum.Rows)/sum.Load.Seconds(), float64(sum.Transactions)/sum.Load.Seconds())
	return sum, nil
}

// migrateForSeed migrates as `tally serve` does at start-up, and refuses a
// database with users: seeded ids, keys and balances assume nothing else.
func migrateForSeed(ctx context.Context, db *database.DB) error {
	m, err := migrator.New(db)
	if err != nil {
		return fmt.Errorf("seed: loading the migrations: %w", err)
	}
	if _, err := m.Up(ctx); err != nil {
		return fmt.Errorf("seed: migrating: %w", err)
	}
	var users int
	if err := db.SQL.QueryRowContext(ctx, "SELECT COUNT(*) FROM (SELECT 1 FROM users LIMIT 1) u").Scan(&users); err != nil {
		return fmt.Errorf("seed: counting users: %w", err)
	}
	if users > 0 {
		return fmt.Errorf("%w: the database already has users; seed an empty one", errSeedRefused)
	}
	return nil
}

// loadSeed writes every row in one database transaction: a seed that
// fails leaves the database empty, to be seeded again.
func loadSeed(ctx context.Context, conn *pgx.Conn, o seedOptions) (seedSummary, error) {
	var sum seedSummary
	started := time.Now()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return sum, fmt.Errorf("seed: beginning: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit it is a no-op
	indexes, err := dropSeedIndexes(ctx, tx)
	if err != nil {
		return sum, err
	}
	b := &copyBatch{ctx: ctx, tx: tx, progress: o.progress, started: started, lastNote: started, total: o.txns + o.heavy}
	end := time.Now().Add(-time.Hour).Truncate(time.Microsecond)
	start := end.Add(-o.period)
	adminUser := seedUser{externalID: "admin-000001", created: start, end: start}
	adminID := pulid.NewAt("usr", start)
	b.user(adminID, adminUser, 0, start)
	for _, u := range seedUsers(o, start, end) {
		if err := u.emit(b, adminID); err != nil {
			return sum, err
		}
		if b.err != nil {
			return sum, b.err
		}
		if err := ctx.Err(); err != nil {
			return sum, fmt.Errorf("seed: stopped: %w", err)
		}
	}
	if err := b.flush(); err != nil {
		return sum, err
	}
	b.note()
	fmt.Fprintf(o.progress, "seed: building %d indexes\n", len(indexes))
	if err := createSeedIndexes(ctx, tx, indexes); err != nil {
		return sum, err
	}
	if err := tx.Commit(ctx); err != nil {
		return sum, fmt.Errorf("seed: committing: %w", err)
	}
	sum.Users, sum.Transactions = int(b.copied[tUsers]), int(b.copied[tTransactions])
	sum.Rows, sum.Load = b.rowsCopied(), time.Since(started)
	return sum, nil
}

// seedUsers spreads the transactions evenly over the ordinary users, who
// join over the first half of the period, and adds heavy-user, there from
// the start.
func seedUsers(o seedOptions, start, end time.Time) func(yield func(int, seedUser) bool) {
	return func(yield func(int, seedUser) bool) {
		half := end.Sub(start) / 2
		for i := range o.users {
			n := o.txns / o.users
			if i < o.txns%o.users {
				n++
			}
			u := seedUser{
				externalID: fmt.Sprintf("user-%06d", i+1),
				seed:       o.randomSeed<<32 + uint64(i),
				txns:       n,
				created:    start.Add(half * time.Duration(i) / time.Duration(o.users)).Truncate(time.Microsecond),
				end:        end,
			}
			if !yield(i, u) {
				return
			}
		}
		if o.heavy > 0 {
			yield(o.users, seedUser{externalID: "heavy-user", seed: o.randomSeed<<32 - 1, txns: o.heavy, created: start, end: end})
		}
	}
}

// printSeedSizes prints each table's size with its indexes and TOAST, and
// what a transaction costs in all.
func printSeedSizes(ctx context.Context, conn *pgx.Conn, w io.Writer, txns int) error {
	rows, err := conn.Query(ctx, `SELECT c.relname, pg_total_relation_size(c.oid)
		  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		 WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname <> 'goose_db_version'
		 ORDER BY 2 DESC, 1`)
	if err != nil {
		return fmt.Errorf("seed: reading table sizes: %w", err)
	}
	defer rows.Close()
	var total int64
	fmt.Fprintf(w, "%-22s %14s %12s\n", "table", "bytes", "bytes/txn")
	for rows.Next() {
		var name string
		var size int64
		if err := rows.Scan(&name, &size); err != nil {
			return fmt.Errorf("seed: reading table sizes: %w", err)
		}
		total += size
		fmt.Fprintf(w, "%-22s %14d %12.0f\n", name, size, perTxn(size, txns))
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("seed: reading table sizes: %w", err)
	}
	fmt.Fprintf(w, "%-22s %14d %12.0f\n", "total", total, perTxn(total, txns))
	return nil
}

func perTxn(size int64, txns int) float64 {
	if txns == 0 {
		return 0
	}
	return float64(size) / float64(txns)
}
