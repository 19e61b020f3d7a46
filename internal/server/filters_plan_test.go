package server_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/tally-billing/tally/graph"
	"github.com/tally-billing/tally/internal/testdb"
)

// TestAdminFiltersUseAnIndex: the filters the admin lists keep, with their
// default order, and their capped counts, read through an index on
// PostgreSQL rather than the whole table. The statements are the shape ent
// writes for them (a page: the filter, ORDER BY the order then id, LIMIT
// first+1; a count: the filter, LIMIT CountCap+1), over rare values, where a
// scan would read everything to find them. A PostgreSQL planner property:
// SQLite's planner is not the one that scales.
func TestAdminFiltersUseAnIndex(t *testing.T) {
	db := testdb.PlannerDB(t,
		`INSERT INTO users (id, created_at, updated_at, external_id, email, credits_balance, status)
		 SELECT 'u' || lpad(g::text, 6, '0'), now() - g * interval '1 minute', now(), 'ext' || g, 'e' || g || '@x.io', 0,
		        CASE WHEN g % 500 = 0 THEN 'FROZEN' ELSE 'ACTIVE' END FROM generate_series(1, 20000) g`,
		`INSERT INTO credit_transactions (id, created_at, kind, amount, actor, user_id)
		 SELECT 't' || lpad(g::text, 8, '0'), now() - g * interval '1 second', CASE WHEN g % 1000 = 0 THEN 'REVOKE' ELSE 'SPEND' END,
		        10, 'x', 'u' || lpad((1 + g % 20000)::text, 6, '0')
		 FROM generate_series(1, 100000) g`,
		`INSERT INTO admin_actions (id, created_at, action, target_id, admin_id, transaction_id)
		 SELECT 'a' || lpad(g::text, 8, '0'), now() - g * interval '1 second', CASE WHEN g % 1000 = 0 THEN 'freeze_user' ELSE 'grant_credits' END,
		        'u000001', 'u000001', 't' || lpad(g::text, 8, '0')
		 FROM generate_series(1, 100000) g`,
		`ANALYZE users, credit_transactions, admin_actions`,
	)
	page := func(table, where string) string {
		return `SELECT id FROM ` + table + ` WHERE ` + where + ` ORDER BY created_at DESC, id DESC LIMIT 11`
	}
	count := func(table, where string) string {
		return `SELECT id FROM ` + table + ` WHERE ` + where + ` LIMIT ` + strconv.Itoa(graph.CountCap+1)
	}
	for name, q := range map[string]string{
		"frozen users":            page("users", `status = 'FROZEN'`),
		"frozen users, counted":   count("users", `status = 'FROZEN'`),
		"a user by external id":   page("users", `external_id = 'ext42'`),
		"a user by email":         page("users", `email = 'e42@x.io'`),
		"revocations":             page("credit_transactions", `kind = 'REVOKE'`),
		"revocations, counted":    count("credit_transactions", `kind = 'REVOKE'`),
		"one user's transactions": page("credit_transactions", `user_id = 'u000042'`),
		"one user's, counted":     count("credit_transactions", `user_id = 'u000042'`),
		"recent transactions":     page("credit_transactions", `created_at > now() - interval '1 minute'`),
		"freezes":                 page("admin_actions", `action = 'freeze_user'`),
		"freezes, counted":        count("admin_actions", `action = 'freeze_user'`),
		"newest users, no filter": page("users", `TRUE`),
		"newest admin actions":    page("admin_actions", `TRUE`),
	} {
		if plan := testdb.Plan(t, db, q); strings.Contains(plan, "Seq Scan") {
			t.Errorf("%s: reads the whole table:\n%s\n%s", name, q, plan)
		}
	}
	// The control: a filter the schema no longer offers (no index serves
	// it) would read the whole table to count a rare value.
	if plan := testdb.Plan(t, db, count("credit_transactions", `reason = 'x'`)); !strings.Contains(plan, "Seq Scan") {
		t.Errorf("a filter without an index reads no whole table? The test proves nothing:\n%s", plan)
	}
}
