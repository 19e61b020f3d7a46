package main

import (
	"context"
	"fmt"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/user"
)

// --auto-recharge turns auto-recharge on for every seeded account, with a
// saved card, so that W1 and W2 measure what it costs a spend: the read of
// the available credits each movement compares with the threshold, and,
// once a spend has crossed it, the recharge written with that spend and
// the read of the settings by every spend while it is in flight. The
// server has no Stripe key, so a recharge stays in flight (waiting for its
// events): the costliest steady state, and no Stripe in the measurement.

// rechargeLimit is a monthly limit no run reaches.
const rechargeLimit = 1 << 50

// enableAutoRecharge writes the settings of the accounts (and the column
// the ledger reads from the user's row), in bulk, as setAutoRecharge
// would leave them.
func (e *env) enableAutoRecharge(ctx context.Context, ids []string) error {
	if e.o.autoRecharge <= 0 {
		return nil
	}
	pack, err := e.rechargePack(ctx)
	if err != nil {
		return err
	}
	for lo := 0; lo < len(ids); lo += 1000 {
		hi := min(lo+1000, len(ids))
		builders := make([]*ent.AutoRechargeCreate, 0, hi-lo)
		for _, id := range ids[lo:hi] {
			builders = append(builders, e.db.Ent.AutoRecharge.Create().SetUserID(id).SetEnabled(true).
				SetThresholdCredits(e.o.autoRecharge).SetPackageID(pack).SetMonthlyLimitAmount(rechargeLimit).
				SetStripeCustomerID("cus_bench_"+id).SetStripePaymentMethodID("pm_card_visa").
				SetCardBrand("visa").SetCardLast4("4242").SetCardExpMonth(12).SetCardExpYear(2040))
		}
		if err := e.db.Ent.AutoRecharge.CreateBulk(builders...).Exec(ctx); err != nil {
			return fmt.Errorf("turning auto-recharge on: %w", err)
		}
		if err := e.db.Ent.User.Update().Where(user.IDIn(ids[lo:hi]...)).SetRechargeBelow(e.o.autoRecharge).Exec(ctx); err != nil {
			return fmt.Errorf("turning auto-recharge on: %w", err)
		}
	}
	return nil
}

// rechargePack is the pack recharges buy (W4's, made if it is not yet).
func (e *env) rechargePack(ctx context.Context) (string, error) {
	if e.packID == "" {
		pkg, err := e.db.Ent.CreditPackage.Create().SetName("tallybench pack").
			SetCredits(packCredits).SetPriceAmount(packPrice).SetCurrency(packCurr).Save(ctx)
		if err != nil {
			return "", fmt.Errorf("creating the credit pack: %w", err)
		}
		e.packID = pkg.ID
	}
	return e.packID, nil
}
