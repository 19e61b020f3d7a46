// Package ledgertest helps tests of the ledger and of its callers.
package ledgertest

import (
	"context"
	"testing"

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
