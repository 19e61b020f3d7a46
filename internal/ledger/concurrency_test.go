package ledger_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/testdb"
)

// replicas returns two ledgers on the same database through separate
// connection pools, as two server processes would have.
func replicas(t *testing.T, db *database.DB) [2]*ledger.Service {
	other := testdb.Open(t, db.URL)
	return [2]*ledger.Service{ledger.New(db), ledger.New(other)}
}

// TestConcurrentSpendsNeverOverdraw: 60 goroutines (more than either pool's
// connections) spend 10 credits each from one account holding 250, through
// two replicas. Exactly 25 may succeed; the rest are refused cleanly.
func TestConcurrentSpendsNeverOverdraw(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		u := e.user("alice")
		e.grant(u.ID, 250)
		ledgers := replicas(t, db)

		const workers = 60
		var wg sync.WaitGroup
		results := make(chan error, workers)
		for i := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := ledgers[i%2].Spend(ctx, service, ledger.SpendRequest{
					UserID: u.ID, Amount: 10, IdempotencyKey: fmt.Sprintf("spend-%d", i),
				})
				results <- err
			}()
		}
		wg.Wait()
		close(results)
		ok, short := 0, 0
		for err := range results {
			if err == nil {
				ok++
			} else if apperr.CodeOf(err) == apperr.InsufficientCredits {
				short++
			} else {
				t.Errorf("unexpected error: %v", err)
			}
		}
		if ok != 25 || short != workers-25 {
			t.Fatalf("%d spends succeeded and %d were refused; want 25 and %d", ok, short, workers-25)
		}
		if b := e.balance(u.ID); b.Balance != 0 {
			t.Fatalf("balance %d after spending everything", b.Balance)
		}
		e.check()
	})
}

// TestConcurrentKeyReuse: 50 goroutines send the same request with one key
// at once, through two replicas: one effect, and every caller gets the same
// result.
func TestConcurrentKeyReuse(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		u := e.user("alice")
		e.grant(u.ID, 100)
		ledgers := replicas(t, db)

		const workers = 50
		var wg sync.WaitGroup
		txnIDs := make(chan string, workers)
		for i := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := ledgers[i%2].Spend(ctx, service, ledger.SpendRequest{
					UserID: u.ID, Amount: 7, Reason: "job", IdempotencyKey: "the-one-key",
				})
				if err != nil {
					t.Errorf("spend: %v", err)
					return
				}
				txnIDs <- res.Transaction.ID
			}()
		}
		wg.Wait()
		close(txnIDs)
		distinct := map[string]int{}
		for id := range txnIDs {
			distinct[id]++
		}
		if len(distinct) != 1 {
			t.Fatalf("%d different transactions for one key: %v", len(distinct), distinct)
		}
		if b := e.balance(u.ID); b.Balance != 93 {
			t.Fatalf("balance %d, want 93 (one spend of 7)", b.Balance)
		}
		e.check()
	})
}

// TestConcurrentKeyReuseWithDifferentRequests: one key, many different
// amounts at once: exactly one applies; every other is refused as reuse.
func TestConcurrentKeyReuseWithDifferentRequests(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		u := e.user("alice")
		e.grant(u.ID, 1000)
		ledgers := replicas(t, db)

		const workers = 20
		var wg sync.WaitGroup
		var mu sync.Mutex
		applied, reused := 0, 0
		var spent int64
		for i := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				amount := int64(i + 1)
				_, err := ledgers[i%2].Spend(ctx, service, ledger.SpendRequest{UserID: u.ID, Amount: amount, IdempotencyKey: "shared"})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					applied++
					spent = amount
				case apperr.CodeOf(err) == apperr.IdempotencyKeyReused:
					reused++
				default:
					t.Errorf("unexpected error: %v", err)
				}
			}()
		}
		wg.Wait()
		if applied != 1 || reused != workers-1 {
			t.Fatalf("%d applied, %d refused as reuse", applied, reused)
		}
		if b := e.balance(u.ID); b.Balance != 1000-spent {
			t.Fatalf("balance %d, want %d", b.Balance, 1000-spent)
		}
		e.check()
	})
}

// TestConcurrentMixedOperations runs grants, spends, reservations and
// captures on one account from many goroutines; the invariants must hold
// and no spend may overdraw.
func TestConcurrentMixedOperations(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		u := e.user("alice")
		e.grant(u.ID, 100)
		ledgers := replicas(t, db)

		var wg sync.WaitGroup
		for i := range 40 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				l := ledgers[i%2]
				key := fmt.Sprintf("op-%d", i)
				var err error
				switch i % 4 {
				case 0:
					_, err = l.Grant(ctx, admin, ledger.GrantRequest{UserID: u.ID, Amount: 5, IdempotencyKey: key})
				case 1:
					_, err = l.Spend(ctx, service, ledger.SpendRequest{UserID: u.ID, Amount: 9, IdempotencyKey: key})
				case 2:
					var r *ledger.Result
					r, err = l.Reserve(ctx, service, ledger.ReserveRequest{UserID: u.ID, Amount: 6, IdempotencyKey: key})
					if err == nil {
						_, err = l.Capture(ctx, service, ledger.CaptureRequest{UserID: u.ID, ReservationID: r.Reservation.ID, Amount: new(int64(4)), IdempotencyKey: key + "-capture"})
					}
				case 3:
					_, err = l.Revoke(ctx, admin, ledger.RevokeRequest{UserID: u.ID, Amount: 2, IdempotencyKey: key})
				}
				if err != nil && apperr.CodeOf(err) != apperr.InsufficientCredits {
					t.Errorf("op %d: %v", i, err)
				}
			}()
		}
		wg.Wait()
		if b := e.balance(u.ID); b.Balance < 0 {
			t.Fatalf("overdrawn: %d", b.Balance)
		}
		e.check()
	})
}

// TestStatsCountCommitsRetriesAndConflicts: the totals the server exports
// as metrics (the load generator's retry rate) count what happened.
func TestStatsCountCommitsRetriesAndConflicts(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		s := ledger.New(db, ledger.WithMaxAttempts(3))
		calls := 0
		err := s.Within(ctx, func(context.Context, *ledger.Tx) error {
			calls++
			if calls == 1 {
				return fmt.Errorf("lost a race: %w", ledger.ErrRetry)
			}
			return nil
		})
		if err != nil || calls != 2 {
			t.Fatalf("Within: %v after %d calls; want success on the second", err, calls)
		}
		err = s.Within(ctx, func(context.Context, *ledger.Tx) error {
			return fmt.Errorf("always losing: %w", ledger.ErrRetry)
		})
		if apperr.CodeOf(err) != apperr.Conflict {
			t.Fatalf("a transaction that always conflicts: %v, want CONFLICT", err)
		}
		want := ledger.Stats{Transactions: 1, Retries: 1 + 2, Conflicts: 1}
		if got := s.Stats(); got != want {
			t.Fatalf("stats %+v, want %+v", got, want)
		}
	})
}
