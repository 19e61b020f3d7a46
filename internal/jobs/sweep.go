package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/riverqueue/river"

	"github.com/tally-billing/tally/internal/ledger"
)

// ExpirySweepArgs is the periodic job that expires lots and reservations
// past their time. It runs on one replica at a time (River's leader
// schedules periodic jobs, and the job is unique while it waits or runs);
// every expiry re-checks under the user's lock besides, so an item is
// expired once whatever runs it.
type ExpirySweepArgs struct{}

// Kind names the job in River's table.
func (ExpirySweepArgs) Kind() string { return "expiry_sweep" }

// InsertOpts makes sweeps one at a time: a sweep longer than the period
// is not joined by the next.
func (ExpirySweepArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{MaxAttempts: 3, UniqueOpts: UniqueWhileLive}
}

type expirySweepWorker struct {
	river.WorkerDefaults[ExpirySweepArgs]
	ledger *ledger.Service
	logger *slog.Logger
	// timeout bounds one sweep; what it did not reach, the next one does.
	timeout time.Duration
	// notice is how long before their expiry lots are told of.
	notice time.Duration
}

func (w *expirySweepWorker) Timeout(*river.Job[ExpirySweepArgs]) time.Duration { return w.timeout }

func (w *expirySweepWorker) Work(ctx context.Context, _ *river.Job[ExpirySweepArgs]) error {
	// Expiring first: a backlog of notices (the first sweep after an
	// upgrade) must not hold expiries back.
	lots, lotsErr := w.ledger.ExpireLots(ctx)
	if lots > 0 {
		w.logger.InfoContext(ctx, "expired lots", "count", lots)
	}
	reservations, rsvErr := w.ledger.ExpireReservations(ctx)
	if reservations > 0 {
		w.logger.InfoContext(ctx, "expired reservations", "count", reservations)
	}
	noticed, noticeErr := w.ledger.NoticeExpiringLots(ctx, w.notice)
	if noticed > 0 {
		w.logger.InfoContext(ctx, "told of lots about to expire", "count", noticed)
	}
	if err := errors.Join(lotsErr, rsvErr, noticeErr); err != nil {
		return fmt.Errorf("jobs: expiry sweep: %w", err)
	}
	return nil
}
