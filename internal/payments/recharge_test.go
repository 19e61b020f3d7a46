package payments_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/autorecharge"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/internal/apperr"
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

// declined answers the intent's creation as Stripe answers a declined card.
func declined(code string) func(stripemock.Request) (int, string) {
	return func(r stripemock.Request) (int, string) {
		if r.Method != http.MethodPost || r.Path != intentsPath {
			return 0, ""
		}
		id := "pi_" + code + "_" + r.Form.Get("metadata[tally_payment_id]")
		pi := `{"id":"` + id + `","object":"payment_intent","status":"requires_payment_method","amount":1000,"currency":"eur","client_secret":"` + id + `_secret"}`
		return http.StatusPaymentRequired, `{"error":{"type":"card_error","code":"` + code + `","message":"Your card was declined.","payment_intent":` + pi + `}}`
	}
}

func TestRechargeDeclinesBackOffThenDisable(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newRechargeEnv(t, db, 50000)
		e.stripe.AnswerWith(declined("card_declined"))
		if err := e.spend(20); err != nil {
			t.Fatal(err)
		}
		for round := 1; round <= 3; round++ {
			ps := e.recharges()
			if len(ps) != round {
				t.Fatalf("round %d: %d recharges", round, len(ps))
			}
			if err := payments.RunRecharge(e.ctx, e.svc, ps[round-1].ID, 1); err != nil {
				t.Fatal(err)
			}
			a := e.settings()
			if p := e.recharges()[round-1]; p.Status != payment.StatusFailed || p.RechargeSlot != nil {
				t.Fatalf("round %d: payment %+v", round, p)
			}
			if a.ConsecutiveFailures != round || !strings.Contains(a.LastError, "declined") {
				t.Fatalf("round %d: settings %+v", round, a)
			}
			// No new try before the wait is over, however often the
			// credits move below the threshold.
			if err := e.spend(1); err != nil {
				t.Fatal(err)
			}
			if n := len(e.recharges()); n != round {
				t.Fatalf("round %d: a recharge started during the wait (%d)", round, n)
			}
			e.advance(payments.DefaultRechargeRetryAfter + time.Minute)
			if err := e.spend(1); err != nil {
				t.Fatal(err)
			}
		}
		a := e.settings()
		if a.Status != autorecharge.StatusDisabled || len(e.recharges()) != 3 || db.Ent.User.GetX(e.ctx, e.user.ID).RechargeBelow != nil {
			t.Fatalf("after three declines: %+v, %d recharges", a, len(e.recharges()))
		}
		if e.balance() != 60-20-6 {
			t.Fatalf("balance %d: a declined recharge granted credits", e.balance())
		}
	})
}

func TestRechargeAuthenticationPausesUntilCompleted(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newRechargeEnv(t, db, 5000)
		e.stripe.AnswerWith(declined("authentication_required"))
		if err := e.spend(20); err != nil {
			t.Fatal(err)
		}
		p := e.onlyRecharge()
		if err := payments.RunRecharge(e.ctx, e.svc, p.ID, 1); err != nil {
			t.Fatal(err)
		}
		p, a := e.onlyRecharge(), e.settings()
		if p.Status != payment.StatusAwaitingPayment || a.Status != autorecharge.StatusActionRequired ||
			p.StripePaymentIntentID == nil || *p.StripePaymentIntentID != "pi_authentication_required_"+p.ID {
			t.Fatalf("after the bank asked for authentication: %+v %+v", p, a)
		}
		// Paused: no other recharge, not even after the decline wait.
		e.advance(2 * payments.DefaultRechargeRetryAfter)
		if err := e.spend(5); err != nil {
			t.Fatal(err)
		}
		e.onlyRecharge()
		// A late failure event of the same intent changes nothing.
		if out := e.intentEvent("evt_auth_failed", "payment_intent.payment_failed", *p.StripePaymentIntentID, p,
			map[string]any{"status": "requires_payment_method", "last_payment_error": map[string]any{"type": "card_error", "code": "authentication_required"}}); out != payments.OutcomeIgnored {
			t.Fatalf("failure while waiting: %s", out)
		}
		// The customer authenticates on-session: paid, and ACTIVE again.
		if out := e.intentEvent("evt_auth_ok", "payment_intent.succeeded", *p.StripePaymentIntentID, p, nil); out != payments.OutcomeApplied {
			t.Fatalf("completed: %s", out)
		}
		if a := e.settings(); a.Status != autorecharge.StatusActive || a.InFlightPaymentID != nil || e.balance() != 135 {
			t.Fatalf("after completion: %+v, balance %d", a, e.balance())
		}
	})
}

