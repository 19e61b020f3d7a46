package seed_test

import (
	"context"
	"sync"
	"testing"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/creditplan"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/seed"
	"github.com/tally-billing/tally/internal/testdb"
)

// TestDemoPlans: the demo plans are written once however many servers seed
// at the same time, with their rules; a plan an admin changed since stays
// as it is.
func TestDemoPlans(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		other := testdb.Open(t, db.URL)
		var wg sync.WaitGroup
		errs := make(chan error, 6)
		for i := range 6 {
			c := db.Ent
			if i%2 == 1 {
				c = other.Ent
			}
			wg.Go(func() {
				_, err := seed.DemoPlans(ctx, c)
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		plans := db.Ent.CreditPlan.Query().Order(ent.Asc(creditplan.FieldSortOrder)).AllX(ctx)
		if len(plans) != 2 {
			t.Fatalf("%d plans after seeding 6 times, want 2", len(plans))
		}
		starter, pro := plans[0], plans[1]
		if starter.Name != "Starter monthly" || starter.CreditsPerPeriod != 1000 || starter.PriceAmount != 900 ||
			starter.Currency != "usd" || starter.Interval != creditplan.IntervalMonth ||
			starter.Rollover != creditplan.RolloverCapped || starter.RolloverCap == nil || *starter.RolloverCap != 500 || !starter.Active {
			t.Fatalf("Starter monthly: %+v", starter)
		}
		if pro.Name != "Pro yearly" || pro.CreditsPerPeriod != 15000 || pro.Interval != creditplan.IntervalYear ||
			pro.Rollover != creditplan.RolloverAll || pro.RolloverCap != nil || !pro.Active {
			t.Fatalf("Pro yearly: %+v", pro)
		}

		db.Ent.CreditPlan.UpdateOne(pro).SetActive(false).SetPriceAmount(9900).ExecX(ctx)
		if _, err := seed.DemoPlans(ctx, db.Ent); err != nil {
			t.Fatal(err)
		}
		if got := db.Ent.CreditPlan.GetX(ctx, pro.ID); got.Active || got.PriceAmount != 9900 || db.Ent.CreditPlan.Query().CountX(ctx) != 2 {
			t.Fatalf("a plan an admin changed was seeded again: %+v", got)
		}
	})
}
