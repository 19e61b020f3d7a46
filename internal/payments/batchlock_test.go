package payments_test

import (
	"context"
	"testing"

	"entgo.io/ent/dialect"

	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/ledger/ledgertest"
	"github.com/tally-billing/tally/internal/payments"
	"github.com/tally-billing/tally/internal/testdb"
)

// TestPurchaseThatWaitedForTheLockSeesWhatTheHolderWrote: on PostgreSQL a
// batch of purchases locks its users and reads their payments in one
// statement. A purchase that waits there while another transaction holds
// the user and fails the payment (as an async_payment_failed applied
// meanwhile would) must decide on the failed payment: no credits, and the
// payment stays failed.
func TestPurchaseThatWaitedForTheLockSeesWhatTheHolderWrote(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		if db.Dialect != dialect.Postgres {
			t.Skip("SQLite's writers take the database's lock before they read anything")
		}
		f := newFixture(t, db)
		p := f.pendingPayment()
		ctx := context.Background()
		pids := make(chan int, 1)
		release := make(chan struct{})
		held := make(chan error, 1)
		go func() {
			first := true
			held <- f.l.Within(ctx, func(ctx context.Context, tx *ledger.Tx) error {
				if _, err := tx.LockUser(ctx, p.UserID); err != nil {
					return err
				}
				if first {
					first = false
					var pid int
					if err := tx.SQL().QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
						return err
					}
					pids <- pid
					<-release
				}
				return tx.Ent().Payment.UpdateOneID(p.ID).SetStatus(payment.StatusFailed).Exec(ctx)
			})
		}()
		holder := <-pids
		type result struct {
			outcome string
			err     error
		}
		delivered := make(chan result, 1)
		go func() {
			out, err := f.deliver("evt_paid_late", "checkout.session.completed", session(p, "paid"))
			delivered <- result{out, err}
		}()
		ledgertest.WaitUntilBlockedBy(t, db, holder)
		close(release)
		if err := <-held; err != nil {
			t.Fatalf("the lock holder: %v", err)
		}
		got := <-delivered
		if got.err != nil || got.outcome != payments.OutcomeIgnored {
			t.Fatalf("purchase of a payment failed meanwhile: %q %v, want %q", got.outcome, got.err, payments.OutcomeIgnored)
		}
		if status, balance, _ := f.state(p); status != payment.StatusFailed || balance != 0 {
			t.Fatalf("payment %s, balance %d; want FAILED and 0", status, balance)
		}
		f.checkLedger()
	})
}
