package testdb

import (
	"context"
	"testing"

	"entgo.io/ent/dialect"

	"github.com/tally-billing/tally/internal/database"
)

// BreakNewestUserPosting adds a credit to the newest posting on a user's
// account behind the ledger's back, with the append-only trigger that would
// refuse it out of the way: the transaction no longer balances and neither
// do the user's balance and lot. Tests of the invariant checks inject
// their broken row this way.
func BreakNewestUserPosting(t testing.TB, db *database.DB) {
	t.Helper()
	update := `UPDATE credit_ledgers SET amount = amount + 1
	            WHERE id = (SELECT MAX(id) FROM credit_ledgers WHERE user_id IS NOT NULL)`
	stmts := []string{
		`ALTER TABLE credit_ledgers DISABLE TRIGGER credit_ledgers_append_only`, update,
		`ALTER TABLE credit_ledgers ENABLE TRIGGER credit_ledgers_append_only`,
	}
	if db.Dialect == dialect.SQLite {
		// SQLite cannot disable a trigger; the test's database is its own.
		stmts = []string{`DROP TRIGGER credit_ledgers_no_update`, update}
	}
	for _, s := range stmts {
		res, err := db.SQL.ExecContext(context.Background(), s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if n, _ := res.RowsAffected(); s == update && n != 1 {
			t.Fatalf("%s: %d rows", s, n)
		}
	}
}
