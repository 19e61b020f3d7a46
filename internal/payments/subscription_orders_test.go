package payments_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/creditplan"
	"github.com/tally-billing/tally/ent/creditsubscription"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/payments"
	"github.com/tally-billing/tally/internal/testdb"
)

type subEvent struct {
	id, typ string
	created time.Time
	object  map[string]any
}

// subOutcome is what a subscription's events leave behind.
type subOutcome struct {
	status            creditsubscription.Status
	cancelAtPeriodEnd bool
	periodEnd         time.Time
	balance           int64
	payments          int
	rollovers         int
	refunded          int
}

func (e *subEnv) outcome(sub *ent.CreditSubscription) subOutcome {
	e.t.Helper()
	sub = e.reload(sub)
	o := subOutcome{status: sub.Status, cancelAtPeriodEnd: sub.CancelAtPeriodEnd, balance: e.balance(sub.UserID),
		rollovers: len(e.rollovers(sub.UserID))}
	if sub.CurrentPeriodEnd != nil {
		o.periodEnd = *sub.CurrentPeriodEnd
	}
	o.payments = e.db.Ent.Payment.Query().Where(payment.SubscriptionID(sub.ID)).CountX(e.ctx)
	o.refunded = e.db.Ent.Payment.Query().Where(payment.SubscriptionID(sub.ID), payment.StatusEQ(payment.StatusRefunded)).CountX(e.ctx)
	return o
}

// runEvents delivers the events in the order given; those deferred are
// delivered again afterwards, as Stripe retries them, until none is left.
func (e *subEnv) runEvents(events []subEvent, order []int) {
	e.t.Helper()
	pending := make([]subEvent, 0, len(order))
	for _, i := range order {
		pending = append(pending, events[i])
	}
	for round := 0; len(pending) > 0; round++ {
		if round > len(events) {
			e.t.Fatalf("events still deferred after %d rounds: %v", round, pending)
		}
		var later []subEvent
		for _, ev := range pending {
			out, err := e.deliver(ev.id, ev.typ, ev.created, ev.object)
			var deferred *payments.DeferredError
			switch {
			case errors.As(err, &deferred):
				later = append(later, ev)
			case err != nil:
				e.t.Fatalf("%s: %v", ev.id, err)
			case out == payments.OutcomeFailed:
				e.t.Fatalf("%s refused", ev.id)
			}
		}
		pending = later
	}
}

// subscriptionLifecycle is a subscription's first two months: Checkout, January paid,
// February's first attempt declined then paid, and the customer asking to
// stop at the end of February.
func subscriptionLifecycle(sub *ent.CreditSubscription) []subEvent {
	return []subEvent{
		{"evt_cs_" + sub.ID, "checkout.session.completed", jan, subscriptionSession(sub)},
		{"evt_in1_" + sub.ID, "invoice.paid", jan.Add(time.Second), invoice(sub, jan, feb, 900, "subscription_create")},
		{"evt_fail2_" + sub.ID, "invoice.payment_failed", feb.Add(time.Minute), invoice(sub, feb, mar, 0, "subscription_cycle")},
		{"evt_in2_" + sub.ID, "invoice.paid", feb.Add(time.Hour), invoice(sub, feb, mar, 900, "subscription_cycle")},
		{"evt_upd_" + sub.ID, "customer.subscription.updated", feb.Add(2 * time.Hour), subscriptionObject(sub, "active", feb, mar, true)},
	}
}

// TestEveryOrderOfASubscriptionConverges delivers the lifecycle's five
// events in all 120 orders, each to a subscription of its own: every
// order ends in the same status, period, cancellation and balance, with
// one payment per paid invoice and one rollover.
func TestEveryOrderOfASubscriptionConverges(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newSubEnv(t, db, creditplan.RolloverCapped, 500)
		e.set(feb.Add(3 * time.Hour))
		var want *subOutcome
		for _, order := range permutations(5) {
			sub := e.subscription()
			e.runEvents(subscriptionLifecycle(sub), order)
			got := e.outcome(sub)
			if want == nil {
				want = &got
				if got.status != creditsubscription.StatusActive || !got.cancelAtPeriodEnd || !got.periodEnd.Equal(mar) ||
					got.balance != 1500 || got.payments != 2 || got.rollovers != 1 {
					t.Fatalf("in order: %+v; want ACTIVE, cancelling at %v, 1,000 + 500 rolled over", got, mar)
				}
				continue
			}
			if got != *want {
				t.Fatalf("order %v: %+v, want %+v", order, got, *want)
			}
		}
		e.checkLedger()
	})
}

