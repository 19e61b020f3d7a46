package admin

import (
	"context"
	"fmt"

	"github.com/tally-billing/tally/ent"
)

// ActionSetAutoRecharge audits an admin's change of a user's auto-recharge.
const ActionSetAutoRecharge = "set_auto_recharge"

// AutoRechargeAudit writes the audit record of an admin's change of a
// user's auto-recharge, in the transaction that changes it (see
// payments.SetAutoRecharge).
func (a Admin) AutoRechargeAudit(ctx context.Context, tx *ent.Tx, userID string, s *ent.AutoRecharge) error {
	state := "off"
	if s.Enabled {
		state = "on"
	}
	pkg := "none"
	if s.PackageID != nil {
		pkg = *s.PackageID
	}
	threshold := s.ThresholdCredits
	_, err := a.write(ctx, tx, record{
		action: ActionSetAutoRecharge, targetID: s.ID, targetUserID: &userID, amount: &threshold,
		reason: fmt.Sprintf("auto-recharge %s below %d credits with pack %s, at most %d a month",
			state, s.ThresholdCredits, pkg, s.MonthlyLimitAmount),
	})
	return err
}
