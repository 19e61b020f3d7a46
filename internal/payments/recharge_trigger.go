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
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
)

// JobInserter inserts jobs in a transaction (jobs.Inserter).
type JobInserter interface {
	InsertTx(ctx context.Context, tx *sql.Tx, args river.JobArgs) (bool, error)
	InsertManyTx(ctx context.Context, tx *sql.Tx, params []river.InsertManyParams) error
}

// Recharger starts recharges in the transactions whose movements leave a
// user below their auto-recharge threshold (ledger.WithRecharges): the
// RECHARGE payment and the job that charges it commit with the movement,
// or neither does.
type Recharger struct {
	db       *database.DB
	jobs     JobInserter
	livemode bool
}

// NewRecharger returns the trigger of recharges in the given Stripe mode.
func NewRecharger(db *database.DB, jobs JobInserter, livemode bool) *Recharger {
	return &Recharger{db: db, jobs: jobs, livemode: livemode}
}

// TriggerRecharges starts, for each user, a recharge if none is in flight,
// the wait after a decline is over and the month's limit allows the pack.
// It runs under the users' locks; the unique recharge slot of payments
// stops a second one in flight even if that lock were missed. The users of
// a batch of movements (coalesced spends) share its statements: the
// settings (one read, all that is made while a recharge is on its way),
// then, for those that start one, the month's charges, the payments, the
// in-flight marks and the jobs, one statement each.
func (r *Recharger) TriggerRecharges(ctx context.Context, t *ledger.Tx, needs []ledger.RechargeNeed) error {
	c := t.Ent().Client()
	ids := make([]string, len(needs))
	for i, n := range needs {
		ids[i] = n.User.ID
	}
	settings, err := c.AutoRecharge.Query().
		Where(autorecharge.UserIDIn(ids...), autorecharge.InFlightPaymentIDIsNil(),
			autorecharge.Or(autorecharge.RetryAfterIsNil(), autorecharge.RetryAfterLTE(t.Now()))).
		WithPackage().
		Order(ent.Asc(autorecharge.FieldUserID)).
		All(ctx)
	if err != nil {
		return fmt.Errorf("payments: reading the auto-recharge of %d users: %w", len(ids), err)
	}
	var due []*ent.AutoRecharge
	for _, a := range settings {
		switch pkg := a.Edges.Package; {
		case !canCharge(a) || pkg == nil:
		case !pkg.Active:
			if err := noteProblem(ctx, a, "the recharge pack is no longer on sale"); err != nil {
				return err
			}
		default:
			due = append(due, a)
		}
	}
	if len(due) == 0 {
		return nil
	}
	return r.start(ctx, t, due)
}

// start writes the recharges of the users due one, within their limits.
func (r *Recharger) start(ctx context.Context, t *ledger.Tx, due []*ent.AutoRecharge) error {
	c := t.Ent().Client()
	users := make([]string, len(due))
	for i, a := range due {
		users[i] = a.UserID
	}
	charged, err := chargedThisMonthMany(ctx, c, users, t.Now())
	if err != nil {
		return err
	}
	var starting []*ent.AutoRecharge
	var creates []*ent.PaymentCreate
	for _, a := range due {
		pkg := a.Edges.Package
		if spent := charged[a.UserID][pkg.Currency]; spent+pkg.PriceAmount > a.MonthlyLimitAmount {
			if err := noteProblem(ctx, a, fmt.Sprintf("the monthly limit %d would be exceeded (%d charged this month)", a.MonthlyLimitAmount, spent)); err != nil {
				return err
			}
			continue
		}
		starting = append(starting, a)
		creates = append(creates, c.Payment.Create().
			SetUserID(a.UserID).SetKind(payment.KindRECHARGE).SetPackageID(pkg.ID).
			SetAmount(pkg.PriceAmount).SetCurrency(pkg.Currency).SetCredits(pkg.Credits).
			SetStatus(payment.StatusPending).SetLivemode(r.livemode).
			SetRechargeSlot(a.UserID))
	}
	if len(starting) == 0 {
		return nil
	}
	ps, err := c.Payment.CreateBulk(creates...).Save(ctx)
	if err != nil {
		return fmt.Errorf("payments: writing %d recharge payments: %w", len(creates), err)
	}
	marks := make(map[string]any, len(ps))
	ids := make([]string, len(ps))
	jobs := make([]river.InsertManyParams, len(ps))
	for i, p := range ps {
		marks[starting[i].ID], ids[i] = p.ID, starting[i].ID
		jobs[i] = river.InsertManyParams{Args: RechargeArgs{PaymentID: p.ID,
			Customer: starting[i].StripeCustomerID, PaymentMethod: starting[i].StripePaymentMethodID}}
	}
	err = database.UpdateRows(autorecharge.Table, ids).SetEach(autorecharge.FieldInFlightPaymentID, "", marks).Exec(ctx, r.db, t.Ent())
	if err != nil {
		return fmt.Errorf("payments: recording %d recharges in flight: %w", len(ps), err)
	}
	if err := r.jobs.InsertManyTx(ctx, t.SQL(), jobs); err != nil {
		return fmt.Errorf("payments: queueing %d recharges: %w", len(jobs), err)
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
// (UTC) charged or may still charge in currency: all but the failed ones.
func chargedThisMonth(ctx context.Context, c *ent.Client, userID, currency string, now time.Time) (int64, error) {
	sums, err := chargedThisMonthMany(ctx, c, []string{userID}, now)
	return sums[userID][currency], err
}

// chargedThisMonthMany is chargedThisMonth of several users, by user and
// currency (a limit is in its pack's currency; amounts of another cannot
// be added to it), in one statement.
func chargedThisMonthMany(ctx context.Context, c *ent.Client, userIDs []string, now time.Time) (map[string]map[string]int64, error) {
	var rows []struct {
		UserID   string        `json:"user_id"`
		Currency string        `json:"currency"`
		Sum      sql.NullInt64 `json:"sum"`
	}
	err := c.Payment.Query().
		Where(payment.UserIDIn(userIDs...), payment.CreatedAtGTE(monthStart(now)), payment.KindEQ(payment.KindRECHARGE),
			payment.StatusNotIn(payment.StatusFailed, payment.StatusExpired)).
		GroupBy(payment.FieldUserID, payment.FieldCurrency).
		Aggregate(ent.As(ent.Sum(payment.FieldAmount), "sum")).
		Scan(ctx, &rows)
	if err != nil {
		return nil, fmt.Errorf("payments: summing this month's recharges of %d users: %w", len(userIDs), err)
	}
	sums := make(map[string]map[string]int64, len(rows))
	for _, row := range rows {
		if sums[row.UserID] == nil {
			sums[row.UserID] = map[string]int64{}
		}
		sums[row.UserID][row.Currency] = row.Sum.Int64
	}
	return sums, nil
}