// TestEveryOrderOfARefundedRenewalConverges: February's invoice refunded
// in full, in every order with both invoices (a refund before its invoice
// waits for it): February's credits are clawed back, January's rollover
// stays.
func TestEveryOrderOfARefundedRenewalConverges(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newSubEnv(t, db, creditplan.RolloverCapped, 500)
		e.set(feb.Add(3 * time.Hour))
		for _, order := range permutations(3) {
			sub := e.subscription()
			feb2 := invoice(sub, feb, mar, 900, "subscription_cycle")
			events := []subEvent{
				{"evt_in1_" + sub.ID, "invoice.paid", jan.Add(time.Second), invoice(sub, jan, feb, 900, "subscription_create")},
				{"evt_in2_" + sub.ID, "invoice.paid", feb.Add(time.Hour), feb2},
				{"evt_refund_" + sub.ID, "charge.refunded", feb.Add(2 * time.Hour), map[string]any{
					"id": feb2["charge"], "object": "charge", "amount": 900, "amount_refunded": 900,
					"currency": "usd", "payment_intent": feb2["payment_intent"], "refunded": true,
				}},
			}
			e.runEvents(events, order)
			got := e.outcome(sub)
			if got.balance != 500 || got.payments != 2 || got.refunded != 1 || got.rollovers != 1 {
				t.Fatalf("order %v: %+v; want 500 rolled over left, February refunded", order, got)
			}
		}
		e.checkLedger()
	})
}

// TestRenewalAndExpirySweepRace: the renewal and the sweep of the period's
// lot, in either order and at once, roll over the same credits once.
func TestRenewalAndExpirySweepRace(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newSubEnv(t, db, creditplan.RolloverCapped, 500)
		runs := []string{"sweep-first", "renewal-first", "together", "together", "together", "together"}
		subs := make([]*ent.CreditSubscription, len(runs))
		e.set(jan.Add(time.Hour))
		for i := range runs {
			subs[i] = e.started()
			e.spend(subs[i].UserID, 300)
		}
		e.set(feb.Add(time.Hour))
		for i, how := range runs {
			sweep := func() {
				if _, err := e.l.ExpireLots(e.ctx); err != nil {
					t.Error(err)
				}
			}
			switch how {
			case "sweep-first":
				sweep()
				e.renew(subs[i], feb, mar)
			case "renewal-first":
				e.renew(subs[i], feb, mar)
				sweep()
			default:
				var wg sync.WaitGroup
				wg.Add(2)
				go func() { defer wg.Done(); sweep() }()
				go func() { defer wg.Done(); e.renew(subs[i], feb, mar) }()
				wg.Wait()
			}
			if got := e.outcome(subs[i]); got.balance != 1500 || got.rollovers != 1 {
				t.Fatalf("%s: %+v, want 1,000 + 500 rolled over once", how, got)
			}
		}
		e.checkLedger()
	})
}

