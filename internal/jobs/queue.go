// Package jobs is Tally's durable background work: a job is a row inserted
// in the same database transaction as its cause, run by workers inside
// `tally serve`, retried with backoff, unique where a rule says "one at a
// time". It is River (github.com/riverqueue/river) on the server's own
// database, PostgreSQL or SQLite: a queue made for this, with
// transactional inserts and unique and periodic jobs, rather than one of
// our own. River's tables are created by Tally's migrations (Migrations).
//
// Every job is idempotent: running it twice has one effect. A job whose
// process dies is run again once River's rescuer finds it stuck, so each
// one records its progress where a second attempt picks it up.
package jobs

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"entgo.io/ent/dialect"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverdatabasesql"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivertype"

	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
)

// Config tunes the queue.
type Config struct {
	// Workers is how many jobs this process runs at once; 0 runs none
	// (a web-only replica still inserts jobs for the others to run).
	Workers int
	// PollInterval is how often idle workers look for jobs inserted by
	// other processes (jobs inserted by this one start at once).
	PollInterval time.Duration
	// CheckInterval is how often the incremental ledger check runs; 0
	// never schedules it.
	CheckInterval time.Duration
	// SweepInterval is how often lots and reservations past their time are
	// expired; 0 never schedules it.
	SweepInterval time.Duration
	// ExpiryNotice is how long before its expiry a lot with credits left
	// is told of (credits.expiring), by the same sweep.
	ExpiryNotice time.Duration
	// Invariants are checked beside the ledger's own (the payments'),
	// by both kinds of check.
	Invariants []ledger.Invariant
	// Register adds the workers of other packages' jobs (outbound
	// deliveries), which run in their own queues (Queues) so that they
	// never wait behind a long check.
	Register func(*river.Workers)
	Queues   map[string]river.QueueConfig
	// Periodic are other packages' jobs run every SweepInterval (the
	// payments' recharge sweep), inserted in the default queue unless
	// their InsertOpts say otherwise.
	Periodic []river.JobArgs
	// Timeout bounds one attempt of any job (DefaultTimeout when 0): a
	// long check is cut and goes on in its next attempt from the progress
	// it recorded, so that no job runs long enough to hold up River's
	// rescue of those whose process died.
	Timeout time.Duration
	// RescueAfter is how long a job may run before River takes its
	// process for dead and runs it again: at least twice Timeout (the
	// default), so that a live job is never run twice.
	RescueAfter time.Duration
	Logger      *slog.Logger
}

// DefaultTimeout bounds one attempt of a job.
const DefaultTimeout = 2 * time.Minute

// Queue inserts and runs Tally's jobs.
type Queue struct {
	db      *database.DB
	client  *river.Client[*sql.Tx]
	ledger  *ledger.Service
	working bool
	// timeout and rescueAfter are Config's, defaults applied.
	timeout, rescueAfter time.Duration
}

// UniqueWhileLive makes a job kind one at a time: a second insert while
// one is waiting or running returns that one instead.
var UniqueWhileLive = river.UniqueOpts{ByState: []rivertype.JobState{
	rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRunning,
	rivertype.JobStateRetryable, rivertype.JobStateScheduled,
}}

// New prepares the queue over db; Run starts its workers.
func New(db *database.DB, l *ledger.Service, cfg Config) (*Queue, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.RescueAfter < 2*cfg.Timeout {
		cfg.RescueAfter = 2 * cfg.Timeout
	}
	rc := &river.Config{
		// River reports its routine (job counts, elections) at info level
		// every few seconds; the server's log keeps its warnings.
		Logger:            slog.New(minLevel{cfg.Logger.Handler(), slog.LevelWarn}),
		FetchPollInterval: cfg.PollInterval,
		FetchCooldown:     min(cfg.PollInterval, 100*time.Millisecond),
		// Longer than any job's timeout, so that only a job whose process
		// died is taken for stuck.
		RescueStuckJobsAfter: cfg.RescueAfter,
		JobTimeout:           cfg.Timeout,
	}
	q := &Queue{db: db, ledger: l, working: cfg.Workers > 0, timeout: cfg.Timeout, rescueAfter: cfg.RescueAfter}
	if q.working {
		workers := river.NewWorkers()
		river.AddWorker(workers, &fullCheckWorker{ledger: l, invariants: cfg.Invariants, timeout: cfg.Timeout})
		river.AddWorker(workers, &incrementalCheckWorker{ledger: l, invariants: cfg.Invariants, timeout: cfg.Timeout})
		river.AddWorker(workers, &expirySweepWorker{ledger: l, logger: cfg.Logger, timeout: cfg.Timeout, notice: cfg.ExpiryNotice})
		if cfg.Register != nil {
			cfg.Register(workers)
		}
		rc.Workers = workers
		rc.Queues = map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: cfg.Workers}}
		for name, qc := range cfg.Queues {
			rc.Queues[name] = qc
		}
		rc.PeriodicJobs = periodic(cfg)
	}
	client, err := river.NewClient(driverFor(db.Dialect, db.SQL), rc)
	if err != nil {
		return nil, fmt.Errorf("jobs: creating the queue: %w", err)
	}
	q.client = client
	return q, nil
}

