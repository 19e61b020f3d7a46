package payments_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/creditplan"
	"github.com/tally-billing/tally/ent/creditsubscription"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/ent/processedevent"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/payments"
	"github.com/tally-billing/tally/internal/stripemock"
	"github.com/tally-billing/tally/internal/testdb"
)

// invoiceEnv is a Stripe-keyed service on a recording stripe-mock whose
// list of invoices the test writes, a plan of 1,000 credits a month for
// 900 cents rolling over at most 500, and a clock the test sets.
type invoiceEnv struct {
	t      *testing.T
	ctx    context.Context
	db     *database.DB
	l      *ledger.Service
	svc    *payments.Service
	stripe *stripemock.Recorder
	plan   *ent.CreditPlan
	now    time.Time
	listed []map[string]any
}

func newInvoiceEnv(t *testing.T, db *database.DB) *invoiceEnv {
	e := &invoiceEnv{t: t, ctx: context.Background(), db: db, stripe: stripemock.NewRecorder(t)}
	clock := func() time.Time { return e.now }
	e.l = ledger.New(db, ledger.WithClock(clock))
	e.svc = payments.New(db, e.l, payments.Config{SecretKey: "sk_test_123", APIBase: e.stripe.URL()})
	payments.SetClock(e.svc, clock)
	e.plan = db.Ent.CreditPlan.Create().SetName("Monthly capped").SetCreditsPerPeriod(1000).
		SetInterval(creditplan.IntervalMonth).SetPriceAmount(900).SetCurrency("usd").
		SetRollover(creditplan.RolloverCapped).SetRolloverCap(500).SaveX(e.ctx)
	e.stripe.Rewrite(func(r stripemock.Request, obj map[string]any) {
		if r.Method == http.MethodGet && r.Path == "/v1/invoices" {
			obj["data"], obj["has_more"] = e.listed, false
		}
	})
	return e
}

// subscriber is a user's subscription to the plan as its Checkout left it;
// linked, it knows its Stripe subscription (the session's completion
// arrived).
func (e *invoiceEnv) subscriber(name string, linked bool) *ent.CreditSubscription {
	e.t.Helper()
	u := e.db.Ent.User.Create().SetExternalID(name).SaveX(e.ctx)
	create := e.db.Ent.CreditSubscription.Create().SetUserID(u.ID).SetPlanID(e.plan.ID).
		SetStripeCheckoutSessionID("cs_" + name)
	if linked {
		create.SetStripeSubscriptionID("sub_stripe_" + name).SetStatus(creditsubscription.StatusActive)
	}
	return create.SaveX(e.ctx)
}

// stripeInvoice is an invoice of the Stripe subscription named by its id
// and by Tally's metadata (ref, when not empty) for the period from start,
// as Stripe lists it.
func stripeInvoice(id, stripeSub, ref, status string, start time.Time, amount int64, reason string) map[string]any {
	inv := map[string]any{
		"id": id, "object": "invoice", "status": status, "subscription": stripeSub, "customer": "cus_x",
		"billing_reason": reason, "amount_paid": amount, "currency": "usd", "paid": status == "paid",
		"created": start.Unix(), "status_transitions": map[string]any{"paid_at": start.Add(time.Hour).Unix()},
		"lines": map[string]any{"object": "list", "data": []map[string]any{{
			"id": "il_" + id, "object": "line_item", "type": "subscription", "amount": amount,
			"period": map[string]int64{"start": start.Unix(), "end": start.AddDate(0, 1, 0).Unix()},
		}}},
	}
	if ref != "" {
		inv["subscription_details"] = map[string]any{"metadata": map[string]string{"tally_subscription_id": ref}}
	}
	return inv
}

func (e *invoiceEnv) deliver(id, typ string, created time.Time, object map[string]any) {
	e.t.Helper()
	raw, _ := json.Marshal(map[string]any{
		"id": id, "object": "event", "type": typ, "api_version": "2023-10-16", "livemode": false,
		"created": created.Unix(), "data": map[string]any{"object": object},
	})
	var ev stripe.Event
	if err := json.Unmarshal(raw, &ev); err != nil {
		e.t.Fatal(err)
	}
	if out, err := e.svc.HandleEvent(e.ctx, &ev, raw); err != nil || out != payments.OutcomeApplied {
		e.t.Fatalf("%s %s: %q %v", id, typ, out, err)
	}
}

