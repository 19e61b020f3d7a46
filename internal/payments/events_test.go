package payments_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"github.com/stripe/stripe-go/v76"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/ent/processedevent"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/payments"
	"github.com/tally-billing/tally/internal/testdb"
)

type fixture struct {
	t   *testing.T
	db  *database.DB
	l   *ledger.Service
	svc *payments.Service
	n   int
}

func newFixture(t *testing.T, db *database.DB) *fixture {
	l := ledger.New(db)
	return &fixture{t: t, db: db, l: l, svc: payments.New(db, l, payments.Config{})}
}

// pendingPayment is a purchase of 100 credits for 1000 cents, as
// createCheckoutSession leaves it.
func (f *fixture) pendingPayment() *ent.Payment {
	f.t.Helper()
	ctx := context.Background()
	f.n++
	u := f.db.Ent.User.Create().SetExternalID(fmt.Sprintf("buyer-%d", f.n)).SaveX(ctx)
	pkg := f.db.Ent.CreditPackage.Create().SetName(fmt.Sprintf("pack-%d", f.n)).SetCredits(100).
		SetPriceAmount(1000).SetCurrency("usd").SaveX(ctx)
	return f.db.Ent.Payment.Create().SetUserID(u.ID).SetPackageID(pkg.ID).SetAmount(1000).
		SetCurrency("usd").SetCredits(100).SetStripeCheckoutSessionID("cs_" + u.ID).SaveX(ctx)
}

// event builds a Stripe event as Stripe would send it.
func event(id, typ string, object map[string]any) (*stripe.Event, []byte) {
	raw, _ := json.Marshal(map[string]any{
		"id": id, "object": "event", "type": typ, "api_version": "2023-10-16", "livemode": false,
		"created": 1700000000, "data": map[string]any{"object": object},
	})
	var ev stripe.Event
	if err := json.Unmarshal(raw, &ev); err != nil {
		panic(err)
	}
	return &ev, raw
}

func session(p *ent.Payment, status string) map[string]any {
	return map[string]any{
		"id": *p.StripeCheckoutSessionID, "object": "checkout.session", "client_reference_id": p.ID,
		"amount_total": p.Amount, "currency": p.Currency, "payment_status": status,
		"payment_intent": "pi_" + p.ID, "metadata": map[string]string{"user_id": p.UserID},
	}
}

func charge(p *ent.Payment, refunded int64) map[string]any {
	return map[string]any{
		"id": "ch_" + p.ID, "object": "charge", "amount": p.Amount, "amount_refunded": refunded,
		"currency": p.Currency, "payment_intent": "pi_" + p.ID, "refunded": refunded >= p.Amount,
	}
}

func dispute(p *ent.Payment, status string) map[string]any {
	return map[string]any{
		"id": "dp_" + p.ID, "object": "dispute", "amount": p.Amount, "currency": p.Currency,
		"charge": "ch_" + p.ID, "payment_intent": "pi_" + p.ID, "status": status,
	}
}

// paidAfterAnEarlyRefund is a payment whose refund of 300 (evt_r_early)
// arrived before it succeeded, and was deferred.
func (f *fixture) paidAfterAnEarlyRefund() *ent.Payment {
	f.t.Helper()
	p := f.pendingPayment()
	if out, err := f.deliver("evt_r_early", "charge.refunded", charge(p, 300)); err == nil || out != payments.OutcomeDeferred {
		f.t.Fatalf("early refund: %q %v", out, err)
	}
	f.deliver("evt_paid", "checkout.session.completed", session(p, "paid"))
	return p
}

// inDebt is a payment of 100 credits whose buyer spent 90 before its
// refund of 300 (of 1000, evt_r_early, deferred until the payment) was
// applied: 30 credits clawed back, 20 of them a debt.
func (f *fixture) inDebt() *ent.Payment {
	f.t.Helper()
	p := f.paidAfterAnEarlyRefund()
	if _, err := f.l.Spend(context.Background(), ledger.Actor{Kind: ledger.ActorService, ID: "app"},
		ledger.SpendRequest{UserID: p.UserID, Amount: 90, IdempotencyKey: "s1"}); err != nil {
		f.t.Fatal(err)
	}
	if out, err := f.deliver("evt_r_early", "charge.refunded", charge(p, 300)); err != nil || out != payments.OutcomeApplied {
		f.t.Fatalf("refund redelivered after the payment: %q %v", out, err)
	}
	return p
}