// periodic are the jobs the leader replica inserts on a schedule, each
// also once when the workers start.
func periodic(cfg Config) []*river.PeriodicJob {
	every := []struct {
		interval time.Duration
		args     river.JobArgs
	}{
		{cfg.CheckInterval, IncrementalCheckArgs{}},
		{cfg.SweepInterval, ExpirySweepArgs{}},
	}
	for _, args := range cfg.Periodic {
		every = append(every, struct {
			interval time.Duration
			args     river.JobArgs
		}{cfg.SweepInterval, args})
	}
	var jobs []*river.PeriodicJob
	for _, e := range every {
		if e.interval <= 0 {
			continue
		}
		jobs = append(jobs, river.NewPeriodicJob(river.PeriodicInterval(e.interval),
			func() (river.JobArgs, *river.InsertOpts) { return e.args, nil },
			&river.PeriodicJobOpts{RunOnStart: true}))
	}
	return jobs
}

// Inserter inserts jobs without running any: the ledger and the payments
// write the jobs their transactions cause through it, in those
// transactions, on any process (a web-only replica, a command) whether or
// not it works jobs.
type Inserter struct {
	client *river.Client[*sql.Tx]
}

// NewInserter returns an Inserter over db.
func NewInserter(db *database.DB) (*Inserter, error) {
	client, err := river.NewClient(driverFor(db.Dialect, db.SQL), &river.Config{
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return nil, fmt.Errorf("jobs: creating an inserter: %w", err)
	}
	return &Inserter{client: client}, nil
}

// InsertManyTx inserts jobs in tx; a unique job already waiting or
// running is not inserted again.
func (i *Inserter) InsertManyTx(ctx context.Context, tx *sql.Tx, params []river.InsertManyParams) error {
	if len(params) == 0 {
		return nil
	}
	if _, err := i.client.InsertManyTx(ctx, tx, params); err != nil {
		return fmt.Errorf("jobs: inserting %d jobs: %w", len(params), err)
	}
	return nil
}

// InsertTx inserts one job in tx; false when a unique job like it was
// already waiting or running, and none was added.
func (i *Inserter) InsertTx(ctx context.Context, tx *sql.Tx, args river.JobArgs) (bool, error) {
	res, err := i.client.InsertTx(ctx, tx, args, nil)
	if err != nil {
		return false, fmt.Errorf("jobs: inserting a %s job: %w", args.Kind(), err)
	}
	return !res.UniqueSkippedAsDuplicate, nil
}

func driverFor(dialectName string, pool *sql.DB) riverdriver.Driver[*sql.Tx] {
	if dialectName == dialect.SQLite {
		return riversqlite.New(pool)
	}
	return riverdatabasesql.New(pool)
}

// Run works jobs until ctx ends, then stops taking new ones and gives
// those running up to grace to finish before cancelling them: a cancelled
// job has recorded its progress and is resumed by the next attempt.
// Without workers it returns at once.
func (q *Queue) Run(ctx context.Context, grace time.Duration) error {
	if !q.working {
		return nil
	}
	// River cancels running jobs when the context given to Start ends, so
	// the jobs get their own, ended only after the graceful stop.
	jobsCtx, cancelJobs := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelJobs()
	if err := q.client.Start(jobsCtx); err != nil {
		return fmt.Errorf("jobs: starting the workers: %w", err)
	}
	<-ctx.Done()
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	err := q.client.Stop(stopCtx)
	if errors.Is(err, context.DeadlineExceeded) {
		// The jobs still running are cancelled; each has recorded its
		// progress for the next attempt.
		cancelJobs()
		<-q.client.Stopped()
		return nil
	}
	if err != nil {
		return fmt.Errorf("jobs: stopping the workers: %w", err)
	}
	return nil
}

// minLevel drops records below a level.
type minLevel struct {
	slog.Handler
	level slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.level && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(attrs []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(attrs), h.level}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.level}
}
