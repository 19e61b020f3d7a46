package server_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/adminaction"
	"github.com/tally-billing/tally/ent/creditplan"
	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/testdb"
)

const (
	createPlanMutation = `mutation($input: CreateCreditPlanInput!) { createCreditPlan(input: $input) {
		creditPlan { id name description creditsPerPeriod interval priceAmount currency stripePriceId rollover rolloverCap sortOrder active }
		adminAction { action targetId admin { externalId } } } }`
	updatePlanMutation = `mutation($input: UpdateCreditPlanInput!) { updateCreditPlan(input: $input) {
		creditPlan { id name description creditsPerPeriod interval priceAmount currency stripePriceId rollover rolloverCap sortOrder active }
		adminAction { action targetId } } }`
)

// plansDigest is every plan and subscription row as stored, updated_at
// included: a refused change leaves it as it was.
func plansDigest(t *testing.T, db *database.DB) string {
	t.Helper()
	ctx := context.Background()
	var b strings.Builder
	for _, p := range db.Ent.CreditPlan.Query().Order(ent.Asc(creditplan.FieldID)).AllX(ctx) {
		capped := "-"
		if p.RolloverCap != nil {
			capped = fmt.Sprint(*p.RolloverCap)
		}
		fmt.Fprintf(&b, "%s %q %q %d %s %d %s %q %s %s %v %d %v\n", p.ID, p.Name, p.Description, p.CreditsPerPeriod, p.Interval,
			p.PriceAmount, p.Currency, p.StripePriceID, p.Rollover, capped, p.Active, p.SortOrder, p.UpdatedAt)
	}
	for _, s := range db.Ent.CreditSubscription.Query().AllX(ctx) {
		fmt.Fprintf(&b, "%s %s %v %v\n", s.ID, s.Status, s.CancelAtPeriodEnd, s.UpdatedAt)
	}
	return b.String()
}

// refusedPlan is refused, with the plans and subscriptions unchanged too;
// field, when given, is the argument the refusal names.
func (a *api) refusedPlan(tok, query string, vars map[string]any, code, field string) result {
	a.t.Helper()
	before := plansDigest(a.t, a.db)
	r := a.refused(tok, query, vars, code)
	if after := plansDigest(a.t, a.db); after != before {
		a.t.Fatalf("%v was refused (%s) but the plans changed:\n%s\n%s", vars, code, before, after)
	}
	if got, _ := r.Errors[0].Extensions["field"].(string); field != "" && got != field {
		a.t.Fatalf("%v was refused (%s: %s) naming %q, want %q", vars, code, r.Errors[0].Message, got, field)
	}
	return r
}

func auditCount(t *testing.T, db *database.DB, action string) int {
	t.Helper()
	return db.Ent.AdminAction.Query().Where(adminaction.Action(action)).CountX(context.Background())
}

// planInput is a valid plan, with changes.
func planInput(changes map[string]any) map[string]any {
	in := map[string]any{
		"name": "Monthly", "creditsPerPeriod": 1000, "interval": "MONTH", "priceAmount": 900, "currency": "usd",
	}
	for k, v := range changes {
		if v == nil {
			delete(in, k)
			continue
		}
		in[k] = v
	}
	return map[string]any{"input": in}
}