func (e *invoiceEnv) reconcile(apply bool) payments.ReconcileReport {
	e.t.Helper()
	r, err := e.svc.Reconcile(e.ctx, payments.ReconcileOptions{Since: 90 * 24 * time.Hour, Apply: apply})
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

func (e *invoiceEnv) balance(sub *ent.CreditSubscription) int64 {
	return e.db.Ent.User.GetX(e.ctx, sub.UserID).CreditsBalance
}

func ungranted(r payments.ReconcileReport) string {
	out := ""
	for _, u := range r.UngrantedInvoices {
		out += fmt.Sprintf("%s/%s/%v ", u.InvoiceID, u.SubscriptionID, u.Repaired)
	}
	return out
}

var (
	recJan = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	recFeb = recJan.AddDate(0, 1, 0)
	recMar = recJan.AddDate(0, 2, 0)
)

// TestReconcileGrantsPaidInvoices: among the paid invoices Stripe lists,
// those of Tally's subscriptions (by Stripe's subscription id, or by the
// metadata alone when the session's completion never arrived) that no
// payment records are reported, nothing written; --apply grants each once
// through the webhook's path, as invoice.paid at the time it was paid: the
// missed renewal closes January into February by the plan's rule, and a
// failure delivered since still decides the status. A foreign invoice, one
// already granted, an invoice of 0 and one not paid are left alone.
func TestReconcileGrantsPaidInvoices(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newInvoiceEnv(t, db)
		e.now = recJan.Add(time.Hour)
		alice := e.subscriber("alice", true)
		jan := stripeInvoice("in_alice_jan", "sub_stripe_alice", alice.ID, "paid", recJan, 900, "subscription_create")
		e.deliver("evt_alice_jan", "invoice.paid", recJan.Add(time.Hour), jan)
		if _, err := e.l.Spend(e.ctx, ledger.Actor{Kind: ledger.ActorService, ID: "app"},
			ledger.SpendRequest{UserID: alice.UserID, Amount: 300, IdempotencyKey: "s1"}); err != nil {
			t.Fatal(err)
		}
		// February's invoice is paid in Stripe; its invoice.paid never
		// arrives. March's fails, and that event does.
		feb := stripeInvoice("in_alice_feb", "sub_stripe_alice", alice.ID, "paid", recFeb, 900, "subscription_cycle")
		e.now = recMar.Add(2 * time.Hour)
		e.deliver("evt_alice_mar_failed", "invoice.payment_failed", recMar.Add(time.Hour),
			stripeInvoice("in_alice_mar", "sub_stripe_alice", alice.ID, "open", recMar, 0, "subscription_cycle"))
		// Bob's Checkout completion and first invoice were both missed: his
		// subscription is known by the metadata alone.
		bob := e.subscriber("bob", false)
		bobFirst := stripeInvoice("in_bob_1", "sub_stripe_bob", bob.ID, "paid", recFeb, 900, "subscription_create")
		e.listed = []map[string]any{
			jan, feb, bobFirst,
			stripeInvoice("in_foreign", "sub_elsewhere", "", "paid", recFeb, 900, "subscription_cycle"),
			stripeInvoice("in_trial", "sub_stripe_alice", alice.ID, "paid", recFeb, 0, "subscription_cycle"),
			stripeInvoice("in_open", "sub_stripe_alice", alice.ID, "open", recFeb, 900, "subscription_cycle"),
		}

		r := e.reconcile(false)
		if got := ungranted(r); got != fmt.Sprintf("in_alice_feb/%s/false in_bob_1/%s/false ", alice.ID, bob.ID) || r.InvoicesChecked != 6 || r.Repaired != 0 {
			t.Fatalf("without --apply: %s (%d checked)", got, r.InvoicesChecked)
		}
		listed := e.stripe.Requests(http.MethodGet, "/v1/invoices")
		if len(listed) != 1 || listed[0].Form.Get("status") != "paid" ||
			listed[0].Form.Get("created[gte]") != fmt.Sprint(e.now.Add(-90*24*time.Hour).Unix()) {
			t.Fatalf("the invoices were asked for with %v", listed)
		}
		if n := db.Ent.Payment.Query().CountX(e.ctx); n != 1 || e.balance(alice) != 700 || e.balance(bob) != 0 {
			t.Fatalf("reconcile without --apply wrote: %d payments, balances %d %d", n, e.balance(alice), e.balance(bob))
		}

		r = e.reconcile(true)
		if got := ungranted(r); got != fmt.Sprintf("in_alice_feb/%s/true in_bob_1/%s/true ", alice.ID, bob.ID) || len(r.Failures) != 0 {
			t.Fatalf("--apply: %s %v", got, r.Failures)
		}
		// January's 700 left expire, 500 of them come back; February's 1,000.
		if got := e.balance(alice); got != 1500 {
			t.Fatalf("alice's balance %d after the repair, want 1500", got)
		}
		a := db.Ent.CreditSubscription.GetX(e.ctx, alice.ID)
		if a.Status != creditsubscription.StatusPastDue || !a.CurrentPeriodEnd.Equal(recMar) {
			t.Fatalf("alice's subscription after the repair: %s until %v; want PAST_DUE (March failed since) until March", a.Status, a.CurrentPeriodEnd)
		}
		p := db.Ent.Payment.Query().Where(payment.StripeInvoiceID("in_alice_feb")).OnlyX(e.ctx)
		if p.Kind != payment.KindSUBSCRIPTION || p.Credits != 1000 || p.Amount != 900 || *p.SubscriptionID != alice.ID {
			t.Fatalf("the repaired payment: %+v", p)
		}
		rec := db.Ent.ProcessedEvent.Query().Where(processedevent.StripeEventID("reconcile_in_alice_feb")).OnlyX(e.ctx)
		if rec.Outcome != processedevent.OutcomeApplied {
			t.Fatalf("the repair was recorded as %s", rec.Outcome)
		}
		b := db.Ent.CreditSubscription.GetX(e.ctx, bob.ID)
		if e.balance(bob) != 1000 || b.Status != creditsubscription.StatusActive || b.StripeSubscriptionID == nil || *b.StripeSubscriptionID != "sub_stripe_bob" {
			t.Fatalf("bob after the repair: balance %d, %+v", e.balance(bob), b)
		}
		checkLedgerOf(t, e.svc)

		if r := e.reconcile(true); len(r.UngrantedInvoices) != 0 || r.Repaired != 0 || len(r.Failures) != 0 {
			t.Fatalf("a second --apply: %s %d %v", ungranted(r), r.Repaired, r.Failures)
		}
		if e.balance(alice) != 1500 || e.balance(bob) != 1000 {
			t.Fatal("a second --apply moved credits")
		}
	})
}

