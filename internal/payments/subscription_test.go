package payments_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/creditlot"
	"github.com/tally-billing/tally/ent/creditplan"
	"github.com/tally-billing/tally/ent/creditsubscription"
	"github.com/tally-billing/tally/ent/credittransaction"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/payments"
	"github.com/tally-billing/tally/internal/testdb"
)

// subEnv is a plan of 1,000 credits a month for 900 cents, subscriptions
// to it as createSubscriptionCheckout leaves them, and a clock the test
// moves: no test waits for a month.
type subEnv struct {
	t    *testing.T
	ctx  context.Context
	db   *database.DB
	l    *ledger.Service
	svc  *payments.Service
	now  atomic.Pointer[time.Time]
	plan *ent.CreditPlan
	n    atomic.Int64
}

// Periods of the tests: January, February and March 2026.
var (
	jan = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	feb = time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	mar = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	apr = time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
)

func newSubEnv(t *testing.T, db *database.DB, rule creditplan.Rollover, rolloverCap int64) *subEnv {
	e := &subEnv{t: t, ctx: context.Background(), db: db}
	e.set(jan.Add(time.Hour))
	e.l = ledger.New(db, ledger.WithClock(e.clock))
	e.svc = payments.New(db, e.l, payments.Config{})
	payments.SetClock(e.svc, e.clock)
	create := db.Ent.CreditPlan.Create().SetName(fmt.Sprintf("Monthly %s", rule)).SetCreditsPerPeriod(1000).
		SetInterval(creditplan.IntervalMonth).SetPriceAmount(900).SetCurrency("usd").SetRollover(rule)
	if rule == creditplan.RolloverCapped {
		create.SetRolloverCap(rolloverCap)
	}
	e.plan = create.SaveX(e.ctx)
	return e
}

func (e *subEnv) clock() time.Time { return *e.now.Load() }
func (e *subEnv) set(at time.Time) { e.now.Store(&at) }

// subscription is an INCOMPLETE subscription of a new user, with its
// Checkout Session.
func (e *subEnv) subscription() *ent.CreditSubscription {
	e.t.Helper()
	n := e.n.Add(1)
	u := e.db.Ent.User.Create().SetExternalID(fmt.Sprintf("subscriber-%d", n)).SaveX(e.ctx)
	return e.db.Ent.CreditSubscription.Create().SetUserID(u.ID).SetPlanID(e.plan.ID).
		SetStripeCheckoutSessionID(fmt.Sprintf("cs_sub_%d", n)).SaveX(e.ctx)
}

func stripeSubID(sub *ent.CreditSubscription) string { return "sub_stripe_" + sub.ID }

// invoice is a paid (or failed) invoice of the subscription for the period
// from start to end.
func invoice(sub *ent.CreditSubscription, start, end time.Time, amount int64, reason string) map[string]any {
	id := fmt.Sprintf("in_%s_%d", sub.ID, start.Unix())
	return map[string]any{
		"id": id, "object": "invoice", "subscription": stripeSubID(sub), "customer": "cus_" + sub.UserID,
		"billing_reason": reason, "amount_paid": amount, "currency": "usd", "paid": amount > 0,
		"payment_intent": "pi_" + id, "charge": "ch_" + id,
		"subscription_details": map[string]any{"metadata": map[string]string{"tally_subscription_id": sub.ID}},
		"lines": map[string]any{"object": "list", "data": []map[string]any{{
			"id": "il_" + id, "object": "line_item", "type": "subscription", "amount": amount,
			"period": map[string]int64{"start": start.Unix(), "end": end.Unix()},
		}}},
	}
}

func subscriptionObject(sub *ent.CreditSubscription, status string, start, end time.Time, cancelAtPeriodEnd bool) map[string]any {
	return map[string]any{
		"id": stripeSubID(sub), "object": "subscription", "status": status,
		"current_period_start": start.Unix(), "current_period_end": end.Unix(),
		"cancel_at_period_end": cancelAtPeriodEnd, "metadata": map[string]string{"tally_subscription_id": sub.ID},
	}
}

func subscriptionSession(sub *ent.CreditSubscription) map[string]any {
	return map[string]any{
		"id": *sub.StripeCheckoutSessionID, "object": "checkout.session", "mode": "subscription",
		"client_reference_id": sub.ID, "subscription": stripeSubID(sub), "payment_status": "paid",
		"metadata": map[string]string{"user_id": sub.UserID, "tally_subscription_id": sub.ID},
	}
}

// eventAt builds a Stripe event created at the given time.
func eventAt(id, typ string, created time.Time, object map[string]any) (*stripe.Event, []byte) {
	raw, _ := json.Marshal(map[string]any{
		"id": id, "object": "event", "type": typ, "api_version": "2023-10-16", "livemode": false,
		"created": created.Unix(), "data": map[string]any{"object": object},
	})
	var ev stripe.Event
	if err := json.Unmarshal(raw, &ev); err != nil {
		panic(err)
	}
	return &ev, raw
}

