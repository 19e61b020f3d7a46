package ledger_test

import (
	"context"
	"sync"
	"testing"

	"entgo.io/ent/dialect"

	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/ledger/ledgertest"
	"github.com/tally-billing/tally/internal/testdb"
)

// TestSpendThatWaitedForTheLockSeesWhatTheHolderWrote: on PostgreSQL a
// spend (or a reservation) locks its user and reads the lots in one
// statement, whose other tables are read as of before it waited (see
// lockread.go). One that waits while another transaction holds the
// account and changes its lots or reservations must decide on what that
// transaction committed: the reservation made meanwhile is not spent or
// reserved again, and the credits granted meanwhile can be.
func TestSpendThatWaitedForTheLockSeesWhatTheHolderWrote(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		if db.Dialect != dialect.Postgres {
			t.Skip("SQLite's writers take the database's lock before they read anything")
		}
		e := newEnv(t, db)
		waiters := []struct {
			name string
			do   func(ctx context.Context, userID string, amount int64) error
		}{
			{"spend", func(ctx context.Context, userID string, amount int64) error {
				_, err := e.l.Spend(ctx, service, ledger.SpendRequest{UserID: userID, Amount: amount, IdempotencyKey: "spend-" + userID})
				return err
			}},
			{"reserve", func(ctx context.Context, userID string, amount int64) error {
				_, err := e.l.Reserve(ctx, service, ledger.ReserveRequest{UserID: userID, Amount: amount, IdempotencyKey: "reserve-" + userID})
				return err
			}},
		}
		for _, c := range []struct {
			name   string
			holder func(ctx context.Context, tx *ledger.Tx, userID string) error
			spend  int64
			want   apperr.Code // "" for a spend that goes through
		}{
			{"a reservation made meanwhile", func(ctx context.Context, tx *ledger.Tx, userID string) error {
				_, err := tx.Reserve(ctx, service, ledger.ReserveRequest{UserID: userID, Amount: 10, IdempotencyKey: "hold-" + userID})
				return err
			}, 5, apperr.InsufficientCredits},
			{"credits granted meanwhile", func(ctx context.Context, tx *ledger.Tx, userID string) error {
				_, err := tx.Grant(ctx, admin, ledger.GrantRequest{UserID: userID, Amount: 50, IdempotencyKey: "more-" + userID})
				return err
			}, 40, ""},
		} {
			for _, waiter := range waiters {
				t.Run(waiter.name+" after "+c.name, func(t *testing.T) {
					u := e.user(waiter.name + "-after-" + c.name)
					e.grant(u.ID, 10)
					ctx := context.Background()
					pids := make(chan int, 1)
					release := make(chan struct{})
					var once sync.Once
					held := make(chan error, 1)
					go func() {
						held <- e.l.Within(ctx, func(ctx context.Context, tx *ledger.Tx) error {
							if _, err := tx.LockUser(ctx, u.ID); err != nil {
								return err
							}
							var pid int
							if err := tx.SQL().QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
								return err
							}
							once.Do(func() { pids <- pid })
							<-release
							return c.holder(ctx, tx, u.ID)
						})
					}()
					holder := <-pids
					spent := make(chan error, 1)
					go func() { spent <- waiter.do(ctx, u.ID, c.spend) }()
					ledgertest.WaitUntilBlockedBy(t, db, holder)
					close(release)
					if err := <-held; err != nil {
						t.Fatalf("the lock holder: %v", err)
					}
					err := <-spent
					switch {
					case c.want == "" && err != nil:
						t.Fatalf("%s of %d after %s: %v", waiter.name, c.spend, c.name, err)
					case c.want != "" && apperr.CodeOf(err) != c.want:
						t.Fatalf("%s of %d after %s: %v, want %s", waiter.name, c.spend, c.name, err, c.want)
					}
					e.check()
				})
			}
		}
	})
}
