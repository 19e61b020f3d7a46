package database_test

import (
	"strings"
	"testing"

	"github.com/tally-billing/tally/internal/testdb"
)

// TestDormantUsersHistoryUsesTheirIndex: a user whose whole history is
// older than everyone else's newer activity (a dormant user, or one that
// signs in after a busy month) has their first page of history read through
// their own (user_id, created_at, id) index, not by walking everyone's newer
// rows through the created_at index. With PostgreSQL's default
// random_page_cost the planner chose the walk, whose cost grows with the
// whole table.
func TestDormantUsersHistoryUsesTheirIndex(t *testing.T) {
	db := testdb.PlannerDB(t,
		`INSERT INTO users (id, created_at, updated_at, external_id, credits_balance, status)
		 SELECT 'u' || lpad(g::text, 6, '0'), now(), now(), 'ext' || g, 0, 'ACTIVE' FROM generate_series(1, 2001) g`,
		`INSERT INTO credit_transactions (id, created_at, kind, amount, actor, user_id)
		 SELECT 'h' || lpad(g::text, 8, '0'), now() - interval '2 hours' + g * interval '1 ms', 'SPEND', 1, 'x', 'u000001'
		 FROM generate_series(1, 10000) g`,
		`INSERT INTO credit_transactions (id, created_at, kind, amount, actor, user_id)
		 SELECT 'o' || lpad(g::text, 8, '0'), now() - interval '1 hour' + g * interval '10 ms', 'SPEND', 1, 'x',
		        'u' || lpad((2 + g % 2000)::text, 6, '0')
		 FROM generate_series(1, 100000) g`,
		`ANALYZE users, credit_transactions`,
	)
	text := testdb.Plan(t, db, `SELECT * FROM credit_transactions WHERE user_id = 'u000001' ORDER BY created_at DESC, id DESC LIMIT 51`)
	if !strings.Contains(text, "credittransaction_user_id_created_at_id") {
		t.Fatalf("the first page of a dormant user's history does not use their index:\n%s", text)
	}
}