// deliver hands the webhook an event created at the given time.
func (e *subEnv) deliver(id, typ string, created time.Time, object map[string]any) (string, error) {
	ev, raw := eventAt(id, typ, created, object)
	return e.svc.HandleEvent(e.ctx, ev, raw)
}

func (e *subEnv) mustDeliver(id, typ string, created time.Time, object map[string]any, want string) {
	e.t.Helper()
	if out, err := e.deliver(id, typ, created, object); err != nil || out != want {
		e.t.Fatalf("%s %s: %q %v, want %q", id, typ, out, err, want)
	}
}

func (e *subEnv) spend(userID string, n int64) {
	e.t.Helper()
	_, err := e.l.Spend(e.ctx, ledger.Actor{Kind: ledger.ActorService, ID: "app"},
		ledger.SpendRequest{UserID: userID, Amount: n, IdempotencyKey: fmt.Sprintf("spend-%d", e.n.Add(1))})
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *subEnv) balance(userID string) int64 {
	e.t.Helper()
	return e.db.Ent.User.GetX(e.ctx, userID).CreditsBalance
}

func (e *subEnv) reload(sub *ent.CreditSubscription) *ent.CreditSubscription {
	e.t.Helper()
	return e.db.Ent.CreditSubscription.GetX(e.ctx, sub.ID)
}

func (e *subEnv) checkLedger() {
	e.t.Helper()
	r, err := e.svc.Check(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	if !r.OK() {
		e.t.Fatalf("ledger invariants broken: %+v", r.Problems)
	}
}

// started is a subscription whose Checkout completed and whose January
// invoice was paid.
func (e *subEnv) started() *ent.CreditSubscription {
	e.t.Helper()
	sub := e.subscription()
	e.mustDeliver("evt_cs_"+sub.ID, "checkout.session.completed", jan, subscriptionSession(sub), payments.OutcomeApplied)
	e.mustDeliver("evt_in1_"+sub.ID, "invoice.paid", jan.Add(time.Second), invoice(sub, jan, feb, 900, "subscription_create"), payments.OutcomeApplied)
	return e.reload(sub)
}

// renew pays February's invoice.
func (e *subEnv) renew(sub *ent.CreditSubscription, start, end time.Time) {
	e.t.Helper()
	e.mustDeliver(fmt.Sprintf("evt_in_%s_%d", sub.ID, start.Unix()), "invoice.paid", start.Add(time.Minute),
		invoice(sub, start, end, 900, "subscription_cycle"), payments.OutcomeApplied)
}

func (e *subEnv) rollovers(userID string) []*ent.CreditTransaction {
	return e.db.Ent.CreditTransaction.Query().
		Where(credittransaction.UserID(userID), credittransaction.KindEQ(credittransaction.KindRollover)).AllX(e.ctx)
}

// TestSubscriptionGrantsEachPaidPeriodOnce: the first invoice activates the
// subscription and grants the period's credits as a lot expiring at the
// period's end; a redelivery and the same invoice in another event grant
// nothing more.
func TestSubscriptionGrantsEachPaidPeriodOnce(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newSubEnv(t, db, creditplan.RolloverNone, 0)
		sub := e.started()
		if sub.Status != creditsubscription.StatusActive || sub.StripeSubscriptionID == nil ||
			sub.CurrentPeriodEnd == nil || !sub.CurrentPeriodEnd.Equal(feb) {
			t.Fatalf("after the first invoice: %+v", sub)
		}
		if got := e.balance(sub.UserID); got != 1000 {
			t.Fatalf("balance %d, want 1000", got)
		}
		p := db.Ent.Payment.Query().Where(payment.SubscriptionID(sub.ID)).OnlyX(e.ctx)
		if p.Kind != payment.KindSUBSCRIPTION || p.Status != payment.StatusSucceeded || p.Amount != 900 ||
			p.Credits != 1000 || p.PackageID != nil || *p.PlanID != e.plan.ID {
			t.Fatalf("payment %+v", p)
		}
		lot := db.Ent.CreditLot.Query().Where(creditlot.PaymentID(p.ID)).OnlyX(e.ctx)
		if lot.ExpiresAt == nil || !lot.ExpiresAt.Equal(feb) || lot.Original != 1000 {
			t.Fatalf("lot %+v, want 1000 credits expiring %v", lot, feb)
		}
		e.mustDeliver("evt_in1_"+sub.ID, "invoice.paid", jan.Add(time.Second), invoice(sub, jan, feb, 900, "subscription_create"), payments.OutcomeDuplicate)
		e.mustDeliver("evt_in1_again", "invoice.paid", jan.Add(2*time.Second), invoice(sub, jan, feb, 900, "subscription_create"), payments.OutcomeIgnored)
		if got := e.balance(sub.UserID); got != 1000 {
			t.Fatalf("balance %d after redeliveries, want 1000", got)
		}
		e.checkLedger()
	})
}