func TestAPICreditPlanCreate(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		admin := token(t, "root", auth.RoleAdmin)
		r := a.ok(admin, createPlanMutation, planInput(map[string]any{
			"name": "Starter monthly", "description": "for small teams", "currency": "EUR", "stripePriceId": "price_123",
			"rollover": "CAPPED", "rolloverCap": 500, "sortOrder": 2,
		}))
		plan := r.get(t, "createCreditPlan", "creditPlan").(map[string]any)
		want := map[string]any{
			"name": "Starter monthly", "description": "for small teams", "creditsPerPeriod": float64(1000), "interval": "MONTH",
			"priceAmount": float64(900), "currency": "eur", "stripePriceId": "price_123", "rollover": "CAPPED",
			"rolloverCap": float64(500), "sortOrder": float64(2), "active": true,
		}
		for k, v := range want {
			if plan[k] != v {
				t.Errorf("created plan's %s = %v, want %v", k, plan[k], v)
			}
		}
		if r.get(t, "createCreditPlan", "adminAction", "action") != "create_plan" ||
			r.get(t, "createCreditPlan", "adminAction", "targetId") != plan["id"] ||
			r.get(t, "createCreditPlan", "adminAction", "admin", "externalId") != "root" {
			t.Fatalf("create's audit: %s", r.Data)
		}
		// The defaults: no rollover, no cap, on sale.
		r = a.ok(admin, createPlanMutation, planInput(map[string]any{"name": "Yearly", "interval": "YEAR"}))
		if p := r.get(t, "createCreditPlan", "creditPlan").(map[string]any); p["rollover"] != "NONE" || p["rolloverCap"] != nil || p["active"] != true {
			t.Fatalf("defaults: %s", r.Data)
		}

		for _, c := range []struct {
			name    string
			changes map[string]any
			code    string
			field   string
		}{
			{"a name taken", map[string]any{"name": "Starter monthly"}, "CONFLICT", ""},
			{"a blank name", map[string]any{"name": "  "}, "INVALID_ARGUMENT", "input.name"},
			{"a long name", map[string]any{"name": strings.Repeat("n", 101)}, "INVALID_ARGUMENT", "input.name"},
			{"a long description", map[string]any{"name": "D", "description": strings.Repeat("d", 1001)}, "INVALID_ARGUMENT", "input.description"},
			{"a long price id", map[string]any{"name": "P", "stripePriceId": strings.Repeat("p", 256)}, "INVALID_ARGUMENT", "input.stripePriceId"},
			{"no credits", map[string]any{"name": "C0", "creditsPerPeriod": 0}, "INVALID_ARGUMENT", "input.creditsPerPeriod"},
			{"negative credits", map[string]any{"name": "C-", "creditsPerPeriod": -5}, "INVALID_ARGUMENT", "input.creditsPerPeriod"},
			{"credits past the ledger's bound", map[string]any{"name": "C+", "creditsPerPeriod": ledger.MaxAmount + 1}, "INVALID_ARGUMENT", "input.creditsPerPeriod"},
			{"free", map[string]any{"name": "P0", "priceAmount": 0}, "INVALID_ARGUMENT", "input.priceAmount"},
			{"a price past the bound", map[string]any{"name": "P+", "priceAmount": ledger.MaxAmount + 1}, "INVALID_ARGUMENT", "input.priceAmount"},
			{"a currency of 4 letters", map[string]any{"name": "E", "currency": "euro"}, "INVALID_ARGUMENT", "input.currency"},
			{"a currency with a digit", map[string]any{"name": "E", "currency": "eu1"}, "INVALID_ARGUMENT", "input.currency"},
			{"CAPPED without a cap", map[string]any{"name": "R", "rollover": "CAPPED"}, "INVALID_ARGUMENT", "input.rolloverCap"},
			{"CAPPED with a cap of 0", map[string]any{"name": "R", "rollover": "CAPPED", "rolloverCap": 0}, "INVALID_ARGUMENT", "input.rolloverCap"},
			{"a cap past the bound", map[string]any{"name": "R", "rollover": "CAPPED", "rolloverCap": ledger.MaxAmount + 1}, "INVALID_ARGUMENT", "input.rolloverCap"},
			{"a cap with ALL", map[string]any{"name": "R", "rollover": "ALL", "rolloverCap": 10}, "INVALID_ARGUMENT", "input.rolloverCap"},
			{"a cap with the default NONE", map[string]any{"name": "R", "rolloverCap": 10}, "INVALID_ARGUMENT", "input.rolloverCap"},
			{"a weekly interval", map[string]any{"name": "W", "interval": "WEEK"}, "GRAPHQL_VALIDATION_FAILED", ""},
			{"an interval in lower case", map[string]any{"name": "W", "interval": "month"}, "GRAPHQL_VALIDATION_FAILED", ""},
			{"an unknown rollover", map[string]any{"name": "W", "rollover": "SOME"}, "GRAPHQL_VALIDATION_FAILED", ""},
			{"no interval", map[string]any{"name": "W", "interval": nil}, "GRAPHQL_VALIDATION_FAILED", ""},
			{"a control character", map[string]any{"name": "Bad\x00"}, "INVALID_ARGUMENT", "input.name"},
		} {
			a.refusedPlan(admin, createPlanMutation, planInput(c.changes), c.code, c.field)
		}
		for tok, code := range map[string]string{
			"": "UNAUTHENTICATED", token(t, "alice", auth.RoleUser): "FORBIDDEN", token(t, "app", auth.RoleService): "FORBIDDEN",
		} {
			a.refusedPlan(tok, createPlanMutation, planInput(map[string]any{"name": "Mine"}), code, "")
		}
		if n := auditCount(t, db, "create_plan"); n != 2 {
			t.Fatalf("%d create_plan records, want one for each of the 2 plans", n)
		}
		if n := db.Ent.CreditPlan.Query().CountX(context.Background()); n != 2 {
			t.Fatalf("%d plans, want 2", n)
		}
	})
}

