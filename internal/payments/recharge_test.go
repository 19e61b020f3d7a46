package payments_test

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/autorecharge"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/jobs"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/payments"
	"github.com/tally-billing/tally/internal/stripemock"
	"github.com/tally-billing/tally/internal/testdb"
)

// rechargeEnv is a ledger that triggers recharges, the payments service
// that charges them through a recording stripe-mock, and a clock.
type rechargeEnv struct {
	t      *testing.T
	ctx    context.Context
	db     *database.DB
	l      *ledger.Service
	svc    *payments.Service
	stripe *stripemock.Recorder
	now    atomic.Pointer[time.Time]
	user   *ent.User
	pack   *ent.CreditPackage
	n      atomic.Int64
}

const intentsPath = "/v1/payment_intents"

// newRechargeEnv has a user with a saved card and auto-recharge on: below
// 50 credits, a pack of 100 credits for 1000 cents, at most limit a month.
func newRechargeEnv(t *testing.T, db *database.DB, limit int64) *rechargeEnv {
	e := &rechargeEnv{t: t, ctx: context.Background(), db: db, stripe: stripemock.NewRecorder(t)}
	start := time.Date(2026, 12, 10, 12, 0, 0, 0, time.UTC)
	e.now.Store(&start)
	inserter, err := jobs.NewInserter(db)
	if err != nil {
		t.Fatal(err)
	}
	e.l = ledger.New(db, ledger.WithClock(e.clock), ledger.WithRecharges(payments.NewRecharger(db, inserter, false)))
	e.svc = payments.New(db, e.l, payments.Config{SecretKey: "sk_test_123", APIBase: e.stripe.URL(), Jobs: inserter})
	e.user = db.Ent.User.Create().SetExternalID("recharger").SaveX(e.ctx)
	e.pack = db.Ent.CreditPackage.Create().SetName("Top-up").SetCredits(100).SetPriceAmount(1000).SetCurrency("eur").SaveX(e.ctx)
	err = e.svc.SaveCard(e.ctx, e.user.ID, payments.Card{
		CustomerID: "cus_recharger", PaymentMethodID: "pm_card_visa", Brand: "visa", Last4: "4242", ExpMonth: 12, ExpYear: 2030,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.grant(60)
	if _, err := e.svc.SetAutoRecharge(e.ctx, e.user.ID, payments.AutoRechargeRequest{
		Enabled: true, ThresholdCredits: 50, PackageID: e.pack.ID, MonthlyLimitAmount: limit,
	}, nil); err != nil {
		t.Fatal(err)
	}
	// stripe-mock answers with a fixture; Stripe charges what it was asked.
	e.stripe.IntentsAnswer("succeeded")
	return e
}

func (e *rechargeEnv) clock() time.Time { return *e.now.Load() }

func (e *rechargeEnv) advance(d time.Duration) {
	next := e.clock().Add(d)
	e.now.Store(&next)
}

func (e *rechargeEnv) grant(n int64) {
	e.t.Helper()
	_, err := e.l.Grant(e.ctx, ledger.Actor{Kind: ledger.ActorSystem, ID: "test"}, ledger.GrantRequest{
		UserID: e.user.ID, Amount: n, Reason: "test", IdempotencyKey: fmt.Sprintf("g%d", e.n.Add(1)),
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *rechargeEnv) spend(n int64) error {
	_, err := e.l.Spend(e.ctx, ledger.Actor{Kind: ledger.ActorService, ID: "app"}, ledger.SpendRequest{
		UserID: e.user.ID, Amount: n, Reason: "use", IdempotencyKey: fmt.Sprintf("s%d", e.n.Add(1)),
	})
	return err
}

func (e *rechargeEnv) recharges() []*ent.Payment {
	return e.db.Ent.Payment.Query().Where(payment.KindEQ(payment.KindRECHARGE)).Order(ent.Asc(payment.FieldCreatedAt), ent.Asc(payment.FieldID)).AllX(e.ctx)
}

func (e *rechargeEnv) settings() *ent.AutoRecharge {
	return e.db.Ent.AutoRecharge.Query().Where(autorecharge.UserID(e.user.ID)).OnlyX(e.ctx)
}

func (e *rechargeEnv) balance() int64 { return e.db.Ent.User.GetX(e.ctx, e.user.ID).CreditsBalance }

// onlyRecharge is the one recharge payment there must be.
func (e *rechargeEnv) onlyRecharge() *ent.Payment {
	e.t.Helper()
	ps := e.recharges()
	if len(ps) != 1 {
		e.t.Fatalf("%d recharge payments, want 1", len(ps))
	}
	return ps[0]
}

func (e *rechargeEnv) jobCount() int {
	var n int
	if err := e.db.SQL.QueryRowContext(e.ctx, `SELECT count(*) FROM river_job WHERE kind = 'recharge'`).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func (e *rechargeEnv) intentEvent(id, typ, intentID string, p *ent.Payment, extra map[string]any) string {
	e.t.Helper()
	obj := map[string]any{
		"id": intentID, "object": "payment_intent", "amount": p.Amount, "currency": p.Currency, "status": "succeeded",
		"customer": "cus_recharger", "latest_charge": "ch_" + intentID,
		"metadata": map[string]any{"tally_payment_id": p.ID, "user_id": p.UserID},
	}
	for k, v := range extra {
		obj[k] = v
	}
	ev, raw := event(id, typ, obj)
	out, err := e.svc.HandleEvent(e.ctx, ev, raw)
	if err != nil {
		e.t.Fatalf("%s: %v", typ, err)
	}
	return out
}

// runPending runs the job of every recharge still PENDING.
func (e *rechargeEnv) runPending() {
	e.t.Helper()
	for _, p := range e.recharges() {
		if p.Status == payment.StatusPending {
			if err := payments.RunRecharge(e.ctx, e.svc, p.ID, 1); err != nil {
				e.t.Fatal(err)
			}
		}
	}
}

func TestRechargeChargesOffSessionOnce(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newRechargeEnv(t, db, 5000)
		if err := e.spend(5); err != nil { // 55 left: above the threshold
			t.Fatal(err)
		}
		if n := len(e.recharges()); n != 0 {
			t.Fatalf("%d recharges above the threshold", n)
		}
		if err := e.spend(10); err != nil { // 45: below
			t.Fatal(err)
		}
		p := e.onlyRecharge()
		if p.Status != payment.StatusPending || p.Amount != 1000 || p.Credits != 100 || p.Currency != "eur" || e.jobCount() != 1 {
			t.Fatalf("recharge %+v with %d jobs", p, e.jobCount())
		}
		if err := e.spend(10); err != nil { // 35: still below, one in flight
			t.Fatal(err)
		}
		e.onlyRecharge()

		if err := payments.RunRecharge(e.ctx, e.svc, p.ID, 1); err != nil {
			t.Fatal(err)
		}
		sent := e.stripe.Requests(http.MethodPost, intentsPath)
		if len(sent) != 1 {
			t.Fatalf("%d intents created", len(sent))
		}
		f := sent[0].Form
		for k, want := range map[string]string{
			"off_session": "true", "confirm": "true", "amount": "1000", "currency": "eur", "customer": "cus_recharger",
			"payment_method": "pm_card_visa", "metadata[tally_payment_id]": p.ID,
		} {
			if f.Get(k) != want {
				t.Errorf("sent %s=%q, want %q", k, f.Get(k), want)
			}
		}
		if sent[0].IdempotencyKey != "tally-recharge-"+p.ID {
			t.Errorf("idempotency key %q", sent[0].IdempotencyKey)
		}
		p = e.onlyRecharge()
		a := e.settings()
		if p.Status != payment.StatusSucceeded || p.StripePaymentIntentID == nil || p.RechargeSlot != nil ||
			e.balance() != 135 || a.InFlightPaymentID != nil || a.LastRechargeAt == nil || a.Status != autorecharge.StatusActive {
			t.Fatalf("after the charge: payment %+v, balance %d, settings %+v", p, e.balance(), a)
		}
		// The intent's own event, and the job run again, change nothing.
		if out := e.intentEvent("evt_pi_ok", "payment_intent.succeeded", *p.StripePaymentIntentID, p, nil); out != payments.OutcomeIgnored {
			t.Fatalf("event after the job: %s", out)
		}
		if err := payments.RunRecharge(e.ctx, e.svc, p.ID, 2); err != nil {
			t.Fatal(err)
		}
		if e.balance() != 135 || len(e.stripe.Requests(http.MethodPost, intentsPath)) != 1 {
			t.Fatalf("balance %d after a second run", e.balance())
		}
	})
}

func TestRechargeEventBeforeTheJobsAnswer(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newRechargeEnv(t, db, 5000)
		if err := e.spend(20); err != nil {
			t.Fatal(err)
		}
		p := e.onlyRecharge()
		if out := e.intentEvent("evt_first", "payment_intent.succeeded", "pi_first", p, nil); out != payments.OutcomeApplied {
			t.Fatalf("event: %s", out)
		}
		if out := e.intentEvent("evt_first", "payment_intent.succeeded", "pi_first", p, nil); out != payments.OutcomeDuplicate {
			t.Fatalf("redelivered event: %s", out)
		}
		if err := payments.RunRecharge(e.ctx, e.svc, p.ID, 1); err != nil {
			t.Fatal(err)
		}
		if n := len(e.stripe.Requests(http.MethodPost, intentsPath)); n != 0 || e.balance() != 140 {
			t.Fatalf("the job charged %d times after the event; balance %d", n, e.balance())
		}
		// A forged intent for another amount is refused.
		if out := e.intentEvent("evt_other", "payment_intent.succeeded", "pi_first", p, map[string]any{"amount": 1}); out != payments.OutcomeFailed {
			t.Fatalf("wrong amount: %s", out)
		}
		// A Checkout purchase's intent is not a recharge's.
		ev, raw := event("evt_checkout_pi", "payment_intent.succeeded", map[string]any{"id": "pi_checkout", "object": "payment_intent",
			"metadata": map[string]any{"payment_id": p.ID}})
		if out, err := e.svc.HandleEvent(e.ctx, ev, raw); err != nil || out != payments.OutcomeIgnored {
			t.Fatalf("checkout intent: %s %v", out, err)
		}
	})
}