// TestRechargeEventOrdersConverge: a recharge's decline and success, in
// either order, end paid, granted once, auto-recharge ACTIVE.
func TestRechargeEventOrdersConverge(t *testing.T) {
	for _, order := range [][]string{{"failed", "succeeded"}, {"succeeded", "failed"}} {
		t.Run(strings.Join(order, "-then-"), func(t *testing.T) {
			testdb.Each(t, func(t *testing.T, db *database.DB) {
				e := newRechargeEnv(t, db, 5000)
				if err := e.spend(20); err != nil {
					t.Fatal(err)
				}
				p := e.onlyRecharge()
				for _, what := range order {
					if what == "failed" {
						e.intentEvent("evt_f", "payment_intent.payment_failed", "pi_conv", p, map[string]any{
							"status": "requires_payment_method", "last_payment_error": map[string]any{"type": "card_error", "code": "card_declined"}})
					} else {
						e.intentEvent("evt_s", "payment_intent.succeeded", "pi_conv", p, nil)
					}
				}
				p, a := e.onlyRecharge(), e.settings()
				if p.Status != payment.StatusSucceeded || e.balance() != 140 || a.Status != autorecharge.StatusActive ||
					a.ConsecutiveFailures != 0 || a.InFlightPaymentID != nil {
					t.Fatalf("payment %s, balance %d, settings %+v", p.Status, e.balance(), a)
				}
			})
		})
	}
}

func TestRechargeUnknownOutcomeRetriesWithTheSameKey(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newRechargeEnv(t, db, 5000)
		e.stripe.AnswerWith(func(r stripemock.Request) (int, string) {
			if r.Method == http.MethodPost && r.Path == intentsPath {
				return http.StatusInternalServerError, `{"error":{"type":"api_error","message":"boom"}}`
			}
			return 0, ""
		})
		if err := e.spend(20); err != nil {
			t.Fatal(err)
		}
		p := e.onlyRecharge()
		if err := payments.RunRecharge(e.ctx, e.svc, p.ID, 1); err == nil {
			t.Fatal("an unknown outcome was not retried")
		}
		if e.onlyRecharge().Status != payment.StatusPending {
			t.Fatal("an unknown outcome settled the payment")
		}
		e.stripe.AnswerWith(nil)
		if err := payments.RunRecharge(e.ctx, e.svc, p.ID, 2); err != nil {
			t.Fatal(err)
		}
		sent := e.stripe.Requests(http.MethodPost, intentsPath)
		if len(sent) < 2 || sent[0].IdempotencyKey != sent[len(sent)-1].IdempotencyKey {
			t.Fatalf("tries sent %d requests with keys %v", len(sent), sent)
		}
		if e.onlyRecharge().Status != payment.StatusSucceeded || e.balance() != 140 {
			t.Fatalf("after the retry: %s, balance %d", e.onlyRecharge().Status, e.balance())
		}
	})
}

