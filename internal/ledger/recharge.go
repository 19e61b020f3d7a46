package ledger

import (
	"context"
	"fmt"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/internal/apperr"
)

// RechargeNeed is a user whose available credits a transaction left below
// their auto-recharge threshold (users.recharge_below).
type RechargeNeed struct {
	User    *ent.User
	Balance Balance
}

// RechargeTrigger starts recharges (package payments) in the transaction
// whose movements left users below their auto-recharge threshold, under
// those users' locks, just before it commits.
type RechargeTrigger interface {
	TriggerRecharges(ctx context.Context, t *Tx, needs []RechargeNeed) error
}

// WithRecharges has the ledger hand r the users its transactions leave
// below their auto-recharge threshold.
func WithRecharges(r RechargeTrigger) Option { return func(s *Service) { s.recharges = r } }

// watchesRecharge says whether the transaction may start a recharge for
// u: not for a frozen account, nor in a transaction that takes credits
// back for a refund or a dispute (charging the card the customer is
// disputing, or was just refunded, again at once is not what they asked
// for, and looks like fraud to their bank).
func (t *Tx) watchesRecharge(u *ent.User) bool {
	return t.s.recharges != nil && u.RechargeBelow != nil && u.Status != user.StatusFrozen && !t.noRecharges[u.ID]
}

// noRecharge keeps the transaction from starting a recharge for the user.
func (t *Tx) noRecharge(userID string) {
	if t.noRecharges == nil {
		t.noRecharges = make(map[string]bool)
	}
	t.noRecharges[userID] = true
}

// triggerRecharges hands the trigger the users now below their threshold.
// Users with auto-recharge off cost nothing here: recharge_below is on the
// row the transaction holds.
func (t *Tx) triggerRecharges(ctx context.Context, ids []string, balances map[string]Balance) error {
	var needs []RechargeNeed
	for _, id := range ids {
		u := t.watched(id)
		if t.watchesRecharge(u) && balances[id].Available < *u.RechargeBelow {
			needs = append(needs, RechargeNeed{User: u, Balance: balances[id]})
		}
	}
	if len(needs) == 0 {
		return nil
	}
	if err := t.s.recharges.TriggerRecharges(ctx, t, needs); err != nil {
		return fmt.Errorf("ledger: starting recharges: %w", err)
	}
	return nil
}

// SetRechargeBelow sets below which available credits a movement of the
// user triggers a recharge (nil: never), under the user's lock, through
// the transaction's copy of the row.
func (t *Tx) SetRechargeBelow(ctx context.Context, userID string, below *int64) error {
	if below != nil && (*below < 0 || *below > MaxAmount) {
		return apperr.Invalid("thresholdCredits", "thresholdCredits must be a whole number from 0 to %d", MaxAmount)
	}
	locked, err := t.lockUser(ctx, userID)
	if err != nil {
		return err
	}
	update := t.ent.User.UpdateOneID(userID)
	if below == nil {
		update.ClearRechargeBelow()
	} else {
		update.SetRechargeBelow(*below)
	}
	if err := update.Exec(ctx); err != nil {
		return fmt.Errorf("ledger: setting the recharge threshold of %s: %w", userID, err)
	}
	locked.RechargeBelow = below
	return nil
}

// LookForRecharge has the transaction look, before it commits, whether u
// is below their auto-recharge threshold although no posting of it
// touched them (auto-recharge just turned on below the threshold). Their
// balance level is not looked at: nothing moved.
func (t *Tx) LookForRecharge(u *ent.User) {
	if t.lookForRecharge == nil {
		t.lookForRecharge = make(map[string]*ent.User)
	}
	t.lookForRecharge[u.ID] = u
}
