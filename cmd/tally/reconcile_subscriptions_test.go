package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tally-billing/tally/ent/creditplan"
	"github.com/tally-billing/tally/ent/creditsubscription"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/stripemock"
	"github.com/tally-billing/tally/internal/testdb"
)

// TestReconcileSubscriptionInvoices: a subscription's invoice paid in
// Stripe whose invoice.paid never arrived is listed (exit 1); --apply
// grants the period's credits and says so (exit 0); a second run finds it
// granted.
func TestReconcileSubscriptionInvoices(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		uid := newUser(t, db, "subscriber")
		plan := db.Ent.CreditPlan.Create().SetName("Monthly").SetCreditsPerPeriod(1000).
			SetInterval(creditplan.IntervalMonth).SetPriceAmount(900).SetCurrency("usd").SaveX(ctx)
		sub := db.Ent.CreditSubscription.Create().SetUserID(uid).SetPlanID(plan.ID).
			SetStatus(creditsubscription.StatusActive).SetStripeSubscriptionID("sub_stripe_cli").SaveX(ctx)
		start := time.Now().Add(-time.Hour).Truncate(time.Second)
		rec := stripemock.NewRecorder(t)
		rec.Rewrite(func(r stripemock.Request, obj map[string]any) {
			if r.Method == http.MethodGet && r.Path == "/v1/invoices" {
				obj["data"] = []any{map[string]any{
					"id": "in_cli", "object": "invoice", "status": "paid", "subscription": "sub_stripe_cli",
					"billing_reason": "subscription_create", "amount_paid": 900, "currency": "usd", "created": start.Unix(),
					"subscription_details": map[string]any{"metadata": map[string]any{"tally_subscription_id": sub.ID}},
					"lines": map[string]any{"object": "list", "data": []any{map[string]any{
						"id": "il_cli", "object": "line_item", "type": "subscription", "amount": 900,
						"period": map[string]any{"start": start.Unix(), "end": start.AddDate(0, 1, 0).Unix()},
					}}},
				}}
			}
		})
		env := []string{"DATABASE_URL=" + db.URL, "STRIPE_SECRET_KEY=sk_test_123", "STRIPE_API_BASE=" + rec.URL()}
		dir := t.TempDir()

		out, stderr, code := run(t, dir, env, "reconcile")
		if code != 1 || !strings.Contains(out, " and 1 paid invoices checked since ") ||
			!strings.Contains(out, "  invoice paid in Stripe, credits not granted: in_cli (subscription "+sub.ID+")\n") {
			t.Fatalf("without --apply: exit %d\n%s%s", code, out, stderr)
		}
		if u := db.Ent.User.GetX(ctx, uid); u.CreditsBalance != 0 {
			t.Fatalf("reconcile without --apply granted %d", u.CreditsBalance)
		}
		out, stderr, code = run(t, dir, env, "reconcile", "--apply")
		if code != 0 || !strings.Contains(out, "  invoice paid in Stripe, credits granted now: in_cli (subscription "+sub.ID+")\n") ||
			strings.Contains(out, "repair failed") {
			t.Fatalf("--apply: exit %d\n%s%s", code, out, stderr)
		}
		if u := db.Ent.User.GetX(ctx, uid); u.CreditsBalance != 1000 {
			t.Fatalf("balance %d after --apply, want 1000", u.CreditsBalance)
		}
		out, stderr, code = run(t, dir, env, "reconcile", "--apply")
		if code != 0 || strings.Contains(out, "in_cli") {
			t.Fatalf("a second --apply: exit %d\n%s%s", code, out, stderr)
		}
	})
}