// TestRechargeLastTryKeepsItInFlight: after the last try at a Stripe
// that never answered, whether the card was charged is unknown: the
// recharge stays in flight (no other may charge the card) for reconcile.
func TestRechargeLastTryKeepsItInFlight(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newRechargeEnv(t, db, 5000)
		e.stripe.AnswerWith(func(r stripemock.Request) (int, string) {
			if r.Method == http.MethodPost && r.Path == intentsPath {
				return http.StatusServiceUnavailable, `{"error":{"type":"api_error","message":"down"}}`
			}
			return 0, ""
		})
		if err := e.spend(20); err != nil {
			t.Fatal(err)
		}
		p := e.onlyRecharge()
		if err := payments.RunRecharge(e.ctx, e.svc, p.ID, payments.RechargeAttempts); err == nil {
			t.Fatal("the last try reported success")
		}
		p, a := e.onlyRecharge(), e.settings()
		if p.Status != payment.StatusPending || p.RechargeSlot == nil || a.InFlightPaymentID == nil ||
			!strings.Contains(a.LastError, "could not be reached") {
			t.Fatalf("after the last try: %s %+v", p.Status, a)
		}
		if err := e.spend(1); err != nil {
			t.Fatal(err)
		}
		e.onlyRecharge()
	})
}

func TestRechargeMonthlyLimitUnderConcurrency(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newRechargeEnv(t, db, 2000) // two packs a month
		e.grant(1000)
		var wg sync.WaitGroup
		var mu sync.Mutex
		charged := map[string]bool{}
		// Spends cross the threshold again and again while recharges are
		// charged concurrently: never more than two packs this month.
		for i := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 20 {
					if err := e.spend(int64(3 + i%3)); err != nil && apperr.CodeOf(err) != apperr.InsufficientCredits {
						t.Error(err)
						return
					}
					for _, p := range e.recharges() {
						mu.Lock()
						run := !charged[p.ID]
						charged[p.ID] = true
						mu.Unlock()
						if run {
							if err := payments.RunRecharge(e.ctx, e.svc, p.ID, 1); err != nil {
								t.Error(err)
							}
						}
					}
				}
			}()
		}
		wg.Wait()
		// Below the threshold once both recharges are paid: the limit
		// stops a third.
		for range 3 {
			e.runPending()
			if b := e.balance(); b > 10 {
				if err := e.spend(b - 10); err != nil {
					t.Fatal(err)
				}
			}
		}
		ps := e.recharges()
		var sum int64
		for _, p := range ps {
			if p.Status != payment.StatusFailed {
				sum += p.Amount
			}
		}
		if len(ps) != 2 || sum != 2000 {
			t.Fatalf("%d recharges charging %d this month, limit 2000", len(ps), sum)
		}
		if a := e.settings(); !strings.Contains(a.LastError, "monthly limit") {
			t.Fatalf("settings after the limit: %+v", a)
		}
		// A new month: recharges again.
		e.advance(31 * 24 * time.Hour)
		e.grant(1)
		if n := len(e.recharges()); n != 3 {
			t.Fatalf("%d recharges in the new month", n)
		}
	})
}

// TestRechargeTurnedOffBeforeTheCharge: auto-recharge turned off while a
// recharge waits for its job: the card is not charged.
func TestRechargeTurnedOffBeforeTheCharge(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newRechargeEnv(t, db, 5000)
		if err := e.spend(20); err != nil {
			t.Fatal(err)
		}
		p := e.onlyRecharge()
		if _, err := e.svc.SetAutoRecharge(e.ctx, e.user.ID, payments.AutoRechargeRequest{}, nil); err != nil {
			t.Fatal(err)
		}
		if err := payments.RunRecharge(e.ctx, e.svc, p.ID, 1); err != nil {
			t.Fatal(err)
		}
		if n := len(e.stripe.Requests(http.MethodPost, intentsPath)); n != 0 {
			t.Fatalf("%d intents created after auto-recharge was turned off", n)
		}
		if p, a := e.onlyRecharge(), e.settings(); p.Status != payment.StatusFailed || a.InFlightPaymentID != nil || a.ConsecutiveFailures != 0 {
			t.Fatalf("payment %s, settings %+v", p.Status, a)
		}
	})
}

