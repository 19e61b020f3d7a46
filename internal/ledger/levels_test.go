package ledger_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/testdb"
)

// balanceCheckingWriter is an EventWriter that reads, in the event's own
// transaction, the balance the event carries, and records any difference.
type balanceCheckingWriter struct {
	mu     sync.Mutex
	events map[string][]string
	wrong  []string
}

func (w *balanceCheckingWriter) WriteEvents(ctx context.Context, t *ledger.Tx, events []ledger.Event) error {
	for _, ev := range events {
		read, err := t.Balances(ctx, []string{ev.User.ID})
		if err != nil {
			return err
		}
		w.mu.Lock()
		w.events[ev.User.ExternalID] = append(w.events[ev.User.ExternalID], ev.Type)
		if got, want := ev.Balance, read[ev.User.ID]; got == nil || got.Balance != want.Balance ||
			got.Reserved != want.Reserved || got.Available != want.Available {
			w.wrong = append(w.wrong, fmt.Sprintf("%s %s: carries %+v, the transaction reads %+v", ev.User.ExternalID, ev.Type, got, want))
		}
		w.mu.Unlock()
	}
	return nil
}

// TestCoalescedSpendsTellTheBalanceTheyLeave: spends work out the balance
// they leave, for the levels and the recharges, instead of reading it. With
// a reservation open and an expired lot still counted in the balance (the
// two ways balance and available differ), concurrent spends coalesced
// into batches each cross the threshold once, and every event carries what
// a read in its transaction finds.
func TestCoalescedSpendsTellTheBalanceTheyLeave(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		w := &balanceCheckingWriter{events: map[string][]string{}}
		e := newEnv(t, db)
		e.l = ledger.New(db, ledger.WithClock(e.clock.Now), ledger.WithEvents(w, 1000))
		ctx := context.Background()
		const users, spendsEach = 6, 5
		ids := make([]string, users)
		day := int64(24 * 60 * 60)
		for i := range ids {
			u := e.user(fmt.Sprint("spender-", i))
			ids[i] = u.ID
			soon := e.clock.Now().Add(time.Hour)
			if _, err := e.l.Grant(ctx, admin, ledger.GrantRequest{UserID: u.ID, Amount: 1000, ExpiresAt: &soon, IdempotencyKey: e.key()}); err != nil {
				t.Fatal(err)
			}
			e.grant(u.ID, 1500)
			if _, err := e.l.Reserve(ctx, service, ledger.ReserveRequest{UserID: u.ID, Amount: 1200, TTLSeconds: &day, IdempotencyKey: e.key()}); err != nil {
				t.Fatal(err)
			}
		}
		// The first lot has expired but is still in the balance: 2,500,
		// of which 1,200 reserved and 1,300 available (the balance less the
		// reservation; the unexpired lot holds 1,500).
		e.clock.Advance(2 * time.Hour)
		var wg sync.WaitGroup
		errs := make(chan error, users*spendsEach)
		for i, id := range ids {
			for j := range spendsEach {
				wg.Go(func() {
					_, err := e.l.Spend(ctx, service, ledger.SpendRequest{UserID: id, Amount: 100, IdempotencyKey: fmt.Sprintf("s-%d-%d", i, j)})
					errs <- err
				})
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, wrong := range w.wrong {
			t.Error(wrong)
		}
		// 1,300 available less 500 is 800: below 1,000, crossed once.
		for i := range ids {
			if got := w.events[fmt.Sprint("spender-", i)]; len(got) != 1 || got[0] != ledger.EventBalanceLow {
				t.Errorf("spender-%d: events %v, want one %s", i, got, ledger.EventBalanceLow)
			}
		}
		for _, id := range ids {
			b, err := e.l.Balance(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if b.Balance != 2000 || b.Reserved != 1200 || b.Available != 800 {
				t.Errorf("%s: %+v, want balance 2000, 1200 reserved, 800 available", id, b)
			}
		}
	})
}
