package payments_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/ent/processedevent"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/ledger/ledgertest"
	"github.com/tally-billing/tally/internal/payments"
	"github.com/tally-billing/tally/internal/testdb"
	"github.com/tally-billing/tally/internal/testwait"
)

// pendingPaymentOf is pendingPayment for an existing user.
func (f *fixture) pendingPaymentOf(userID string) *ent.Payment {
	f.t.Helper()
	ctx := context.Background()
	f.n++
	pkg := f.db.Ent.CreditPackage.Create().SetName(fmt.Sprintf("pack-%d", f.n)).SetCredits(100).
		SetPriceAmount(1000).SetCurrency("usd").SaveX(ctx)
	return f.db.Ent.Payment.Create().SetUserID(userID).SetPackageID(pkg.ID).SetAmount(1000).
		SetCurrency("usd").SetCredits(100).SetStripeCheckoutSessionID(fmt.Sprintf("cs_%s_%d", userID, f.n)).SaveX(ctx)
}

// occupyPurchaseSlots fills every purchase batch slot with a payment whose
// user is locked by a transaction of its own, so that the events delivered
// next queue and then run together. release lets everything go and waits
// for the occupying deliveries.
func (f *fixture) occupyPurchaseSlots() (release func()) {
	f.t.Helper()
	var held []*ent.Payment
	var userIDs []string
	for range payments.MaxPurchaseBatchesInFlight {
		p := f.pendingPayment()
		held, userIDs = append(held, p), append(userIDs, p.UserID)
	}
	releaseUsers := ledgertest.HoldUsers(f.t, f.l, userIDs...)
	var deliveries sync.WaitGroup
	for _, p := range held {
		deliveries.Add(1)
		go func() {
			defer deliveries.Done()
			if out, err := f.deliver("evt_held_"+p.ID, "checkout.session.completed", session(p, "paid")); err != nil || out != payments.OutcomeApplied {
				f.t.Errorf("held purchase: %q %v", out, err)
			}
		}()
	}
	f.waitFor("every batch slot taken", func() bool {
		return payments.PurchaseBatchesRunning(f.svc) == payments.MaxPurchaseBatchesInFlight
	})
	return func() {
		releaseUsers()
		deliveries.Wait()
	}
}

func (f *fixture) waitFor(what string, cond func() bool) {
	f.t.Helper()
	testwait.Until(f.t, what, cond)
}