func TestAPICreditPlanUpdate(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		admin := token(t, "root", auth.RoleAdmin)
		r := a.ok(admin, createPlanMutation, planInput(map[string]any{"name": "Capped", "rollover": "CAPPED", "rolloverCap": 500}))
		id := r.get(t, "createCreditPlan", "creditPlan", "id").(string)
		a.ok(admin, createPlanMutation, planInput(map[string]any{"name": "Other"}))
		update := func(changes map[string]any) map[string]any {
			in := map[string]any{"id": id}
			for k, v := range changes {
				in[k] = v
			}
			return map[string]any{"input": in}
		}
		updates := 0

		// Fields left out keep their value; the currency is lowered.
		r = a.ok(admin, updatePlanMutation, update(map[string]any{"priceAmount": 1200, "currency": "GBP", "description": "new terms"}))
		updates++
		plan := r.get(t, "updateCreditPlan", "creditPlan").(map[string]any)
		for k, v := range map[string]any{
			"name": "Capped", "creditsPerPeriod": float64(1000), "interval": "MONTH", "priceAmount": float64(1200),
			"currency": "gbp", "description": "new terms", "rollover": "CAPPED", "rolloverCap": float64(500), "active": true,
		} {
			if plan[k] != v {
				t.Errorf("updated plan's %s = %v, want %v", k, plan[k], v)
			}
		}
		if r.get(t, "updateCreditPlan", "adminAction", "action") != "update_plan" || r.get(t, "updateCreditPlan", "adminAction", "targetId") != id {
			t.Fatalf("update's audit: %s", r.Data)
		}
		// A cap alone changes the cap.
		r = a.ok(admin, updatePlanMutation, update(map[string]any{"rolloverCap": 300}))
		updates++
		if r.get(t, "updateCreditPlan", "creditPlan", "rolloverCap") != float64(300) {
			t.Fatalf("the cap: %s", r.Data)
		}

		// The rollover rule holds for the plan as the change leaves it.
		for _, c := range []struct {
			name    string
			changes map[string]any
			code    string
			field   string
		}{
			{"NONE keeping the cap", map[string]any{"rollover": "NONE"}, "INVALID_ARGUMENT", "input.rolloverCap"},
			{"ALL keeping the cap", map[string]any{"rollover": "ALL"}, "INVALID_ARGUMENT", "input.rolloverCap"},
			{"CAPPED without its cap", map[string]any{"rolloverCap": nil}, "INVALID_ARGUMENT", "input.rolloverCap"},
			{"a cap of 0", map[string]any{"rolloverCap": 0}, "INVALID_ARGUMENT", "input.rolloverCap"},
			{"no credits", map[string]any{"creditsPerPeriod": 0}, "INVALID_ARGUMENT", "input.creditsPerPeriod"},
			{"free", map[string]any{"priceAmount": -1}, "INVALID_ARGUMENT", "input.priceAmount"},
			{"a bad currency", map[string]any{"currency": "us"}, "INVALID_ARGUMENT", "input.currency"},
			{"a blank name", map[string]any{"name": ""}, "INVALID_ARGUMENT", "input.name"},
			{"another plan's name", map[string]any{"name": "Other"}, "CONFLICT", ""},
			{"a long price id", map[string]any{"stripePriceId": strings.Repeat("p", 256)}, "INVALID_ARGUMENT", "input.stripePriceId"},
			{"a weekly interval", map[string]any{"interval": "WEEK"}, "GRAPHQL_VALIDATION_FAILED", ""},
		} {
			a.refusedPlan(admin, updatePlanMutation, update(c.changes), c.code, c.field)
		}
		a.refusedPlan(admin, updatePlanMutation, map[string]any{"input": map[string]any{"id": "pln_01jd6m3v9q8x0n2k4t7w5y1zbc", "active": false}}, "NOT_FOUND", "")
		for tok, code := range map[string]string{
			"": "UNAUTHENTICATED", token(t, "alice", auth.RoleUser): "FORBIDDEN", token(t, "app", auth.RoleService): "FORBIDDEN",
		} {
			a.refusedPlan(tok, updatePlanMutation, update(map[string]any{"active": false}), code, "")
		}

		// Out of CAPPED, with the cap cleared in the same change; into it
		// again, with a cap.
		r = a.ok(admin, updatePlanMutation, update(map[string]any{"rollover": "ALL", "rolloverCap": nil}))
		updates++
		if r.get(t, "updateCreditPlan", "creditPlan", "rollover") != "ALL" || r.get(t, "updateCreditPlan", "creditPlan", "rolloverCap") != nil {
			t.Fatalf("to ALL: %s", r.Data)
		}
		a.refusedPlan(admin, updatePlanMutation, update(map[string]any{"rolloverCap": 100}), "INVALID_ARGUMENT", "input.rolloverCap")
		a.refusedPlan(admin, updatePlanMutation, update(map[string]any{"rollover": "CAPPED"}), "INVALID_ARGUMENT", "input.rolloverCap")
		r = a.ok(admin, updatePlanMutation, update(map[string]any{"rollover": "CAPPED", "rolloverCap": 100, "interval": "YEAR"}))
		updates++
		if r.get(t, "updateCreditPlan", "creditPlan", "rolloverCap") != float64(100) || r.get(t, "updateCreditPlan", "creditPlan", "interval") != "YEAR" {
			t.Fatalf("to CAPPED: %s", r.Data)
		}

		// Two changes, each valid alone, racing: one leaves CAPPED (clearing
		// the cap), the other sets a cap. Whichever runs second sees the
		// other's plan: the plan never ends up NONE with a cap.
		for i := range 5 {
			a.ok(admin, updatePlanMutation, update(map[string]any{"rollover": "CAPPED", "rolloverCap": 100}))
			updates++
			var wg sync.WaitGroup
			codes := make([]string, 2)
			for j, changes := range []map[string]any{{"rollover": "NONE", "rolloverCap": nil}, {"rolloverCap": 200 + i}} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					codes[j] = a.gql(admin, updatePlanMutation, update(changes)).code()
				}()
			}
			wg.Wait()
			p := db.Ent.CreditPlan.GetX(context.Background(), id)
			if (p.Rollover == creditplan.RolloverCapped) != (p.RolloverCap != nil) || codes[0] != "" || (codes[1] != "" && codes[1] != "INVALID_ARGUMENT") {
				t.Fatalf("after racing changes (answered %q): rollover %s, cap %v", codes, p.Rollover, p.RolloverCap)
			}
			for _, code := range codes {
				if code == "" {
					updates++
				}
			}
		}

		// Off sale: no longer listed.
		a.ok(admin, updatePlanMutation, update(map[string]any{"active": false}))
		updates++
		r = a.ok("", `{ creditPlans { id } }`, nil)
		for _, p := range r.get(t, "creditPlans").([]any) {
			if p.(map[string]any)["id"] == id {
				t.Fatal("a plan off sale is still listed")
			}
		}
		if n := auditCount(t, db, "update_plan"); n != updates {
			t.Fatalf("%d update_plan records, want %d", n, updates)
		}
	})
}

