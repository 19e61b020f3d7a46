// Package ledgertest helps tests of the ledger and of its callers.
package ledgertest

import (
	"context"
	"testing"
	"time"

	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
)

// HoldUsers keeps the users' locks in a transaction of its own until the
// returned function is called, so that the work that needs them queues
// behind it (a test can then make a batch form).
func HoldUsers(tb testing.TB, l *ledger.Service, userIDs ...string) (release func()) {
	tb.Helper()
	locked, released, finished := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		finished <- l.Within(context.Background(), func(ctx context.Context, tx *ledger.Tx) error {
			for _, id := range userIDs {
				if _, err := tx.LockUser(ctx, id); err != nil {
					return err
				}
			}
			close(locked)
			<-released
			return nil
		})
	}()
	select {
	case <-locked:
	case err := <-finished:
		tb.Fatalf("holding the users: %v", err)
	}
	return func() {
		close(released)
		if err := <-finished; err != nil {
			tb.Fatalf("holding the users: %v", err)
		}
	}
}

// WaitUntilBlockedBy returns once a session of PostgreSQL waits for a lock
// the session with pid holds.
func WaitUntilBlockedBy(tb testing.TB, db *database.DB, pid int) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var waiting int
		if err := db.SQL.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))`, pid).Scan(&waiting); err != nil {
			tb.Fatal(err)
		}
		if waiting > 0 {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatal("nothing waited for the lock")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
