package payments_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tally-billing/tally/ent/autorecharge"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/payments"
	"github.com/tally-billing/tally/internal/stripemock"
	"github.com/tally-billing/tally/internal/testdb"
)

// The ways a recharge goes wrong: declines, authentication, Stripe out of
// reach, and every order of its outcomes.

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
