package server_test

import (
	"context"
	"fmt"
	"math/big"
	"testing"

	"github.com/tally-billing/tally/ent/credittransaction"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/testdb"
)

// TestWebhookRefundClawsBackExactly: a signed charge.refunded claws back
// ⌊credits·refunded/amount⌋ credits (all of them once fully refunded) for
// every pack the API accepts, up to credits and price of MaxAmount, where
// the product needs 106 bits. The first case is the review's: 10^12 credits
// for 10^8 minor units, refunded 50%, clawed back nothing (the product
// wrapped an int64) and was reported applied. ledgerReport, which recomputes
// each payment's share on its own, finds nothing wrong afterwards.
func TestWebhookRefundClawsBackExactly(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		ctx := context.Background()
		admin := token(t, "root", auth.RoleAdmin)
		const m = ledger.MaxAmount
		createPack := `mutation($input: CreateCreditPackageInput!) { createCreditPackage(input: $input) {
			creditPackage { id credits priceAmount } } }`
		for i, c := range []struct{ credits, price, refunded int64 }{
			{1_000_000_000_000, 100_000_000, 50_000_000},
			{m, m, m - 1}, {m, m, 1}, {m, 2, 1}, {m, 3, 2}, {1, m, m - 1}, {3, m, m - 1}, {m - 1, m, m / 2}, {m, m, m},
		} {
			r := a.ok(admin, createPack, map[string]any{"input": map[string]any{
				"name": fmt.Sprintf("pack %d", i), "credits": c.credits, "priceAmount": c.price, "currency": "usd",
			}})
			pkgID := r.get(t, "createCreditPackage", "creditPackage", "id").(string)
			if r.get(t, "createCreditPackage", "creditPackage", "credits") != float64(c.credits) {
				t.Fatalf("pack %d: %s", i, r.Data)
			}
			// The pending payment createCheckoutSession writes.
			u := db.Ent.User.Create().SetExternalID(fmt.Sprintf("buyer-%d", i)).SaveX(ctx)
			p := db.Ent.Payment.Create().SetUserID(u.ID).SetPackageID(pkgID).SetAmount(c.price).SetCurrency("usd").
				SetCredits(c.credits).SetStripeCheckoutSessionID("cs_" + u.ID).SaveX(ctx)

			if code, out := a.stripeEvent("evt_paid_"+p.ID, "checkout.session.completed", false, paidSession(p)); code != 200 || out != "applied" {
				t.Fatalf("case %d, purchase: %d %q", i, code, out)
			}
			if code, out := a.stripeEvent("evt_refund_"+p.ID, "charge.refunded", false, refundedCharge(p, c.refunded)); code != 200 || out != "applied" {
				t.Fatalf("case %d, refund: %d %q", i, code, out)
			}

			want := new(big.Int).Mul(big.NewInt(c.credits), big.NewInt(c.refunded))
			want.Quo(want, big.NewInt(c.price))
			wantStatus := payment.StatusPartiallyRefunded
			if c.refunded == c.price {
				wantStatus = payment.StatusRefunded
			}
			var clawedBack int64
			for _, txn := range db.Ent.CreditTransaction.Query().
				Where(credittransaction.PaymentID(p.ID), credittransaction.KindEQ(credittransaction.KindRefundClawback)).AllX(ctx) {
				clawedBack += txn.Amount
			}
			got := db.Ent.Payment.GetX(ctx, p.ID)
			balance := db.Ent.User.GetX(ctx, u.ID).CreditsBalance
			if clawedBack != want.Int64() || balance != c.credits-want.Int64() || got.Status != wantStatus || got.AmountRefunded != c.refunded {
				t.Errorf("%d credits for %d, %d refunded: %d clawed back, balance %d, %s with %d refunded; want %s clawed back, %s",
					c.credits, c.price, c.refunded, clawedBack, balance, got.Status, got.AmountRefunded, want, wantStatus)
			}
		}
		r := a.checkLedger(admin)
		if r.get(t, "ledgerReport", "ok") != true {
			t.Fatalf("ledger report: %s", r.Data)
		}
	})
}