// TestReconcileInvoiceRefused: a paid invoice the webhook's path cannot
// grant (no line with a period) is reported, and --apply is a failure with
// the reason, writing no payment, every time. (stripe-mock's one listed
// event is not a subscription's: repaired, and ignored.)
func TestReconcileInvoiceRefused(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newInvoiceEnv(t, db)
		e.now = recFeb
		carol := e.subscriber("carol", true)
		inv := stripeInvoice("in_carol", "sub_stripe_carol", carol.ID, "paid", recJan, 900, "subscription_create")
		inv["lines"] = map[string]any{"object": "list", "data": []any{}}
		e.listed = []map[string]any{inv}
		for range 2 {
			r := e.reconcile(true)
			if got := ungranted(r); got != "in_carol/"+carol.ID+"/false " || len(r.Failures) != 1 || r.Repaired != len(r.Unprocessed) {
				t.Fatalf("an invoice without a period: %s %v", got, r.Failures)
			}
			if want := "reconcile_in_carol: invoice in_carol is still not granted (event FAILED: the invoice has no subscription line with a period)"; r.Failures[0] != want {
				t.Fatalf("failure %q, want %q", r.Failures[0], want)
			}
		}
		if n := db.Ent.Payment.Query().CountX(e.ctx); n != 0 || e.balance(carol) != 0 {
			t.Fatalf("a refused repair wrote %d payments", n)
		}
	})
}

func checkLedgerOf(t *testing.T, svc *payments.Service) {
	t.Helper()
	r, err := svc.Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() {
		t.Fatalf("ledger invariants broken: %+v", r.Problems)
	}
}
