package jobs

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	entsql "entgo.io/ent/dialect/sql"
	"github.com/riverqueue/river"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/ledgercheck"
	"github.com/tally-billing/tally/internal/ledger"
)

// checkAttempts is how many times a failing check is tried before its run
// is marked failed.
const checkAttempts = 5

// FullCheckArgs is the job of one full ledger check, whose run (a
// ledger_checks row) was recorded with the job.
type FullCheckArgs struct {
	CheckID string `json:"check_id"`
}

// Kind names the job in River's table.
func (FullCheckArgs) Kind() string { return "ledger_check_full" }

// InsertOpts retries a failing check a few times. One at a time is the
// rule of ledger_checks, not of River's unique jobs: River marks a job
// completed a moment after its work returns, and a check started in that
// moment must not be taken for the one that just finished.
func (FullCheckArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{MaxAttempts: checkAttempts}
}

// A check that needs longer than an attempt (Config.Timeout) goes on in
// the next attempt from the progress it recorded.
type fullCheckWorker struct {
	river.WorkerDefaults[FullCheckArgs]
	ledger     *ledger.Service
	invariants []ledger.Invariant
	timeout    time.Duration
}

func (w *fullCheckWorker) Timeout(*river.Job[FullCheckArgs]) time.Duration { return w.timeout }

func (w *fullCheckWorker) Work(ctx context.Context, job *river.Job[FullCheckArgs]) error {
	err := w.attempt(ctx, job.Args.CheckID)
	var snooze *river.JobSnoozeError
	if err == nil || errors.As(err, &snooze) || job.Attempt < job.MaxAttempts {
		return err
	}
	return errors.Join(err, w.ledger.FailCheck(context.WithoutCancel(ctx), job.Args.CheckID, err))
}

// attempt runs the check from where it had got to. Cut by its timeout or
// by a shutdown after recording progress, it snoozes: the next attempt
// goes on from there, and a check longer than an attempt (or than the time
// between two deploys) must not use its attempts up. One that got nowhere
// counts as a failure.
func (w *fullCheckWorker) attempt(ctx context.Context, id string) error {
	before, err := w.ledger.CheckProgress(ctx, id)
	if err != nil {
		return err
	}
	err = w.ledger.RunFullCheck(ctx, id, w.invariants)
	if err != nil && ctx.Err() != nil {
		if after, perr := w.ledger.CheckProgress(context.WithoutCancel(ctx), id); perr == nil && after > before {
			return river.JobSnooze(time.Second)
		}
	}
	return err
}

// IncrementalCheckArgs is the periodic job of the incremental check.
type IncrementalCheckArgs struct{}

// Kind names the job in River's table.
func (IncrementalCheckArgs) Kind() string { return "ledger_check_incremental" }

// InsertOpts makes incremental checks one at a time: a run that takes
// longer than the period is not joined by the next.
func (IncrementalCheckArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{MaxAttempts: checkAttempts, UniqueOpts: UniqueWhileLive}
}

type incrementalCheckWorker struct {
	river.WorkerDefaults[IncrementalCheckArgs]
	ledger     *ledger.Service
	invariants []ledger.Invariant
	timeout    time.Duration
}

func (w *incrementalCheckWorker) Timeout(*river.Job[IncrementalCheckArgs]) time.Duration {
	return w.timeout
}

func (w *incrementalCheckWorker) Work(ctx context.Context, _ *river.Job[IncrementalCheckArgs]) error {
	_, err := w.ledger.RunIncrementalCheck(ctx, w.invariants)
	return err
}

// abandonedAfter is how long a queued or running full check may go
// without recording progress before a new start replaces it: longer than
// an attempt may take and River takes to retry one whose process died, so
// only a run no job will ever resume (its last attempt died with its
// process) is replaced.
func (q *Queue) abandonedAfter() time.Duration { return 2 * (q.timeout + q.rescueAfter) }

// StartFullCheck queues a full check for an admin and returns its run. A
// full check already queued or running is returned instead of starting a
// second: one runs at a time (a unique index on ledger_checks.live says so to
// every replica).
func (q *Queue) StartFullCheck(ctx context.Context, requestedBy string) (run *ent.LedgerCheck, started bool, err error) {
	for range 3 {
		started = false
		err = q.inTx(ctx, func(ctx context.Context, client *ent.Client, tx *sql.Tx) error {
			live, err := client.LedgerCheck.Query().
				Where(ledgercheck.KindEQ(ledgercheck.KindFULL), ledgercheck.StatusIn(ledgercheck.StatusQUEUED, ledgercheck.StatusRUNNING)).
				Only(ctx)
			switch {
			case err == nil && time.Since(lastSignOfLife(live)) < q.abandonedAfter():
				run = live
				return nil
			case err == nil:
				err = live.Update().SetStatus(ledgercheck.StatusFAILED).ClearLive().SetFinishedAt(time.Now().UTC()).
					SetError("abandoned: no progress recorded for " + q.abandonedAfter().String()).Exec(ctx)
				if err != nil {
					return fmt.Errorf("jobs: closing an abandoned check: %w", err)
				}
			case !ent.IsNotFound(err):
				return fmt.Errorf("jobs: reading the running check: %w", err)
			}
			run, err = client.LedgerCheck.Create().SetKind(ledgercheck.KindFULL).SetLive(string(ledgercheck.KindFULL)).SetRequestedBy(requestedBy).Save(ctx)
			if err != nil {
				return fmt.Errorf("jobs: recording a check: %w", err)
			}
			if _, err := q.client.InsertTx(ctx, tx, FullCheckArgs{CheckID: run.ID}, nil); err != nil {
				return fmt.Errorf("jobs: queueing a check: %w", err)
			}
			started = true
			return nil
		})
		// A concurrent start won the unique index: read its run.
		if !ent.IsConstraintError(err) {
			break
		}
	}
	return run, started, err
}

func lastSignOfLife(run *ent.LedgerCheck) time.Time {
	if run.UpdatedAt != nil {
		return *run.UpdatedAt
	}
	return run.CreatedAt
}

// inTx runs fn in one database transaction, with an ent client and the
// *sql.Tx River inserts through both on it, so that a job and the rows it
// works on commit together or not at all.
func (q *Queue) inTx(ctx context.Context, fn func(ctx context.Context, client *ent.Client, tx *sql.Tx) error) error {
	tx, err := q.db.SQL.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("jobs: beginning a transaction: %w", err)
	}
	client := ent.NewClient(ent.Driver(entsql.NewDriver(q.db.Dialect, entsql.Conn{ExecQuerier: tx})))
	if err := fn(ctx, client, tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("jobs: committing: %w", err)
	}
	return nil
}
