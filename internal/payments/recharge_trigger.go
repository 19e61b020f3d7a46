package payments

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/riverqueue/river"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/autorecharge"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/internal/ledger"
)

// JobInserter inserts jobs in a transaction (jobs.Inserter).
type JobInserter interface {
	InsertTx(ctx context.Context, tx *sql.Tx, args river.JobArgs) (bool, error)
}

// Recharger starts recharges in the transactions whose movements leave a
// user below their auto-recharge threshold (ledger.WithRecharges): the
// RECHARGE payment and the job that charges it commit with the movement,
// or neither does.
type Recharger struct {
	jobs     JobInserter
	livemode bool
}

// NewRecharger returns the trigger of recharges in the given Stripe mode.
func NewRecharger(jobs JobInserter, livemode bool) *Recharger {
	return &Recharger{jobs: jobs, livemode: livemode}
}

// TriggerRecharges starts, for each user, a recharge if none is in flight,
// the wait after a decline is over and the month's limit allows the pack.
// One read of the settings when nothing starts (a recharge already on its
// way, most often). Runs under the users' locks; the unique recharge slot
// of payments stops a second one in flight even if that lock were missed.
func (r *Recharger) TriggerRecharges(ctx context.Context, t *ledger.Tx, needs []ledger.RechargeNeed) error {
	for _, n := range needs {
		if err := r.trigger(ctx, t, n.User); err != nil {
			return err
		}
	}
	return nil
}

func (r *Recharger) trigger(ctx context.Context, t *ledger.Tx, u *ent.User) error {
	c := t.Ent().Client()
	a, err := c.AutoRecharge.Query().
		Where(autorecharge.UserID(u.ID), autorecharge.InFlightPaymentIDIsNil(),
			autorecharge.Or(autorecharge.RetryAfterIsNil(), autorecharge.RetryAfterLTE(t.Now()))).
		WithPackage().
		Only(ctx)
	if ent.IsNotFound(err) {
		return nil // in flight, waiting after a decline, or off
	}
	if err != nil {
		return fmt.Errorf("payments: reading the auto-recharge of %s: %w", u.ID, err)
	}
	pkg := a.Edges.Package
	if !canCharge(a) || pkg == nil {
		return nil
	}
	if !pkg.Active {
		return noteProblem(ctx, a, "the recharge pack is no longer on sale")
	}
	charged, err := chargedThisMonth(ctx, c, u.ID, t.Now())
	if err != nil {
		return err
	}
	if charged+pkg.PriceAmount > a.MonthlyLimitAmount {
		return noteProblem(ctx, a, fmt.Sprintf("the monthly limit %d would be exceeded (%d charged this month)", a.MonthlyLimitAmount, charged))
	}
	p, err := c.Payment.Create().
		SetUserID(u.ID).SetKind(payment.KindRECHARGE).SetPackageID(pkg.ID).
		SetAmount(pkg.PriceAmount).SetCurrency(pkg.Currency).SetCredits(pkg.Credits).
		SetStatus(payment.StatusPending).SetLivemode(r.livemode).
		SetRechargeSlot(u.ID).
		Save(ctx)
	if err != nil {
		return fmt.Errorf("payments: writing the recharge payment of %s: %w", u.ID, err)
	}
	if err := a.Update().SetInFlightPaymentID(p.ID).Exec(ctx); err != nil {
		return fmt.Errorf("payments: recording the recharge in flight of %s: %w", u.ID, err)
	}
	if _, err := r.jobs.InsertTx(ctx, t.SQL(), RechargeArgs{PaymentID: p.ID}); err != nil {
		return fmt.Errorf("payments: queueing recharge %s: %w", p.ID, err)
	}
	return nil
}

// noteProblem says, on the settings, why a needed recharge did not start,
// writing only when that is news (a movement below the threshold meets it
// again and again).
func noteProblem(ctx context.Context, a *ent.AutoRecharge, problem string) error {
	if a.LastError == problem {
		return nil
	}
	if err := a.Update().SetLastError(problem).Exec(ctx); err != nil {
		return fmt.Errorf("payments: noting why no recharge started for %s: %w", a.UserID, err)
	}
	return nil
}

// chargedThisMonth is what the user's recharges of this calendar month
// (UTC) charged or may still charge: all but the failed ones.
func chargedThisMonth(ctx context.Context, c *ent.Client, userID string, now time.Time) (int64, error) {
	var rows []struct {
		Sum sql.NullInt64 `json:"sum"`
	}
	err := c.Payment.Query().
		Where(payment.UserID(userID), payment.CreatedAtGTE(monthStart(now)), payment.KindEQ(payment.KindRECHARGE),
			payment.StatusNotIn(payment.StatusFailed, payment.StatusExpired)).
		Aggregate(ent.As(ent.Sum(payment.FieldAmount), "sum")).
		Scan(ctx, &rows)
	if err != nil {
		return 0, fmt.Errorf("payments: summing this month's recharges of %s: %w", userID, err)
	}
	if len(rows) == 0 || !rows[0].Sum.Valid {
		return 0, nil
	}
	return rows[0].Sum.Int64, nil
}
