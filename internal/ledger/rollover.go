package ledger

import (
	"context"
	"fmt"
	"time"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/creditledger"
	"github.com/tally-billing/tally/ent/creditlot"
	"github.com/tally-billing/tally/ent/credittransaction"
	"github.com/tally-billing/tally/internal/pulid"
)

// Rollover rules of a plan: what of a period's unspent credits the next
// paid period keeps.
const (
	RolloverNone   = "NONE"
	RolloverCapped = "CAPPED"
	RolloverAll    = "ALL"
)

// PeriodEnd closes a subscription period at its renewal.
type PeriodEnd struct {
	UserID string
	// LotIDs are the lots of the period that ended: its paid invoices'
	// and the credits rolled into it.
	LotIDs []string
	// Rule and Cap are the plan's rollover rule (Cap for CAPPED).
	Rule string
	Cap  int64
	// NextExpiresAt is the end of the new period: credits rolled over
	// expire with it.
	NextExpiresAt time.Time
	// PaymentID is the renewal's payment, which the rollovers into its
	// period name.
	PaymentID string
	// IdempotencyKey names the period that ended; each rollover into the
	// new period adds to it what has come to expire since the last
	// ("<key>:<credits rolled over before>"), once.
	IdempotencyKey string
}

// EndPeriod closes a subscription's period for its renewal, under the
// user's lock: what the period's lots still hold expires now (the expiry
// sweep may have done it already, or does nothing after this), and the part
// of what expired that the plan's rule keeps comes back as a lot expiring
// with the new period (a ROLLOVER transaction from system:expired). The
// amount is read from the expiry postings of those lots, so it is the same
// whichever of the sweep and the renewal ran first. A period may be closed
// again when more of it comes to expire (a change of plan paid within it
// and delivered late, credits a won dispute returns): what the rule keeps
// of the new total, less what was rolled over already, rolls over then.
// It returns the credits rolled over by this call.
func (t *Tx) EndPeriod(ctx context.Context, actor Actor, req PeriodEnd) (int64, error) {
	if len(req.LotIDs) == 0 {
		return 0, nil
	}
	u, err := t.lockUser(ctx, req.UserID)
	if err != nil {
		return 0, err
	}
	lots, err := t.ent.CreditLot.Query().
		Where(creditlot.IDIn(req.LotIDs...), creditlot.UserID(req.UserID)).
		Order(creditlot.ByID()).
		All(ctx)
	if err != nil {
		return 0, fmt.Errorf("ledger: reading the lots of an ended period: %w", err)
	}
	for _, lot := range lots {
		if lot.Remaining > 0 {
			if err := t.expireRest(ctx, u, lot, "lot "+lot.ID+" expired: its period ended"); err != nil {
				return 0, err
			}
		}
	}
	expired, err := t.expiredFrom(ctx, req.LotIDs)
	if err != nil {
		return 0, err
	}
	keep := int64(0)
	switch req.Rule {
	case RolloverAll:
		keep = expired
	case RolloverCapped:
		keep = min(expired, req.Cap)
	}
	already, err := t.rolledInto(ctx, req.UserID, req.PaymentID)
	if err != nil {
		return 0, err
	}
	if keep <= already {
		return 0, nil
	}
	key := fmt.Sprintf("%s:%d", req.IdempotencyKey, already)
	fingerprint := struct {
		UserID, PaymentID string
		Amount            int64
	}{req.UserID, req.PaymentID, keep - already}
	res, err := t.once(ctx, actor, key, "rollover", fingerprint, req.UserID, lookupFirst, func(u *ent.User) (*Result, error) {
		return t.rollover(ctx, actor, req, key, u, keep-already)
	})
	if err != nil {
		return 0, err
	}
	return res.Amount, nil
}

// rolledInto sums what was rolled over into the period of a payment.
func (t *Tx) rolledInto(ctx context.Context, userID, paymentID string) (int64, error) {
	var sums []struct {
		Sum int64 `json:"sum"`
	}
	err := t.ent.CreditTransaction.Query().
		Where(credittransaction.PaymentID(paymentID), credittransaction.UserID(userID),
			credittransaction.KindEQ(credittransaction.KindRollover)).
		Aggregate(ent.Sum(credittransaction.FieldAmount)).
		Scan(ctx, &sums)
	if err != nil {
		return 0, fmt.Errorf("ledger: summing the rollovers into payment %s: %w", paymentID, err)
	}
	if len(sums) == 0 {
		return 0, nil
	}
	return sums[0].Sum, nil
}

// expiredFrom sums what expired from the lots.
func (t *Tx) expiredFrom(ctx context.Context, lotIDs []string) (int64, error) {
	var sums []struct {
		Sum int64 `json:"sum"`
	}
	err := t.ent.CreditLedger.Query().
		// Positive: into system:expired. (A rollover lot's own posting
		// out of it is negative, and is not an expiry.)
		Where(creditledger.LotIDIn(lotIDs...), creditledger.Account(AccountExpired), creditledger.AmountGT(0)).
		Aggregate(ent.Sum(creditledger.FieldAmount)).
		Scan(ctx, &sums)
	if err != nil {
		return 0, fmt.Errorf("ledger: summing the expiries of an ended period: %w", err)
	}
	if len(sums) == 0 {
		return 0, nil
	}
	return sums[0].Sum, nil
}

// rollover writes the ROLLOVER transaction and its lot.
func (t *Tx) rollover(ctx context.Context, actor Actor, req PeriodEnd, key string, u *ent.User, keep int64) (*Result, error) {
	m := newMovement(credittransaction.KindRollover, keep)
	m.reason = "unspent credits of the period rolled over"
	m.paymentID = &req.PaymentID
	lotID := pulid.New("lot")
	m.post(AccountExpired, false, &lotID, -keep)
	kept, err := credit(u, m, lotID, keep)
	if err != nil {
		return nil, err
	}
	expires := req.NextExpiresAt.UTC()
	m.lot = &ent.CreditLot{
		ID:            lotID,
		UserID:        u.ID,
		Source:        creditlot.SourceGrant,
		Original:      keep,
		Remaining:     kept,
		ExpiresAt:     &expires,
		TransactionID: m.id,
		CreatedAt:     t.now,
		UpdatedAt:     t.now,
	}
	txn, err := t.write(ctx, actor, key, u, m)
	if err != nil {
		return nil, err
	}
	return &Result{Transaction: txn, Amount: keep}, nil
}
