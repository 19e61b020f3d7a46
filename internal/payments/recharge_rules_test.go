package payments_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tally-billing/tally/ent/autorecharge"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/payments"
	"github.com/tally-billing/tally/internal/stripemock"
	"github.com/tally-billing/tally/internal/testdb"
)

// The rules around recharges: the monthly limit, turning it off, new
// cards, frozen accounts, clawbacks, and the sweep after a decline.

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