// TestRechargeRefundAndDisputeClawBack: a recharge's charge is refunded
// in part and then disputed and lost, like any purchase's.
func TestRechargeRefundAndDisputeClawBack(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newRechargeEnv(t, db, 5000)
		if err := e.spend(20); err != nil {
			t.Fatal(err)
		}
		e.runPending()
		p := e.onlyRecharge()
		if p.Status != payment.StatusSucceeded || p.StripeChargeID == nil || e.balance() != 140 {
			t.Fatalf("recharge %+v, balance %d", p, e.balance())
		}
		deliver := func(id, typ string, obj map[string]any) string {
			ev, raw := event(id, typ, obj)
			out, err := e.svc.HandleEvent(e.ctx, ev, raw)
			if err != nil {
				t.Fatalf("%s: %v", typ, err)
			}
			return out
		}
		ch := map[string]any{"id": *p.StripeChargeID, "object": "charge", "amount": p.Amount, "amount_refunded": 400,
			"currency": p.Currency, "payment_intent": *p.StripePaymentIntentID}
		if out := deliver("evt_rc_refund", "charge.refunded", ch); out != payments.OutcomeApplied || e.balance() != 100 {
			t.Fatalf("refund of 40%%: %s, balance %d", out, e.balance())
		}
		dp := map[string]any{"id": "dp_rc", "object": "dispute", "amount": p.Amount, "currency": p.Currency,
			"charge": *p.StripeChargeID, "payment_intent": *p.StripePaymentIntentID}
		dp["status"] = "needs_response"
		deliver("evt_rc_dispute", "charge.dispute.created", dp)
		dp["status"] = "lost"
		if out := deliver("evt_rc_lost", "charge.dispute.closed", dp); out != payments.OutcomeApplied || e.balance() != 40 {
			t.Fatalf("lost dispute: %s, balance %d", out, e.balance())
		}
		// The dispute's hold took the credits below the threshold, and its
		// loss took them back: neither charged the card again.
		if p := e.onlyRecharge(); p.Status != payment.StatusChargedBack {
			t.Fatalf("recharge %s after a lost dispute", p.Status)
		}
	})
}

// TestRechargeTurnedOffAfterAnEarlierTryCharged: turned off while the
// job's first try went unanswered, but Stripe had charged: the retry
// finds the intent and grants it rather than giving the recharge up.
func TestRechargeTurnedOffAfterAnEarlierTryCharged(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newRechargeEnv(t, db, 5000)
		if err := e.spend(20); err != nil {
			t.Fatal(err)
		}
		p := e.onlyRecharge()
		e.stripe.AnswerWith(func(r stripemock.Request) (int, string) {
			if r.Method == http.MethodGet && r.Path == intentsPath {
				return http.StatusOK, fmt.Sprintf(`{"object":"list","url":"/v1/payment_intents","has_more":false,"data":[
					{"id":"pi_earlier","object":"payment_intent","status":"succeeded","amount":1000,"currency":"eur",
					"latest_charge":"ch_earlier","metadata":{"tally_payment_id":%q}}]}`, p.ID)
			}
			return 0, ""
		})
		if _, err := e.svc.SetAutoRecharge(e.ctx, e.user.ID, payments.AutoRechargeRequest{}, nil); err != nil {
			t.Fatal(err)
		}
		if err := payments.RunRecharge(e.ctx, e.svc, p.ID, 2); err != nil {
			t.Fatal(err)
		}
		if p := e.onlyRecharge(); p.Status != payment.StatusSucceeded || e.balance() != 140 ||
			len(e.stripe.Requests(http.MethodPost, intentsPath)) != 0 {
			t.Fatalf("recharge %s, balance %d", p.Status, e.balance())
		}
	})
}

