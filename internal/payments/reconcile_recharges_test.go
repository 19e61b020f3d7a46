package payments_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/autorecharge"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/ent/processedevent"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/payments"
	"github.com/tally-billing/tally/internal/stripemock"
	"github.com/tally-billing/tally/internal/testdb"
)

// stripeIntent is what the recording Stripe answers for payment intents
// read back (a GET of one, or the customer's list): nil answers with
// stripe-mock's own fixture, which names no recharge.
type stripeIntent struct {
	id, status, paymentID, userID string
	amount                        int64
}

// intentsRead makes Stripe answer reads of payment intents with pi.
func (e *rechargeEnv) intentsRead(pi *stripeIntent) {
	e.stripe.Rewrite(func(r stripemock.Request, obj map[string]any) {
		if r.Method != http.MethodGet || pi == nil || !strings.HasPrefix(r.Path, intentsPath) {
			return
		}
		intent := map[string]any{
			"id": pi.id, "object": "payment_intent", "status": pi.status, "amount": pi.amount, "currency": "eur",
			"customer": "cus_recharger", "latest_charge": "ch_" + pi.id,
			"metadata": map[string]any{"tally_payment_id": pi.paymentID, "user_id": pi.userID},
		}
		if r.Path == intentsPath {
			obj["data"] = []any{intent}
			return
		}
		for k, v := range intent {
			obj[k] = v
		}
	})
}

// reconcileAt reconciles as of an hour from now (past the default grace
// for what was written just now).
func (e *rechargeEnv) reconcileAt(svc *payments.Service, apply bool) payments.ReconcileReport {
	e.t.Helper()
	later := time.Now().Add(time.Hour)
	payments.SetClock(svc, func() time.Time { return later })
	r, err := svc.Reconcile(e.ctx, payments.ReconcileOptions{Since: 24 * time.Hour, Apply: apply})
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// onlyStale is the one stale recharge the report must list.
func onlyStale(t *testing.T, r payments.ReconcileReport, p *ent.Payment) payments.StaleRecharge {
	t.Helper()
	if len(r.StaleRecharges) != 1 || r.StaleRecharges[0].PaymentID != p.ID {
		t.Fatalf("stale recharges %+v, want %s alone", r.StaleRecharges, p.ID)
	}
	return r.StaleRecharges[0]
}

// TestReconcileGrantsARechargePaidUnannounced: a recharge whose job never
// ran and whose payment_intent.succeeded never came is found among the
// customer's intents; reported without --apply (nothing written), granted
// once with it through the webhook's path, and gone from the next report.
// A fresh recharge is not reported.
func TestReconcileGrantsARechargePaidUnannounced(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newRechargeEnv(t, db, 50000)
		if err := e.spend(15); err != nil { // 45: below 50
			t.Fatal(err)
		}
		p := e.onlyRecharge()
		r, err := e.svc.Reconcile(e.ctx, payments.ReconcileOptions{Since: 24 * time.Hour})
		if err != nil || len(r.StaleRecharges) != 0 || r.RechargeGrace != payments.DefaultRechargeGrace {
			t.Fatalf("a recharge of a moment ago: %+v %v", r.StaleRecharges, err)
		}

		e.intentsRead(&stripeIntent{id: "pi_paid", status: "succeeded", paymentID: p.ID, userID: p.UserID, amount: 1000})
		stale := onlyStale(t, e.reconcileAt(e.svc, false), p)
		if !stale.Paid || stale.Intent != "pi_paid" || stale.Repaired || stale.Stuck() || stale.Status != payment.StatusPending {
			t.Fatalf("without --apply: %+v", stale)
		}
		if got := e.onlyRecharge(); got.Status != payment.StatusPending || e.balance() != 45 ||
			db.Ent.ProcessedEvent.Query().Where(processedevent.StripeEventID("reconcile_pi_paid")).ExistX(e.ctx) {
			t.Fatalf("reconcile without --apply changed the recharge: %+v, balance %d", got, e.balance())
		}

		r = e.reconcileAt(e.svc, true)
		if stale := onlyStale(t, r, p); !stale.Repaired || len(r.Failures) != 0 {
			t.Fatalf("--apply: %+v %v", stale, r.Failures)
		}
		got := e.onlyRecharge()
		if got.Status != payment.StatusSucceeded || got.StripePaymentIntentID == nil || *got.StripePaymentIntentID != "pi_paid" || e.balance() != 145 {
			t.Fatalf("after --apply: %+v, balance %d", got, e.balance())
		}
		if a := e.settings(); a.Status != autorecharge.StatusActive || a.InFlightPaymentID != nil || a.LastRechargeAt == nil {
			t.Fatalf("settings after the repair: %+v", a)
		}
		rec := db.Ent.ProcessedEvent.Query().Where(processedevent.StripeEventID("reconcile_pi_paid")).OnlyX(e.ctx)
		if rec.Outcome != processedevent.OutcomeApplied || rec.PaymentID == nil || *rec.PaymentID != p.ID {
			t.Fatalf("the repair was recorded as %+v", rec)
		}
		if r := e.reconcileAt(e.svc, true); len(r.StaleRecharges) != 0 || len(r.Failures) != 0 || e.balance() != 145 {
			t.Fatalf("a second --apply: %+v %v, balance %d", r.StaleRecharges, r.Failures, e.balance())
		}
	})
}

