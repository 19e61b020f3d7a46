package payments_test

import (
	"errors"
	"sync"
	"testing"

	"entgo.io/ent/dialect"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/ledger/ledgertest"
	"github.com/tally-billing/tally/internal/payments"
	"github.com/tally-billing/tally/internal/testdb"
)

// TestPurchaseBatchWithLostCommitAnswerIsNotRunAgain: a batch of Checkout
// Session events whose COMMIT lost its answer gives every event an
// UNAVAILABLE error with the outcome unknown (the webhook answers 503 and
// Stripe delivers it again), and its events are not applied again one by
// one; each was applied once, and its redelivery is a duplicate.
func TestPurchaseBatchWithLostCommitAnswerIsNotRunAgain(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		if db.Dialect != dialect.Postgres {
			t.Skip("SQLite runs in the process: no connection can drop between its COMMIT and the answer")
		}
		f := newFixture(t, db)
		proxied, proxy := testdb.Proxied(t, db)
		svc := payments.New(proxied, ledger.New(proxied), payments.Config{})

		type delivery struct {
			p   *ent.Payment
			out string
			err error
		}
		var held, batched []*delivery
		var userIDs []string
		for range payments.MaxPurchaseBatchesInFlight {
			p := f.pendingPayment()
			held, userIDs = append(held, &delivery{p: p}), append(userIDs, p.UserID)
		}
		release := ledgertest.HoldUsers(t, f.l, userIDs...)
		var wg sync.WaitGroup
		deliver := func(d *delivery) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ev, raw := event("evt_"+d.p.ID, "checkout.session.completed", session(d.p, "paid"))
				d.out, d.err = svc.HandleEvent(t.Context(), ev, raw)
			}()
		}
		for _, d := range held {
			deliver(d)
		}
		f.waitFor("every batch slot taken", func() bool {
			return payments.PurchaseBatchesRunning(svc) == payments.MaxPurchaseBatchesInFlight
		})
		for range 3 {
			d := &delivery{p: f.pendingPayment()}
			batched = append(batched, d)
			deliver(d)
		}
		f.waitFor("the events to queue", func() bool { return payments.QueuedPurchases(svc) == len(batched) })
		proxy.CutAtCommit()
		release()
		wg.Wait()

		all := append(held, batched...)
		for _, d := range all {
			if apperr.CodeOf(d.err) != apperr.Unavailable || !errors.Is(d.err, database.ErrOutcomeUnknown) {
				t.Fatalf("event of %s: %q, %v; want UNAVAILABLE with the outcome unknown", d.p.ID, d.out, d.err)
			}
		}
		if want := payments.MaxPurchaseBatchesInFlight + 1; proxy.Commits() != want {
			t.Fatalf("%d COMMITs reached the database, want %d: the batch whose outcome was unknown ran again", proxy.Commits(), want)
		}
		proxy.Pass()
		for _, d := range all {
			if status, balance, _ := f.state(d.p); status != payment.StatusSucceeded || balance != 100 {
				t.Fatalf("payment %s: %s with balance %d; want SUCCEEDED with 100 (applied once)", d.p.ID, status, balance)
			}
			ev, raw := event("evt_"+d.p.ID, "checkout.session.completed", session(d.p, "paid"))
			if out, err := svc.HandleEvent(t.Context(), ev, raw); err != nil || out != payments.OutcomeDuplicate {
				t.Fatalf("redelivery for %s: %q, %v; want a duplicate", d.p.ID, out, err)
			}
		}
		f.checkLedger()
	})
}