// tally counts the outcomes of concurrent deliveries.
func tally(outcomes <-chan string) map[string]int {
	counts := map[string]int{}
	for o := range outcomes {
		counts[o]++
	}
	return counts
}

func (f *fixture) deliver(id, typ string, object map[string]any) (string, error) {
	ev, raw := event(id, typ, object)
	return f.svc.HandleEvent(context.Background(), ev, raw)
}

func (f *fixture) state(p *ent.Payment) (payment.Status, int64, int64) {
	f.t.Helper()
	got := f.db.Ent.Payment.GetX(context.Background(), p.ID)
	u := f.db.Ent.User.GetX(context.Background(), p.UserID)
	return got.Status, u.CreditsBalance, got.AmountRefunded
}

// checkLedger fails the test if an invariant of the ledger or of a
// payment is broken.
func (f *fixture) checkLedger() {
	f.t.Helper()
	r, err := f.svc.Check(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	if !r.OK() {
		f.t.Fatalf("ledger invariants broken: %+v", r.Problems)
	}
}

func TestCheckoutCompletedGrantsOnce(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newFixture(t, db)
		p := f.pendingPayment()
		// 20 deliveries of one event, 10 of them at once.
		var wg sync.WaitGroup
		outcomes := make(chan string, 20)
		for i := range 20 {
			deliver := func() {
				out, err := f.deliver("evt_paid", "checkout.session.completed", session(p, "paid"))
				if err != nil {
					t.Errorf("delivery %d: %v", i, err)
				}
				outcomes <- out
			}
			if i < 10 {
				wg.Add(1)
				go func() { defer wg.Done(); deliver() }()
			} else {
				wg.Wait()
				deliver()
			}
		}
		close(outcomes)
		counts := tally(outcomes)
		if counts[payments.OutcomeApplied] != 1 || counts[payments.OutcomeDuplicate] != 19 {
			t.Fatalf("outcomes %v", counts)
		}
		if st, bal, _ := f.state(p); st != payment.StatusSucceeded || bal != 100 {
			t.Fatalf("status %s, balance %d", st, bal)
		}
		f.checkLedger()
	})
}

func TestCompletedAndAsyncSucceededRaceCreditOnce(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newFixture(t, db)
		p := f.pendingPayment()
		var wg sync.WaitGroup
		for i := range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				typ, status := "checkout.session.completed", "paid"
				if i%2 == 1 {
					typ, status = "checkout.session.async_payment_succeeded", "paid"
				}
				if _, err := f.deliver(fmt.Sprintf("evt_%d", i), typ, session(p, status)); err != nil {
					t.Errorf("delivery %d: %v", i, err)
				}
			}()
		}
		wg.Wait()
		if st, bal, _ := f.state(p); st != payment.StatusSucceeded || bal != 100 {
			t.Fatalf("status %s, balance %d", st, bal)
		}
		applied := db.Ent.ProcessedEvent.Query().Where(processedevent.OutcomeEQ(processedevent.OutcomeApplied)).CountX(context.Background())
		if applied != 1 {
			t.Fatalf("%d events applied, want 1", applied)
		}
		f.checkLedger()
	})
}