// TestTwoReplicasReceiveTheSameInvoice: two servers on one database get
// the invoice's event several times at once, and the same invoice in a
// second event: one payment, one grant.
func TestTwoReplicasReceiveTheSameInvoice(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newSubEnv(t, db, creditplan.RolloverNone, 0)
		other := payments.New(db, ledger.New(db, ledger.WithClock(e.clock)), payments.Config{})
		sub := e.subscription()
		inv := invoice(sub, jan, feb, 900, "subscription_create")
		var wg sync.WaitGroup
		outcomes := make(chan string, 16)
		for i := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				svc, id := e.svc, "evt_in1"
				if i%2 == 1 {
					svc = other
				}
				if i%4 == 3 {
					id = "evt_in1_second"
				}
				ev, raw := eventAt(id, "invoice.paid", jan, inv)
				out, err := svc.HandleEvent(e.ctx, ev, raw)
				if err != nil {
					t.Errorf("delivery %d: %v", i, err)
				}
				outcomes <- out
			}()
		}
		wg.Wait()
		close(outcomes)
		counts := tally(outcomes)
		if counts[payments.OutcomeApplied] != 1 {
			t.Fatalf("outcomes %v, want one applied", counts)
		}
		if got := e.outcome(sub); got.balance != 1000 || got.payments != 1 || got.status != creditsubscription.StatusActive {
			t.Fatalf("%+v, want one payment of 1,000 credits", got)
		}
		e.checkLedger()
	})
}

// TestFailedRenewalGrantsNothing: a declined renewal marks the
// subscription PAST_DUE and grants nothing; its later payment grants the
// period and makes it ACTIVE again. A deleted subscription is CANCELED for
// good, and keeps its credits.
func TestFailedRenewalGrantsNothing(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newSubEnv(t, db, creditplan.RolloverNone, 0)
		sub := e.started()
		e.set(feb.Add(time.Hour))
		e.mustDeliver("evt_fail", "invoice.payment_failed", feb.Add(time.Minute), invoice(sub, feb, mar, 0, "subscription_cycle"), payments.OutcomeApplied)
		if got := e.outcome(sub); got.status != creditsubscription.StatusPastDue || got.payments != 1 {
			t.Fatalf("after the decline: %+v", got)
		}
		if _, err := e.l.ExpireLots(e.ctx); err != nil {
			t.Fatal(err)
		}
		if got := e.balance(sub.UserID); got != 0 {
			t.Fatalf("balance %d after January expired with the renewal unpaid, want 0", got)
		}
		e.renew(sub, feb, mar)
		if got := e.outcome(sub); got.status != creditsubscription.StatusActive || got.balance != 1000 || got.payments != 2 {
			t.Fatalf("after the retry was paid: %+v", got)
		}
		e.mustDeliver("evt_del", "customer.subscription.deleted", feb.Add(2*time.Hour), subscriptionObject(sub, "canceled", feb, mar, false), payments.OutcomeApplied)
		e.mustDeliver("evt_old_upd", "customer.subscription.updated", feb.Add(90*time.Minute), subscriptionObject(sub, "active", feb, mar, false), payments.OutcomeApplied)
		if got := e.outcome(sub); got.status != creditsubscription.StatusCanceled || got.balance != 1000 {
			t.Fatalf("after deletion: %+v; want CANCELED with February's credits", got)
		}
		e.checkLedger()
	})
}

// TestSubscriptionEventsNotTallys: events that name no Tally subscription
// are ignored (200, nothing written); one naming an unknown Tally id is
// refused.
func TestSubscriptionEventsNotTallys(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newSubEnv(t, db, creditplan.RolloverNone, 0)
		sub := e.subscription()
		foreign := invoice(sub, jan, feb, 900, "subscription_create")
		foreign["subscription"], foreign["subscription_details"] = "sub_someone_else", map[string]any{}
		e.mustDeliver("evt_foreign", "invoice.paid", jan, foreign, payments.OutcomeIgnored)
		unknown := invoice(sub, jan, feb, 900, "subscription_create")
		unknown["subscription_details"] = map[string]any{"metadata": map[string]string{"tally_subscription_id": "sub_nobody"}}
		unknown["subscription"] = "sub_other"
		e.mustDeliver("evt_unknown", "invoice.paid", jan, unknown, payments.OutcomeFailed)
		noLines := invoice(sub, jan, feb, 900, "subscription_create")
		noLines["lines"] = map[string]any{"object": "list", "data": []any{}}
		e.mustDeliver("evt_nolines", "invoice.paid", jan, noLines, payments.OutcomeFailed)
		if n := db.Ent.Payment.Query().CountX(e.ctx); n != 0 {
			t.Fatalf("%d payments written, want none", n)
		}
	})
}
