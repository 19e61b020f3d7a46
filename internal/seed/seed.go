// Package seed writes the demo data of the embedded development setup.
package seed

import (
	"context"
	"fmt"

	"entgo.io/ent/dialect/sql"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/creditpackage"
	"github.com/tally-billing/tally/ent/creditplan"
)

// demoPackages are the packs a fresh development server offers.
var demoPackages = []struct {
	name        string
	description string
	credits     int64
	price       int64
}{
	{"Starter", "100 credits to try things out", 100, 500},
	{"Standard", "1,000 credits", 1000, 4000},
	{"Pro", "10,000 credits at the best price", 10000, 30000},
}

// DemoPackages writes the demo credit packs unless packs with their names
// exist already: a pack an admin changed or deactivated stays as it is, and
// servers starting at once cannot write a pack twice.
func DemoPackages(ctx context.Context, client *ent.Client) (int, error) {
	builders := make([]*ent.CreditPackageCreate, len(demoPackages))
	for i, p := range demoPackages {
		builders[i] = client.CreditPackage.Create().
			SetName(p.name).
			SetDescription(p.description).
			SetCredits(p.credits).
			SetPriceAmount(p.price).
			SetCurrency("usd").
			SetSortOrder(i)
	}
	err := client.CreditPackage.CreateBulk(builders...).
		OnConflict(sql.ConflictColumns(creditpackage.FieldName)).
		DoNothing().
		Exec(ctx)
	if err != nil {
		return 0, fmt.Errorf("seeding demo credit packs: %w", err)
	}
	return len(demoPackages), nil
}

// demoPlans are the subscription plans a fresh development server offers:
// one of each interval, and two of the rollover rules.
var demoPlans = []struct {
	name, description string
	credits, price    int64
	interval          creditplan.Interval
	rollover          creditplan.Rollover
	rolloverCap       int64
}{
	{"Starter monthly", "1,000 credits a month; up to 500 unspent carry over", 1000, 900,
		creditplan.IntervalMonth, creditplan.RolloverCapped, 500},
	{"Pro yearly", "15,000 credits a year; every unspent credit carries over", 15000, 14400,
		creditplan.IntervalYear, creditplan.RolloverAll, 0},
}

// DemoPlans writes the demo subscription plans unless plans with their
// names exist already, as DemoPackages does for packs. They have no Stripe
// price: a Checkout makes one from the plan.
func DemoPlans(ctx context.Context, client *ent.Client) (int, error) {
	builders := make([]*ent.CreditPlanCreate, len(demoPlans))
	for i, p := range demoPlans {
		builders[i] = client.CreditPlan.Create().
			SetName(p.name).
			SetDescription(p.description).
			SetCreditsPerPeriod(p.credits).
			SetPriceAmount(p.price).
			SetCurrency("usd").
			SetInterval(p.interval).
			SetRollover(p.rollover).
			SetSortOrder(i)
		if p.rolloverCap > 0 {
			builders[i].SetRolloverCap(p.rolloverCap)
		}
	}
	err := client.CreditPlan.CreateBulk(builders...).
		OnConflict(sql.ConflictColumns(creditplan.FieldName)).
		DoNothing().
		Exec(ctx)
	if err != nil {
		return 0, fmt.Errorf("seeding demo credit plans: %w", err)
	}
	return len(demoPlans), nil
}
