// Package seed writes the demo data of the embedded development setup.
package seed

import (
	"context"
	"fmt"

	"entgo.io/ent/dialect/sql"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/creditpackage"
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
