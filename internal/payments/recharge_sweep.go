package payments

import (
	"context"
	"fmt"

	"github.com/riverqueue/river"

	"github.com/tally-billing/tally/ent/autorecharge"
	"github.com/tally-billing/tally/internal/jobs"
	"github.com/tally-billing/tally/internal/ledger"
)

// A decline makes auto-recharge wait (retry_after); only a movement looks
// for a need, and a user out of credits after the decline may never move
// again (their spends are refused, and move nothing). The sweep, every
// TALLY_SWEEP_INTERVAL, looks once at each user whose wait is over, as a
// movement would: under their lock, the trigger starts a recharge if they
// are still below the threshold, and the wait is cleared so that the next
// sweep does not look again.

// RechargeSweepArgs is the periodic job that looks at users whose wait
// after a decline is over.
type RechargeSweepArgs struct{}

// Kind names the job in River's table.
func (RechargeSweepArgs) Kind() string { return "recharge_sweep" }

// InsertOpts: one at a time, in the recharges' queue.
func (RechargeSweepArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: RechargeQueue, UniqueOpts: jobs.UniqueWhileLive}
}

type rechargeSweepWorker struct {
	river.WorkerDefaults[RechargeSweepArgs]
	s *Service
}

// sweepBatch is how many users one transaction of the sweep looks at.
const sweepBatch = 100

func (w *rechargeSweepWorker) Work(ctx context.Context, _ *river.Job[RechargeSweepArgs]) error {
	for {
		n, err := w.s.SweepRecharges(ctx)
		if err != nil || n < sweepBatch {
			return err
		}
	}
}

// SweepRecharges looks at up to sweepBatch users whose wait after a
// decline is over, and says how many it looked at.
func (s *Service) SweepRecharges(ctx context.Context) (int, error) {
	due, err := s.db.Ent.AutoRecharge.Query().
		Where(autorecharge.Enabled(true), autorecharge.StatusEQ(autorecharge.StatusFailing),
			autorecharge.InFlightPaymentIDIsNil(), autorecharge.RetryAfterLTE(s.now())).
		Limit(sweepBatch).
		All(ctx)
	if err != nil || len(due) == 0 {
		return 0, err
	}
	err = s.ledger.Within(ctx, func(ctx context.Context, t *ledger.Tx) error {
		ids := make([]string, len(due))
		for i, a := range due {
			ids[i] = a.ID
			u, err := t.LockUser(ctx, a.UserID)
			if err != nil {
				return err
			}
			t.LookForRecharge(u)
		}
		// Cleared before the trigger runs (at the commit), which reads the
		// settings again: a need starts a recharge either way, and a user
		// no longer below the threshold is not looked at again.
		_, err := t.Ent().AutoRecharge.Update().
			Where(autorecharge.IDIn(ids...), autorecharge.RetryAfterLTE(s.now())).
			ClearRetryAfter().Save(ctx)
		if err != nil {
			return fmt.Errorf("payments: clearing the waits of %d users: %w", len(ids), err)
		}
		return nil
	})
	return len(due), err
}