// TestConcurrentPurchasesShareTransactionsAndApplyOnce: Checkout Session
// events that arrive together are applied in shared transactions, and each
// is still applied exactly once, whatever the batch holds: duplicates of its
// events, two payments of one user, a buyer in debt (who repays it first),
// and events that do not apply (an unpaid session, a mismatched amount).
func TestConcurrentPurchasesShareTransactionsAndApplyOnce(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newFixture(t, db)
		ctx := context.Background()
		debtor := f.inDebt()
		if _, bal, _ := f.state(debtor); bal != -20 {
			t.Fatalf("debtor's balance %d, want -20", bal)
		}

		type delivery struct {
			p       *ent.Payment
			id      string
			object  map[string]any
			outcome string // of the first of its deliveries to be applied
			status  payment.Status
		}
		var events []*delivery
		paid := func(p *ent.Payment) {
			events = append(events, &delivery{p: p, id: "evt_" + p.ID, object: session(p, "paid"),
				outcome: payments.OutcomeApplied, status: payment.StatusSucceeded})
		}
		for i := range 12 {
			p := f.pendingPayment()
			paid(p)
			if i%4 == 0 {
				paid(f.pendingPaymentOf(p.UserID))
			}
		}
		// A session without a payment intent (no payment required) leaves
		// the payment's unset, next to sessions that set theirs.
		delete(events[3].object, "payment_intent")
		paid(f.pendingPaymentOf(debtor.UserID))
		unpaid := f.pendingPayment()
		events = append(events, &delivery{p: unpaid, id: "evt_unpaid", object: session(unpaid, "unpaid"),
			outcome: payments.OutcomeApplied, status: payment.StatusAwaitingPayment})
		wrong := f.pendingPayment()
		wrongAmount := session(wrong, "paid")
		wrongAmount["amount_total"] = 1
		events = append(events, &delivery{p: wrong, id: "evt_wrong", object: wrongAmount,
			outcome: payments.OutcomeFailed, status: payment.StatusPending})

		release := f.occupyPurchaseSlots()
		before := f.l.Stats()
		const copies = 2
		var wg sync.WaitGroup
		outcomes := make(map[string]chan string, len(events))
		for _, e := range events {
			// Taken here, not read from the map in the goroutines, which
			// would race with this loop's writes of the next events.
			delivered := make(chan string, copies)
			outcomes[e.id] = delivered
			for range copies {
				wg.Add(1)
				go func() {
					defer wg.Done()
					out, err := f.deliver(e.id, "checkout.session.completed", e.object)
					if err != nil {
						t.Errorf("%s: %v", e.id, err)
					}
					delivered <- out
				}()
			}
		}
		f.waitFor("every delivery queued", func() bool { return payments.QueuedPurchases(f.svc) == copies*len(events) })
		release()
		wg.Wait()

		// The holder's transaction and the four it held; then one batch
		// for the first delivery of every event, and one transaction for
		// each user's second payment, which that batch leaves for later;
		// the second deliveries are answered from the records. One by one,
		// every event would take a transaction of its own.
		users := map[string]int{}
		for _, e := range events {
			users[e.p.UserID]++
		}
		want := uint64(1 + payments.MaxPurchaseBatchesInFlight + 1)
		for _, n := range users {
			want += uint64(n - 1)
		}
		if got := f.l.Stats().Transactions - before.Transactions; got != want {
			t.Errorf("%d transactions for %d deliveries of %d events, want %d", got, copies*len(events), len(events), want)
		}
		for _, e := range events {
			close(outcomes[e.id])
			counts := tally(outcomes[e.id])
			if counts[e.outcome] != 1 || counts[payments.OutcomeDuplicate] != copies-1 {
				t.Errorf("%s: outcomes %v, want one %s and the rest duplicates", e.id, counts, e.outcome)
			}
			got := db.Ent.Payment.GetX(ctx, e.p.ID)
			if got.Status != e.status {
				t.Errorf("%s: payment %s, want %s", e.id, got.Status, e.status)
			}
			if e.status != payment.StatusPending {
				wantIntent, gotIntent := "", ""
				if e.object["payment_intent"] != nil {
					wantIntent = "pi_" + e.p.ID
				}
				if got.StripePaymentIntentID != nil {
					gotIntent = *got.StripePaymentIntentID
				}
				if gotIntent != wantIntent || *got.StripeCheckoutSessionID != *e.p.StripeCheckoutSessionID ||
					(got.PaidAt != nil) != (e.status == payment.StatusSucceeded) {
					t.Errorf("%s: session %s, intent %q, paid at %v", e.id, *got.StripeCheckoutSessionID, gotIntent, got.PaidAt)
				}
			}
			rec := db.Ent.ProcessedEvent.Query().Where(processedevent.StripeEventID(e.id)).OnlyX(ctx)
			if string(rec.Outcome) != map[string]string{payments.OutcomeApplied: "APPLIED", payments.OutcomeFailed: "FAILED"}[e.outcome] ||
				rec.PaymentID == nil || *rec.PaymentID != e.p.ID {
				t.Errorf("%s: recorded %s for %v", e.id, rec.Outcome, rec.PaymentID)
			}
		}
		balances := map[string]int64{}
		for _, e := range events {
			if e.status == payment.StatusSucceeded {
				balances[e.p.UserID] += 100
			}
		}
		balances[debtor.UserID] -= 20 // repaid from the new credits
		for userID, balance := range balances {
			if got := db.Ent.User.GetX(ctx, userID).CreditsBalance; got != balance {
				t.Errorf("user %s: balance %d, want %d", userID, got, balance)
			}
		}
		f.checkLedger()
	})
}

