package ledger

import (
	"strings"
	"testing"

	"github.com/tally-billing/tally/internal/testdb"
)

// TestOneUsersLotsAreReadThroughTheirIndexes: the sums a balance read makes
// over a user's lots (the expired ones and those disputes hold), and a page of the user's lots as the API lists them
// (by id), read that user's lots only. Without an index on the owner, both
// scanned every lot of every user: at 67,000 lots a balance read took 44 ms
// and a page of lots 9 ms on PostgreSQL, growing with the whole table
// (0.9 ms and 0.2 ms with the indexes). A PostgreSQL planner property:
// SQLite's planner is not the one that scales.
func TestOneUsersLotsAreReadThroughTheirIndexes(t *testing.T) {
	db := testdb.PlannerDB(t,
		`INSERT INTO users (id, created_at, updated_at, external_id, credits_balance, status)
		 SELECT 'u' || lpad(g::text, 6, '0'), now(), now(), 'ext' || g, 0, 'ACTIVE' FROM generate_series(1, 2000) g`,
		`INSERT INTO credit_transactions (id, created_at, kind, amount, actor, user_id)
		 SELECT 't' || lpad(g::text, 8, '0'), now(), 'GRANT', 10, 'x', 'u' || lpad((1 + g % 2000)::text, 6, '0')
		 FROM generate_series(1, 60000) g`,
		`INSERT INTO credit_lots (id, created_at, updated_at, source, original, remaining, held, transaction_id, user_id)
		 SELECT 'l' || lpad(g::text, 8, '0'), now(), now(), 'GRANT', 10, CASE WHEN g % 997 = 0 THEN 0 WHEN g % 3 = 0 THEN 10 ELSE 0 END,
		        CASE WHEN g % 997 = 0 THEN 10 ELSE 0 END, 't' || lpad(g::text, 8, '0'), 'u' || lpad((1 + g % 2000)::text, 6, '0')
		 FROM generate_series(1, 60000) g`,
		`ANALYZE users, credit_transactions, credit_lots`,
	)
	plan := testdb.Plan(t, db, balanceSelect+"?)", "OPEN", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "u000042")
	if strings.Contains(plan, "Seq Scan on credit_lots") {
		t.Errorf("a balance read scans every lot:\n%s", plan)
	}
	// Only the user's lots past their expiry are summed, not every lot
	// with credits left (a user with 15,000 of them made every balance
	// read 6 times slower than one with a few).
	if !strings.Contains(plan, "creditlot_user_id_expires_at") {
		t.Errorf("a balance read does not go to the user's expired lots through their index:\n%s", plan)
	}
	if plan := testdb.Plan(t, db, `SELECT * FROM credit_lots WHERE user_id = ? ORDER BY id LIMIT 11`, "u000042"); !strings.Contains(plan, "creditlot_user_id_id") {
		t.Errorf("a page of one user's lots does not use their index:\n%s", plan)
	}
}