// TestReconcileRechargeWaitingForTheCustomer: a recharge waiting for
// authentication is looked up by its intent id; still waiting, it is
// reported and left alone (not stuck); once Stripe says the customer
// completed it, --apply grants it and auto-recharge is ACTIVE again.
func TestReconcileRechargeWaitingForTheCustomer(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newRechargeEnv(t, db, 50000)
		e.stripe.AnswerWith(declined("authentication_required"))
		if err := e.spend(15); err != nil {
			t.Fatal(err)
		}
		e.runPending()
		e.stripe.AnswerWith(nil)
		p := e.onlyRecharge()
		if p.Status != payment.StatusAwaitingPayment || p.StripePaymentIntentID == nil {
			t.Fatalf("recharge %+v, want one waiting for authentication", p)
		}
		intent := *p.StripePaymentIntentID

		e.intentsRead(&stripeIntent{id: intent, status: "requires_action", paymentID: p.ID, userID: p.UserID, amount: 1000})
		stale := onlyStale(t, e.reconcileAt(e.svc, true), p)
		if stale.Paid || stale.Repaired || stale.Stuck() || stale.IntentStatus != "requires_action" || stale.Intent != intent {
			t.Fatalf("waiting: %+v", stale)
		}
		if got := e.onlyRecharge(); got.Status != payment.StatusAwaitingPayment || e.settings().Status != autorecharge.StatusActionRequired {
			t.Fatalf("a waiting recharge was changed: %+v", got)
		}
		if gets := e.stripe.Requests(http.MethodGet, intentsPath+"/"+intent); len(gets) == 0 {
			t.Fatal("the intent the recharge names was not read")
		}

		e.intentsRead(&stripeIntent{id: intent, status: "succeeded", paymentID: p.ID, userID: p.UserID, amount: 1000})
		if stale := onlyStale(t, e.reconcileAt(e.svc, true), p); !stale.Repaired {
			t.Fatalf("completed: %+v", stale)
		}
		if got := e.onlyRecharge(); got.Status != payment.StatusSucceeded || e.balance() != 145 || e.settings().Status != autorecharge.StatusActive {
			t.Fatalf("after the repair: %+v, balance %d, %s", got, e.balance(), e.settings().Status)
		}
	})
}

// TestReconcileRechargeUnhappy: an intent Stripe says succeeded for
// another amount is refused by the webhook's path (a repair failure,
// nothing granted); a recharge Stripe has no intent for is stuck; an
// intent of the recharge's id naming another payment is a mismatch; and
// without a Stripe key the stale recharge is still listed.
func TestReconcileRechargeUnhappy(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newRechargeEnv(t, db, 50000)
		if err := e.spend(15); err != nil {
			t.Fatal(err)
		}
		p := e.onlyRecharge()

		e.intentsRead(&stripeIntent{id: "pi_short", status: "succeeded", paymentID: p.ID, userID: p.UserID, amount: 999})
		r := e.reconcileAt(e.svc, true)
		stale := onlyStale(t, r, p)
		if !stale.Paid || stale.Repaired || len(r.Failures) != 1 ||
			!strings.Contains(r.Failures[0], "reconcile_pi_short: recharge "+p.ID+" is still PENDING") || !strings.Contains(r.Failures[0], "charged 999") {
			t.Fatalf("another amount: %+v %q", stale, r.Failures)
		}
		if got := e.onlyRecharge(); got.Status != payment.StatusPending || e.balance() != 45 {
			t.Fatalf("a refused repair changed the recharge: %+v, balance %d", got, e.balance())
		}

		// The customer's intents name other payments only.
		e.intentsRead(&stripeIntent{id: "pi_other", status: "succeeded", paymentID: "pay_other", userID: p.UserID, amount: 1000})
		r = e.reconcileAt(e.svc, true)
		if stale := onlyStale(t, r, p); stale.Intent != "" || stale.Paid || !stale.Stuck() || len(r.Failures) != 0 {
			t.Fatalf("no intent in Stripe: %+v %v", stale, r.Failures)
		}

		// The intent the recharge names is another payment's.
		if err := db.Ent.Payment.UpdateOneID(p.ID).SetStripePaymentIntentID("pi_named").Exec(e.ctx); err != nil {
			t.Fatal(err)
		}
		e.intentsRead(&stripeIntent{id: "pi_named", status: "succeeded", paymentID: "pay_other", userID: p.UserID, amount: 1000})
		r = e.reconcileAt(e.svc, true)
		if stale := onlyStale(t, r, p); stale.Mismatch == "" || stale.Paid || !stale.Stuck() || e.balance() != 45 {
			t.Fatalf("an intent naming another payment: %+v, balance %d", stale, e.balance())
		}

		offline := payments.New(db, e.l, payments.Config{})
		r = e.reconcileAt(offline, true)
		if stale := onlyStale(t, r, p); r.StripeChecked || stale.Intent != "" || !stale.Stuck() || r.Repaired != 0 {
			t.Fatalf("without a Stripe key: %+v %+v", r, stale)
		}
	})
}