// TestBatchWithAKnownGrantKeyFallsBackToOneByOne: a batch that meets a
// grant key already recorded (state a crash or a bug could leave) does not
// fail its other events, and does not grant that payment twice: the events
// are applied one by one, where the known key is replayed.
func TestBatchWithAKnownGrantKeyFallsBackToOneByOne(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newFixture(t, db)
		ctx := context.Background()
		known, other := f.pendingPayment(), f.pendingPayment()
		if _, err := f.l.Grant(ctx, ledger.Actor{Kind: ledger.ActorStripe, ID: "webhook"}, ledger.GrantRequest{
			UserID: known.UserID, Amount: known.Credits, Purchase: true, PaymentID: &known.ID,
			Reason: "purchase", IdempotencyKey: "payment:" + known.ID + ":grant",
		}); err != nil {
			t.Fatal(err)
		}
		release := f.occupyPurchaseSlots()
		var wg sync.WaitGroup
		for _, p := range []*ent.Payment{known, other} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if out, err := f.deliver("evt_"+p.ID, "checkout.session.completed", session(p, "paid")); err != nil || out != payments.OutcomeApplied {
					t.Errorf("%s: %q %v", p.ID, out, err)
				}
			}()
		}
		f.waitFor("both deliveries queued", func() bool { return payments.QueuedPurchases(f.svc) == 2 })
		release()
		wg.Wait()
		for _, p := range []*ent.Payment{known, other} {
			if st, bal, _ := f.state(p); st != payment.StatusSucceeded || bal != 100 {
				t.Errorf("%s: %s, balance %d; want SUCCEEDED with 100", p.ID, st, bal)
			}
		}
		f.checkLedger()
	})
}

// TestReplicasDeliveredTheSameEventsApplyEachOnce: two replicas (each with
// its own ledger and batcher) receive the same burst of Checkout Session
// events at once, as when Stripe retries against a load balancer; each
// event is applied once, by one of them, and the other answers duplicate.
func TestReplicasDeliveredTheSameEventsApplyEachOnce(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newFixture(t, db)
		ctx := context.Background()
		replica := payments.New(db, ledger.New(db), payments.Config{})
		var ps []*ent.Payment
		for range 20 {
			ps = append(ps, f.pendingPayment())
		}
		var wg sync.WaitGroup
		outcomes := make(map[string]chan string, len(ps))
		for _, p := range ps {
			// Each goroutine sends on its own payment's channel, taken here:
			// reading the map in the goroutines would race with this loop's
			// writes of the next payments' channels.
			delivered := make(chan string, 2)
			outcomes[p.ID] = delivered
			for _, svc := range []*payments.Service{f.svc, replica} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ev, raw := event("evt_"+p.ID, "checkout.session.completed", session(p, "paid"))
					out, err := svc.HandleEvent(ctx, ev, raw)
					if err != nil {
						t.Errorf("%s: %v", p.ID, err)
					}
					delivered <- out
				}()
			}
		}
		wg.Wait()
		for _, p := range ps {
			close(outcomes[p.ID])
			if counts := tally(outcomes[p.ID]); counts[payments.OutcomeApplied] != 1 || counts[payments.OutcomeDuplicate] != 1 {
				t.Errorf("%s: outcomes %v", p.ID, counts)
			}
			if st, bal, _ := f.state(p); st != payment.StatusSucceeded || bal != 100 {
				t.Errorf("%s: %s, balance %d", p.ID, st, bal)
			}
		}
		f.checkLedger()
	})
}

