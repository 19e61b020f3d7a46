package jobs

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/ledgercheck"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/testdb"
)

// TestFullCheckAttemptsCountFailuresOnly: an attempt cut by its deadline
// after recording progress snoozes (the next goes on from there without
// using an attempt up); the last attempt cut before any progress marks the
// run FAILED.
func TestFullCheckAttemptsCountFailuresOnly(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		users := make([]*ent.UserCreate, 2000)
		for i := range users {
			users[i] = db.Ent.User.Create().SetExternalID(fmt.Sprintf("user-%d", i))
		}
		db.Ent.User.CreateBulk(users...).ExecX(ctx)
		// One user a round, progress recorded after each: the walk takes
		// seconds, and a deadline cuts it part-way.
		l := ledger.New(db, ledger.WithCheckChunkSize(1), ledger.WithCheckProgressEvery(0))
		w := &fullCheckWorker{ledger: l}
		job := func(attempt int, run *ent.LedgerCheck) *river.Job[FullCheckArgs] {
			return &river.Job[FullCheckArgs]{JobRow: &rivertype.JobRow{Attempt: attempt, MaxAttempts: checkAttempts}, Args: FullCheckArgs{CheckID: run.ID}}
		}

		run := db.Ent.LedgerCheck.Create().SetKind(ledgercheck.KindFULL).SetLive("FULL").SaveX(ctx)
		cut, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		err := w.Work(cut, job(checkAttempts, run))
		cancel()
		var snooze *river.JobSnoozeError
		if !errors.As(err, &snooze) {
			t.Fatalf("an attempt cut after progress: %v, want a snooze", err)
		}
		if got := db.Ent.LedgerCheck.GetX(ctx, run.ID); got.Status != ledgercheck.StatusRUNNING || got.Checked == 0 {
			t.Fatalf("after the cut: %+v", got)
		}

		db.Ent.LedgerCheck.UpdateOneID(run.ID).SetStatus(ledgercheck.StatusFAILED).ClearLive().ExecX(ctx)
		stuck := db.Ent.LedgerCheck.Create().SetKind(ledgercheck.KindFULL).SetLive("FULL").SaveX(ctx)
		gone, cancel := context.WithCancel(ctx)
		cancel()
		if err := w.Work(gone, job(checkAttempts, stuck)); err == nil || errors.As(err, &snooze) {
			t.Fatalf("a last attempt that got nowhere: %v, want its error", err)
		}
		if got := db.Ent.LedgerCheck.GetX(ctx, stuck.ID); got.Status != ledgercheck.StatusFAILED || got.Live != nil || got.Error == "" {
			t.Fatalf("after the last attempt: %+v", got)
		}
	})
}