func TestEventsThatDoNotMatch(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newFixture(t, db)
		p := f.pendingPayment()
		cases := []struct {
			name, typ string
			object    map[string]any
			outcome   string
		}{
			{"unknown session", "checkout.session.completed", map[string]any{"id": "cs_other", "object": "checkout.session", "client_reference_id": "pay_nope", "payment_status": "paid"}, payments.OutcomeFailed},
			{"amount mismatch", "checkout.session.completed", func() map[string]any { s := session(p, "paid"); s["amount_total"] = 1; return s }(), payments.OutcomeFailed},
			{"currency mismatch", "checkout.session.completed", func() map[string]any { s := session(p, "paid"); s["currency"] = "eur"; return s }(), payments.OutcomeFailed},
			{"user mismatch", "checkout.session.completed", func() map[string]any {
				s := session(p, "paid")
				s["metadata"] = map[string]string{"user_id": "usr_someone_else"}
				return s
			}(), payments.OutcomeFailed},
			{"unhandled type", "customer.created", map[string]any{"id": "cus_1", "object": "customer"}, payments.OutcomeIgnored},
			// Found by FuzzStripeEvents: a charge or dispute that names no
			// payment intent and no charge can never match a payment, and
			// was deferred (a 500) on every delivery.
			{"a refund naming nothing", "charge.refunded", map[string]any{"object": "charge", "amount_refunded": 1}, payments.OutcomeFailed},
			{"a dispute naming nothing", "charge.dispute.created", map[string]any{"id": "dp_1", "object": "dispute"}, payments.OutcomeFailed},
		}
		for i, c := range cases {
			out, err := f.deliver(fmt.Sprintf("evt_m%d", i), c.typ, c.object)
			if err != nil || out != c.outcome {
				t.Errorf("%s: outcome %q, error %v; want %q", c.name, out, err, c.outcome)
			}
		}
		if st, bal, _ := f.state(p); st != payment.StatusPending || bal != 0 {
			t.Fatalf("a mismatched event changed the payment: %s, %d", st, bal)
		}
		recorded := db.Ent.ProcessedEvent.Query().Where(processedevent.OutcomeEQ(processedevent.OutcomeFailed)).AllX(context.Background())
		if len(recorded) != 6 || recorded[0].Error == "" {
			t.Fatalf("mismatches recorded for admins: %+v", recorded)
		}
	})
}

// A deferred event redelivered many times at once, once its payment is
// there, is applied by exactly one delivery: each completes the deferred
// record only if it is still deferred, and the others find it decided.
func TestDeferredEventRedeliveredConcurrentlyAppliesOnce(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newFixture(t, db)
		ctx := context.Background()
		p := f.paidAfterAnEarlyRefund()
		var wg sync.WaitGroup
		outcomes := make(chan string, 10)
		for i := range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out, err := f.deliver("evt_r_early", "charge.refunded", charge(p, 300))
				if err != nil {
					t.Errorf("redelivery %d: %v", i, err)
				}
				outcomes <- out
			}()
		}
		wg.Wait()
		close(outcomes)
		counts := tally(outcomes)
		if counts[payments.OutcomeApplied] != 1 || counts[payments.OutcomeDuplicate] != 9 {
			t.Fatalf("outcomes %v", counts)
		}
		if st, bal, refunded := f.state(p); st != payment.StatusPartiallyRefunded || bal != 70 || refunded != 300 {
			t.Fatalf("after the refund: %s, balance %d, refunded %d", st, bal, refunded)
		}
		rec := db.Ent.ProcessedEvent.Query().Where(processedevent.StripeEventID("evt_r_early")).OnlyX(ctx)
		if rec.Outcome != processedevent.OutcomeApplied || rec.Attempts < 2 {
			t.Fatalf("record %s after %d attempts", rec.Outcome, rec.Attempts)
		}
		f.checkLedger()
	})
}

func TestRefundsAndDebt(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newFixture(t, db)
		// A refund before the payment waits: Stripe delivers it again.
		p := f.inDebt()
		// 30 of 100 credits clawed back; 10 were unspent, 20 become a debt.
		if st, bal, refunded := f.state(p); st != payment.StatusPartiallyRefunded || bal != -20 || refunded != 300 {
			t.Fatalf("after a partial refund: %s, balance %d, refunded %d", st, bal, refunded)
		}
		// An older cumulative total arriving late changes nothing.
		if out, _ := f.deliver("evt_r_old", "charge.refunded", charge(p, 100)); out != payments.OutcomeIgnored {
			t.Fatalf("older refund total: %q", out)
		}
		// More than the payment: not Stripe's, refused, and nothing changes.
		if out, err := f.deliver("evt_r_over", "charge.refunded", charge(p, 5000)); err != nil || out != payments.OutcomeFailed {
			t.Fatalf("refund beyond the payment: %q %v", out, err)
		}
		if st, bal, refunded := f.state(p); st != payment.StatusPartiallyRefunded || bal != -20 || refunded != 300 {
			t.Fatalf("after a refused over-refund: %s, balance %d, refunded %d", st, bal, refunded)
		}
		f.deliver("evt_r_all", "charge.refunded", charge(p, 1000))
		if st, bal, refunded := f.state(p); st != payment.StatusRefunded || bal != -90 || refunded != 1000 {
			t.Fatalf("after a full refund: %s, balance %d, refunded %d", st, bal, refunded)
		}
		f.checkLedger()
	})
}