// TestRechargeAfterADecline: setting auto-recharge again does not skip
// the wait after a decline; saving another card does, and starts the
// recharge the user needs at once, without waiting for a movement.
func TestRechargeAfterADecline(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newRechargeEnv(t, db, 5000)
		e.stripe.AnswerWith(declined("card_declined"))
		if err := e.spend(20); err != nil {
			t.Fatal(err)
		}
		e.runPending()
		again := payments.AutoRechargeRequest{Enabled: true, ThresholdCredits: 50, PackageID: e.pack.ID, MonthlyLimitAmount: 5000}
		if _, err := e.svc.SetAutoRecharge(e.ctx, e.user.ID, again, nil); err != nil {
			t.Fatal(err)
		}
		if a := e.settings(); a.Status != autorecharge.StatusFailing || a.RetryAfter == nil || len(e.recharges()) != 1 {
			t.Fatalf("set again after a decline: %+v, %d recharges", a, len(e.recharges()))
		}
		e.stripe.AnswerWith(nil)
		if err := e.svc.SaveCard(e.ctx, e.user.ID, payments.Card{CustomerID: "cus_recharger", PaymentMethodID: "pm_card_mastercard",
			Brand: "mastercard", Last4: "4444", ExpMonth: 1, ExpYear: 2031}); err != nil {
			t.Fatal(err)
		}
		ps := e.recharges()
		if a := e.settings(); a.Status != autorecharge.StatusActive || len(ps) != 2 || ps[1].Status != payment.StatusPending {
			t.Fatalf("after a new card: %+v, %d recharges", a, len(ps))
		}
		e.runPending()
		if sent := e.stripe.Requests(http.MethodPost, intentsPath); sent[len(sent)-1].Form.Get("payment_method") != "pm_card_mastercard" || e.balance() != 140 {
			t.Fatalf("charged %v, balance %d", sent[len(sent)-1].Form, e.balance())
		}
	})
}

// TestNoRechargeForAFrozenAccount: a frozen user's credits leaving below
// the threshold (an admin's revoke) do not charge their card.
func TestNoRechargeForAFrozenAccount(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newRechargeEnv(t, db, 5000)
		db.Ent.User.UpdateOneID(e.user.ID).SetStatus(user.StatusFrozen).ExecX(e.ctx)
		if _, err := e.l.Revoke(e.ctx, ledger.Actor{Kind: ledger.ActorAdmin, ID: "root"}, ledger.RevokeRequest{
			UserID: e.user.ID, Amount: 30, Reason: "test", IdempotencyKey: "r1"}); err != nil {
			t.Fatal(err)
		}
		if n := len(e.recharges()); n != 0 {
			t.Fatalf("%d recharges for a frozen account", n)
		}
	})
}

// TestRechargeSweepAfterTheWait: a user out of credits after a decline
// moves no more (their spends are refused); once the wait is over, the
// sweep starts the recharge they need, once.
func TestRechargeSweepAfterTheWait(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newRechargeEnv(t, db, 5000)
		payments.SetClock(e.svc, e.clock)
		e.stripe.AnswerWith(declined("card_declined"))
		if err := e.spend(20); err != nil {
			t.Fatal(err)
		}
		e.runPending()
		if err := e.spend(e.balance()); err != nil {
			t.Fatal(err)
		}
		if n, err := e.svc.SweepRecharges(e.ctx); err != nil || n != 0 || len(e.recharges()) != 1 {
			t.Fatalf("swept %d during the wait (%v), %d recharges", n, err, len(e.recharges()))
		}
		e.stripe.AnswerWith(nil)
		e.advance(payments.DefaultRechargeRetryAfter + time.Minute)
		if n, err := e.svc.SweepRecharges(e.ctx); err != nil || n != 1 {
			t.Fatalf("swept %d after the wait: %v", n, err)
		}
		ps := e.recharges()
		if len(ps) != 2 || ps[1].Status != payment.StatusPending {
			t.Fatalf("%d recharges after the sweep", len(ps))
		}
		if n, err := e.svc.SweepRecharges(e.ctx); err != nil || n != 0 {
			t.Fatalf("swept %d again: %v", n, err)
		}
		e.runPending()
		if e.balance() != 100 || e.settings().Status != autorecharge.StatusActive {
			t.Fatalf("balance %d, %+v", e.balance(), e.settings())
		}
	})
}
