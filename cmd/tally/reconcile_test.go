package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/testdb"
)

// TestReconcileFindsABrokenRow: tally reconcile (no Stripe key: the
// ledger and payments only) passes a healthy ledger with exit 0, and finds
// a posting changed behind the ledger's back with the append-only trigger
// disabled: exit 1 and the problems named.
func TestReconcileFindsABrokenRow(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		l := ledger.New(db)
		admin := ledger.Actor{Kind: ledger.ActorAdmin, ID: "usr_support"}
		for i := range 3 {
			id := newUser(t, db, fmt.Sprintf("user-%d", i))
			if _, err := l.Grant(ctx, admin, ledger.GrantRequest{UserID: id, Amount: 10, IdempotencyKey: fmt.Sprintf("g%d", i)}); err != nil {
				t.Fatal(err)
			}
		}
		env := []string{"DATABASE_URL=" + db.URL}
		dir := t.TempDir()
		out, stderr, code := run(t, dir, env, "reconcile")
		if code != 0 || !strings.Contains(out, "ledger: 3 users, 3 transactions, 6 postings, 3 lots, 0 payments: every invariant holds") {
			t.Fatalf("healthy: exit %d\n%s%s", code, out, stderr)
		}

		testdb.BreakNewestUserPosting(t, db)
		out, stderr, code = run(t, dir, env, "reconcile")
		if code != 1 || !strings.Contains(out, "3 problems") || !strings.Contains(out, "unbalanced_transaction txn_") ||
			!strings.Contains(out, "balance_mismatch usr_") || !strings.Contains(out, "lot_remaining_mismatch lot_") {
			t.Fatalf("broken: exit %d\n%s%s", code, out, stderr)
		}
	})
}