// lifecycle is the full set of one payment's events in the permutation test.
func lifecycle(p *ent.Payment, disputeOutcome string) []struct {
	id, typ string
	object  map[string]any
} {
	return []struct {
		id, typ string
		object  map[string]any
	}{
		{"evt_completed_" + p.ID, "checkout.session.completed", session(p, "unpaid")},
		{"evt_async_" + p.ID, "checkout.session.async_payment_succeeded", session(p, "paid")},
		{"evt_partial_" + p.ID, "charge.refunded", charge(p, 300)},
		{"evt_full_" + p.ID, "charge.refunded", charge(p, 1000)},
		{"evt_dispute_" + p.ID, "charge.dispute.created", dispute(p, "needs_response")},
		{"evt_closed_" + p.ID, "charge.dispute.closed", dispute(p, disputeOutcome)},
	}
}

func permutations(n int) [][]int {
	var out [][]int
	var rec func([]int, []bool)
	rec = func(cur []int, used []bool) {
		if len(cur) == n {
			out = append(out, append([]int(nil), cur...))
			return
		}
		for i := range n {
			if !used[i] {
				used[i] = true
				rec(append(cur, i), used)
				used[i] = false
			}
		}
	}
	rec(nil, make([]bool, n))
	return out
}

// TestEveryOrderConverges delivers a payment's lifecycle events in every
// order (deferred ones redelivered, as Stripe does, until none is left);
// every order must end in the same status and balance. All 720 orders of
// the six events run for a lost dispute; the other cases run a sample of
// their orders (every step-th) to keep the suite fast.
func TestEveryOrderConverges(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newFixture(t, db)
		for _, c := range []struct {
			outcome     string
			fullRefund  bool
			step        int
			wantStatus  payment.Status
			wantBalance int64
		}{
			{"lost", true, 1, payment.StatusChargedBack, 0},
			{"won", true, 5, payment.StatusRefunded, 0},
			{"won", false, 2, payment.StatusPartiallyRefunded, 70},
			{"lost", false, 2, payment.StatusChargedBack, 0},
		} {
			all := permutations(5)
			if c.fullRefund {
				all = permutations(6)
			}
			step := c.step
			if testing.Short() {
				step = max(step, 30)
			}
			var orders [][]int
			for i := 0; i < len(all); i += step {
				orders = append(orders, all[i])
			}
			// Payments are made up front: the fixture is not safe for
			// concurrent use, the deliveries below are.
			ps := make([]*ent.Payment, len(orders))
			for i := range ps {
				ps[i] = f.pendingPayment()
			}
			type end struct {
				status  payment.Status
				balance int64
			}
			ends := make([]end, len(orders))
			var wg sync.WaitGroup
			work := make(chan int)
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range work {
						ends[i] = f.runOrder(ps[i], c.outcome, c.fullRefund, orders[i])
					}
				}()
			}
			for i := range orders {
				work <- i
			}
			close(work)
			wg.Wait()
			for i, got := range ends {
				if got.status != c.wantStatus || got.balance != c.wantBalance {
					t.Fatalf("dispute %s (full refund %v), order %v: ended %s with %d credits, want %s and %d",
						c.outcome, c.fullRefund, orders[i], got.status, got.balance, c.wantStatus, c.wantBalance)
				}
			}
			t.Logf("dispute %s, full refund %v: %d orders all end %s with %d credits",
				c.outcome, c.fullRefund, len(orders), c.wantStatus, c.wantBalance)
		}
		f.checkLedger()
	})
}

// runOrder delivers one payment's events in the given order, redelivering
// the deferred ones until all are applied, and returns where it ended.
func (f *fixture) runOrder(p *ent.Payment, outcome string, fullRefund bool, order []int) struct {
	status  payment.Status
	balance int64
} {
	events := lifecycle(p, outcome)
	if !fullRefund {
		events = append(events[:3], events[4:]...)
	}
	pending := append([]int(nil), order...)
	for round := 0; len(pending) > 0; round++ {
		if round > len(events) {
			f.t.Errorf("order %v (%s): events %v never applied", order, outcome, pending)
			break
		}
		var again []int
		for _, i := range pending {
			e := events[i]
			if _, err := f.deliver(e.id, e.typ, e.object); err != nil {
				again = append(again, i)
			}
		}
		pending = again
	}
	got := f.db.Ent.Payment.GetX(context.Background(), p.ID)
	u := f.db.Ent.User.GetX(context.Background(), p.UserID)
	return struct {
		status  payment.Status
		balance int64
	}{got.Status, u.CreditsBalance}
}

