package main

import (
	"context"
	"fmt"
	"math"

	"github.com/tally-billing/tally/ent/autorecharge"
	"github.com/tally-billing/tally/ent/user"
)

// --crossing-share F gives that share of the accounts thresholds at their
// seeded balance, so that each of them crosses at its first spend; the
// others keep the thresholds given, which a run does not reach. A
// product's accounts cross once per refill: this is the mix between the
// run where none crosses and the one where every account's first spend
// does (seed), which with W2's 10,000 accounts is nearly every spend.

// crossAtFirstSpend gives every (1/share)-th account thresholds at
// credits, its seeded balance, in bulk.
func (e *env) crossAtFirstSpend(ctx context.Context, ids []string, credits int64) error {
	if e.o.crossingShare <= 0 || (e.o.lowBalance <= 0 && e.o.autoRecharge <= 0) {
		return nil
	}
	step := max(1, int(math.Round(1/e.o.crossingShare)))
	var crossing []string
	for i := 0; i < len(ids); i += step {
		crossing = append(crossing, ids[i])
	}
	for lo := 0; lo < len(crossing); lo += 1000 {
		chunk := crossing[lo:min(lo+1000, len(crossing))]
		if e.o.lowBalance > 0 {
			if err := e.db.Ent.User.Update().Where(user.IDIn(chunk...)).SetLowBalanceThreshold(credits).Exec(ctx); err != nil {
				return fmt.Errorf("setting the crossing accounts' thresholds: %w", err)
			}
		}
		if e.o.autoRecharge > 0 {
			if err := e.db.Ent.User.Update().Where(user.IDIn(chunk...)).SetRechargeBelow(credits).Exec(ctx); err != nil {
				return fmt.Errorf("setting the crossing accounts' recharges: %w", err)
			}
			if err := e.db.Ent.AutoRecharge.Update().Where(autorecharge.UserIDIn(chunk...)).SetThresholdCredits(credits).Exec(ctx); err != nil {
				return fmt.Errorf("setting the crossing accounts' recharges: %w", err)
			}
		}
	}
	return nil
}