// TestRolloverRules: at renewal the ended period's unspent credits (700 of
// 1,000) expire, and the rule brings back none, up to the cap, or all, as
// a lot expiring with the new period.
func TestRolloverRules(t *testing.T) {
	for _, tc := range []struct {
		rule   creditplan.Rollover
		cap    int64
		rolled int64
	}{
		{creditplan.RolloverNone, 0, 0},
		{creditplan.RolloverCapped, 500, 500},
		{creditplan.RolloverCapped, 5000, 700},
		{creditplan.RolloverAll, 0, 700},
	} {
		t.Run(fmt.Sprintf("%s-%d", tc.rule, tc.cap), func(t *testing.T) {
			testdb.Each(t, func(t *testing.T, db *database.DB) {
				e := newSubEnv(t, db, tc.rule, tc.cap)
				sub := e.started()
				e.spend(sub.UserID, 300)
				e.set(feb.Add(time.Hour))
				e.renew(sub, feb, mar)
				if got := e.balance(sub.UserID); got != 1000+tc.rolled {
					t.Fatalf("balance %d, want %d", got, 1000+tc.rolled)
				}
				rolled := e.rollovers(sub.UserID)
				if (tc.rolled == 0) != (len(rolled) == 0) || (len(rolled) == 1 && rolled[0].Amount != tc.rolled) {
					t.Fatalf("rollovers %v, want one of %d", rolled, tc.rolled)
				}
				if tc.rolled > 0 {
					lot := db.Ent.CreditLot.Query().Where(creditlot.TransactionID(rolled[0].ID)).OnlyX(e.ctx)
					if !lot.ExpiresAt.Equal(mar) || lot.Remaining != tc.rolled {
						t.Fatalf("rollover lot %+v, want %d expiring %v", lot, tc.rolled, mar)
					}
				}
				if sub = e.reload(sub); !sub.CurrentPeriodEnd.Equal(mar) || sub.Status != creditsubscription.StatusActive {
					t.Fatalf("after renewal: %+v", sub)
				}
				e.checkLedger()
			})
		})
	}
}

// TestRolloverAllCarriesOverPeriods: with ALL, what rolled into February
// and was not spent rolls into March too, with February's own credits.
func TestRolloverAllCarriesOverPeriods(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newSubEnv(t, db, creditplan.RolloverAll, 0)
		sub := e.started()
		e.spend(sub.UserID, 300) // 700 left of January
		e.set(feb.Add(time.Hour))
		e.renew(sub, feb, mar) // 700 rolled + 1000
		e.spend(sub.UserID, 200)
		e.set(mar.Add(time.Hour))
		e.renew(sub, mar, apr) // 1500 rolled + 1000
		if got := e.balance(sub.UserID); got != 2500 {
			t.Fatalf("balance %d, want 2500", got)
		}
		if n := len(e.rollovers(sub.UserID)); n != 2 {
			t.Fatalf("%d rollovers, want 2", n)
		}
		e.checkLedger()
	})
}

// TestPlanChangeGrantsWhatIsPaid: an invoice for a change within the
// period grants the plan's credits in proportion to what it charged (450
// of 900: half), expiring with the period; one that charged nothing (a
// downgrade, paid from Stripe's credit balance) grants nothing. At the
// renewal both of the period's lots roll over together under the cap.
func TestPlanChangeGrantsWhatIsPaid(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newSubEnv(t, db, creditplan.RolloverCapped, 1200)
		sub := e.started()
		mid := jan.Add(15 * 24 * time.Hour)
		e.set(mid)
		change := invoice(sub, mid, feb, 450, "subscription_update")
		change["id"] = "in_change_" + sub.ID
		change["lines"].(map[string]any)["data"].([]map[string]any)[0]["proration"] = true
		e.mustDeliver("evt_change", "invoice.paid", mid, change, payments.OutcomeApplied)
		if got := e.balance(sub.UserID); got != 1500 {
			t.Fatalf("balance %d after a change paying half a period, want 1,500", got)
		}
		free := invoice(sub, mid, feb, 0, "subscription_update")
		free["id"] = "in_free_" + sub.ID
		e.mustDeliver("evt_free", "invoice.paid", mid, free, payments.OutcomeIgnored)
		e.set(feb.Add(time.Hour))
		e.renew(sub, feb, mar)
		if got := e.outcome(sub); got.balance != 2200 || got.rollovers != 1 || got.payments != 3 {
			t.Fatalf("after renewal: %+v; want 1,000 + 1,200 rolled over (of 1,500)", got)
		}
		e.checkLedger()
	})
}