func TestAsyncFailureAndExpiry(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newFixture(t, db)
		failedPay, expiredPay := f.pendingPayment(), f.pendingPayment()

		f.deliver("evt_unpaid", "checkout.session.completed", session(failedPay, "unpaid"))
		if st, bal, _ := f.state(failedPay); st != payment.StatusAwaitingPayment || bal != 0 {
			t.Fatalf("completed unpaid: %s, %d", st, bal)
		}
		if out, err := f.deliver("evt_failed", "checkout.session.async_payment_failed", session(failedPay, "unpaid")); err != nil || out != payments.OutcomeApplied {
			t.Fatalf("async failure: %q %v", out, err)
		}
		// A success reported after the failure is an illegal transition:
		// recorded, not applied.
		if out, _ := f.deliver("evt_late_ok", "checkout.session.async_payment_succeeded", session(failedPay, "paid")); out != payments.OutcomeIgnored {
			t.Fatalf("success after failure: %q", out)
		}
		if st, bal, _ := f.state(failedPay); st != payment.StatusFailed || bal != 0 {
			t.Fatalf("after the failure: %s, %d", st, bal)
		}

		if out, err := f.deliver("evt_expired", "checkout.session.expired", session(expiredPay, "unpaid")); err != nil || out != payments.OutcomeApplied {
			t.Fatalf("expiry: %q %v", out, err)
		}
		if st, bal, _ := f.state(expiredPay); st != payment.StatusExpired || bal != 0 {
			t.Fatalf("after expiry: %s, %d", st, bal)
		}
		// An expiry after a payment succeeded changes nothing.
		paid := f.pendingPayment()
		f.deliver("evt_paid", "checkout.session.completed", session(paid, "paid"))
		if out, _ := f.deliver("evt_exp_late", "checkout.session.expired", session(paid, "unpaid")); out != payments.OutcomeIgnored {
			t.Fatalf("expiry after payment: %q", out)
		}
		if st, bal, _ := f.state(paid); st != payment.StatusSucceeded || bal != 100 {
			t.Fatalf("paid then expired: %s, %d", st, bal)
		}
		f.checkLedger()
	})
}

// Found by FuzzStripeEvents: a refunded charge without an id was applied
// and its "" stored as the payment's charge; the charge id is unique, so
// the next such refund of another payment failed on the index (a 500 on
// every delivery). A charge without an id, or another charge than the one
// recorded, is refused and changes nothing.
func TestRefundOfAChargeThatIsNotThePayments(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newFixture(t, db)
		pay := func() *ent.Payment {
			p := f.pendingPayment()
			if out, err := f.deliver("evt_paid_"+p.ID, "checkout.session.completed", session(p, "paid")); err != nil || out != payments.OutcomeApplied {
				t.Fatalf("paying: %q %v", out, err)
			}
			return p
		}
		a, b := pay(), pay()
		noID := func(p *ent.Payment) map[string]any { c := charge(p, 300); delete(c, "id"); return c }
		for i, p := range []*ent.Payment{a, b} {
			if out, err := f.deliver(fmt.Sprintf("evt_noid_%d", i), "charge.refunded", noID(p)); err != nil || out != payments.OutcomeFailed {
				t.Fatalf("a charge without an id: %q %v; want failed", out, err)
			}
			if st, bal, refunded := f.state(p); st != payment.StatusSucceeded || bal != 100 || refunded != 0 {
				t.Fatalf("a refused refund changed the payment: %s, balance %d, refunded %d", st, bal, refunded)
			}
		}
		if out, err := f.deliver("evt_r_a", "charge.refunded", charge(a, 300)); err != nil || out != payments.OutcomeApplied {
			t.Fatalf("the payment's own charge: %q %v", out, err)
		}
		other := charge(a, 1000)
		other["id"] = "ch_another"
		if out, err := f.deliver("evt_r_other", "charge.refunded", other); err != nil || out != payments.OutcomeFailed {
			t.Fatalf("another charge of the same intent: %q %v; want failed", out, err)
		}
		if st, bal, refunded := f.state(a); st != payment.StatusPartiallyRefunded || bal != 70 || refunded != 300 {
			t.Fatalf("after refusing another charge: %s, balance %d, refunded %d", st, bal, refunded)
		}
		f.checkLedger()
	})
}
