package payments_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/tally-billing/tally/ent/creditlot"
	"github.com/tally-billing/tally/ent/creditplan"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/payments"
	"github.com/tally-billing/tally/internal/testdb"
)

// TestChangeDeliveredAfterRenewal: a change paid within January and
// delivered after February's renewal (reconcile replays newest first)
// rolls over its part then, as it would have at the renewal.
func TestChangeDeliveredAfterRenewal(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newSubEnv(t, db, creditplan.RolloverCapped, 1200)
		sub := e.started()
		mid := jan.Add(15 * 24 * time.Hour)
		change := invoice(sub, mid, feb, 450, "subscription_update")
		change["id"] = "in_change_" + sub.ID
		change["lines"].(map[string]any)["data"].([]map[string]any)[0]["proration"] = true
		e.set(feb.Add(time.Hour))
		e.renew(sub, feb, mar)
		e.mustDeliver("evt_change", "invoice.paid", mid, change, payments.OutcomeApplied)
		if got := e.outcome(sub); got.balance != 2200 || got.payments != 3 || got.rollovers != 2 {
			t.Fatalf("%+v; want 1,000 + 1,200 rolled over (of 1,500), as in order", got)
		}
		e.mustDeliver("evt_change", "invoice.paid", mid, change, payments.OutcomeDuplicate)
		e.checkLedger()
	})
}

// TestDisputeWonAfterRenewal: credits a dispute held over the renewal come
// back, and roll over by the rule, as if it had been won before.
func TestDisputeWonAfterRenewal(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newSubEnv(t, db, creditplan.RolloverAll, 0)
		balances := map[bool]int64{}
		for _, wonBefore := range []bool{true, false} {
			e.set(jan.Add(time.Hour))
			sub := e.started()
			e.spend(sub.UserID, 300)
			inv := invoice(sub, jan, feb, 900, "subscription_create")
			dp := func(status string) map[string]any {
				return map[string]any{"id": "dp_" + sub.ID, "object": "dispute", "amount": 900, "currency": "usd",
					"charge": inv["charge"], "payment_intent": inv["payment_intent"], "status": status}
			}
			e.set(jan.Add(10 * 24 * time.Hour))
			e.mustDeliver("evt_dpc_"+sub.ID, "charge.dispute.created", e.clock(), dp("needs_response"), payments.OutcomeApplied)
			if wonBefore {
				e.mustDeliver("evt_dpw_"+sub.ID, "charge.dispute.closed", e.clock(), dp("won"), payments.OutcomeApplied)
			}
			e.set(feb.Add(time.Hour))
			e.renew(sub, feb, mar)
			if !wonBefore {
				e.set(feb.Add(10 * 24 * time.Hour))
				e.mustDeliver("evt_dpw_"+sub.ID, "charge.dispute.closed", e.clock(), dp("won"), payments.OutcomeApplied)
			}
			if _, err := e.l.ExpireLots(e.ctx); err != nil {
				t.Fatal(err)
			}
			balances[wonBefore] = e.balance(sub.UserID)
		}
		if balances[true] != 1700 || balances[false] != 1700 {
			t.Fatalf("balances won before / after the renewal: %d / %d, want 1,700 both", balances[true], balances[false])
		}
		e.checkLedger()
	})
}

// TestPeriodPaidLate: February declined, March paid on time, then
// February paid (Stripe retried it): its credits keep for a month from
// that payment, and are not closed into March.
func TestPeriodPaidLate(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newSubEnv(t, db, creditplan.RolloverNone, 0)
		sub := e.started()
		e.set(feb.Add(time.Hour))
		e.mustDeliver("evt_fail", "invoice.payment_failed", feb.Add(time.Minute), invoice(sub, feb, mar, 0, "subscription_cycle"), payments.OutcomeApplied)
		e.set(mar.Add(time.Hour))
		e.renew(sub, mar, apr)
		paid := mar.Add(5 * 24 * time.Hour)
		e.set(paid)
		e.mustDeliver("evt_feb_late", "invoice.paid", paid, invoice(sub, feb, mar, 900, "subscription_cycle"), payments.OutcomeApplied)
		p := db.Ent.Payment.Query().Where(payment.StripeInvoiceID(fmt.Sprintf("in_%s_%d", sub.ID, feb.Unix()))).OnlyX(e.ctx)
		lot := db.Ent.CreditLot.Query().Where(creditlot.PaymentID(p.ID)).OnlyX(e.ctx)
		if lot.Remaining != 1000 || !lot.ExpiresAt.Equal(paid.AddDate(0, 1, 0)) {
			t.Fatalf("February's lot %+v; want 1,000 expiring a month after it was paid", lot)
		}
		if got := e.balance(sub.UserID); got != 2000 {
			t.Fatalf("balance %d, want March's 1,000 and February's 1,000", got)
		}
		e.checkLedger()
	})
}

// TestRenewalPaidFromBalance: a renewal Stripe paid from the customer's
// balance (amount_paid 0, a total of 900) grants the period.
func TestRenewalPaidFromBalance(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newSubEnv(t, db, creditplan.RolloverNone, 0)
		sub := e.started()
		e.set(feb.Add(time.Hour))
		inv := invoice(sub, feb, mar, 0, "subscription_cycle")
		inv["total"] = 900
		e.mustDeliver("evt_balance", "invoice.paid", feb.Add(time.Minute), inv, payments.OutcomeApplied)
		if got := e.outcome(sub); got.balance != 1000 || got.payments != 2 {
			t.Fatalf("%+v; want February's 1,000", got)
		}
		e.checkLedger()
	})
}