// TestStrictSessionChecksInABatchAndAlone: a Checkout Session event without
// the payment's amount_total or currency (zero, empty or missing) is refused
// by decideSession, which both paths run: in a batch, and alone, where the
// batch leaves the second payment of a user it already holds. Nothing is
// granted for them; the events ahead of them in the batch still apply.
func TestStrictSessionChecksInABatchAndAlone(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newFixture(t, db)
		ctx := context.Background()
		type delivery struct {
			p         *ent.Payment
			id, want  string
			object    map[string]any
			delivered chan string
		}
		var queue []*delivery
		add := func(p *ent.Payment, id, want string, object map[string]any) {
			queue = append(queue, &delivery{p: p, id: id, want: want, object: object, delivered: make(chan string, 1)})
		}
		edits := []func(map[string]any){
			func(s map[string]any) { s["amount_total"] = 0 },
			func(s map[string]any) { delete(s, "amount_total") },
			func(s map[string]any) { s["currency"] = "" },
			func(s map[string]any) { delete(s, "currency") },
		}
		var alone []*delivery
		for i, edit := range edits {
			batched := f.pendingPayment()
			s := session(batched, "paid")
			edit(s)
			add(batched, fmt.Sprint("evt_batched_", i), payments.OutcomeFailed, s)

			ahead := f.pendingPayment()
			add(ahead, fmt.Sprint("evt_ahead_", i), payments.OutcomeApplied, session(ahead, "paid"))
			second := f.pendingPaymentOf(ahead.UserID)
			s = session(second, "paid")
			edit(s)
			alone = append(alone, &delivery{p: second, id: fmt.Sprint("evt_alone_", i), want: payments.OutcomeFailed,
				object: s, delivered: make(chan string, 1)})
		}
		queue = append(queue, alone...)
		for _, d := range queue {
			// As stored: PostgreSQL keeps microseconds of updated_at.
			d.p = db.Ent.Payment.GetX(ctx, d.p.ID)
		}

		release := f.occupyPurchaseSlots()
		before := f.l.Stats()
		var wg sync.WaitGroup
		for n, d := range queue {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out, err := f.deliver(d.id, "checkout.session.completed", d.object)
				if err != nil {
					t.Errorf("%s: %v", d.id, err)
				}
				d.delivered <- out
			}()
			// One at a time, so that the batch takes them in this order and
			// each second payment of a user comes after its first.
			f.waitFor("queued in order", func() bool { return payments.QueuedPurchases(f.svc) == n+1 })
		}
		release()
		wg.Wait()

		// The holder's transaction and the ones it held, one batch, then
		// one transaction for each event the batch left to run alone.
		want := uint64(1+payments.MaxPurchaseBatchesInFlight+1) + uint64(len(alone))
		if got := f.l.Stats().Transactions - before.Transactions; got != want {
			t.Errorf("%d transactions, want %d: the refused events did not run where this test means them to", got, want)
		}
		for _, d := range queue {
			out := <-d.delivered
			st, bal, _ := f.state(d.p)
			rec := db.Ent.ProcessedEvent.Query().Where(processedevent.StripeEventID(d.id)).OnlyX(ctx)
			if d.want == payments.OutcomeApplied {
				if out != d.want || st != payment.StatusSucceeded || bal < 100 {
					t.Errorf("%s: %q, payment %s, balance %d", d.id, out, st, bal)
				}
				continue
			}
			got := db.Ent.Payment.GetX(ctx, d.p.ID)
			if out != d.want || rec.Outcome != processedevent.OutcomeFailed || st != payment.StatusPending ||
				got.PaidAt != nil || got.StripePaymentIntentID != nil || !got.UpdatedAt.Equal(d.p.UpdatedAt) {
				t.Errorf("%s: %q, recorded %s (%s), payment %s, paid at %v, intent set %v", d.id, out, rec.Outcome, rec.Error, st, got.PaidAt, got.StripePaymentIntentID != nil)
			}
		}
		for _, d := range alone {
			if _, bal, _ := f.state(d.p); bal != 100 {
				t.Errorf("%s: the buyer has %d credits, want the 100 of their first payment only", d.id, bal)
			}
		}
		f.checkLedger()
	})
}