// TestAPICreditPlansArePublic: the plans on sale, in shop order, to anyone;
// a plan is a node anyone may read.
func TestAPICreditPlansArePublic(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		a := newAPI(t, db, nil)
		mk := func(name string, sort int, active bool) *ent.CreditPlan {
			return db.Ent.CreditPlan.Create().SetName(name).SetCreditsPerPeriod(100).SetInterval(creditplan.IntervalMonth).
				SetPriceAmount(500).SetCurrency("usd").SetSortOrder(sort).SetActive(active).SaveX(ctx)
		}
		third, first, retired, second := mk("Pro", 3, true), mk("Starter", 1, true), mk("Retired", 0, false), mk("Team", 2, true)
		for _, tok := range []string{"", token(t, "alice", auth.RoleUser), token(t, "app", auth.RoleService), token(t, "root", auth.RoleAdmin)} {
			r := a.ok(tok, `{ creditPlans { id name creditsPerPeriod interval rollover } }`, nil)
			var got []string
			for _, p := range r.get(t, "creditPlans").([]any) {
				got = append(got, p.(map[string]any)["id"].(string))
			}
			if want := []string{first.ID, second.ID, third.ID}; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("creditPlans = %v, want %v (in sort order, without the retired plan)", got, want)
			}
			for _, id := range []string{first.ID, retired.ID} {
				r := a.ok(tok, `query($id: ID!) { node(id: $id) { id ... on CreditPlan { name } } }`, map[string]any{"id": id})
				if r.get(t, "node", "id") != id {
					t.Fatalf("node(plan %s): %s", id, r.Data)
				}
			}
		}
	})
}
