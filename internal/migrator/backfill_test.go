package migrator_test

import (
	"context"
	"strings"
	"testing"

	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/migrator"
	"github.com/tally-billing/tally/internal/testdb"
)

// TestTransactionCountBackfill: users written before users.transaction_count
// existed get the count of their transactions when it is added, so that the
// invariant check (transaction_count_mismatch) holds on an upgraded
// database.
func TestTransactionCountBackfill(t *testing.T) {
	testdb.EachEmpty(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		m, err := migrator.New(db)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Up(ctx); err != nil {
			t.Fatal(err)
		}
		// Back to the version before the column: this one and every later.
		status := mustStatus(t, m)
		back := 0
		for i, s := range status {
			if strings.Contains(s.Name, "user_transaction_count") {
				back = len(status) - i
				break
			}
		}
		if back == 0 {
			t.Fatal("no migration adds users.transaction_count")
		}
		if _, err := m.Down(ctx, back); err != nil {
			t.Fatal(err)
		}
		for _, stmt := range []string{
			`INSERT INTO users (id, created_at, updated_at, external_id, credits_balance, status)
			 VALUES ('usr_a', '2026-01-01 00:00:00', '2026-01-01 00:00:00', 'a', 0, 'ACTIVE'),
			        ('usr_b', '2026-01-01 00:00:00', '2026-01-01 00:00:00', 'b', 0, 'ACTIVE')`,
			`INSERT INTO credit_transactions (id, created_at, kind, amount, actor, user_id)
			 VALUES ('txn_1', '2026-01-01 00:00:00', 'HOLD', 1, 'x', 'usr_a'),
			        ('txn_2', '2026-01-01 00:00:01', 'HOLD', 1, 'x', 'usr_a'),
			        ('txn_3', '2026-01-01 00:00:02', 'HOLD', 1, 'x', 'usr_a')`,
		} {
			if _, err := db.SQL.ExecContext(ctx, stmt); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := m.Up(ctx); err != nil {
			t.Fatal(err)
		}
		for id, want := range map[string]int{"usr_a": 3, "usr_b": 0} {
			var got int
			if err := db.SQL.QueryRowContext(ctx, db.Rebind(`SELECT transaction_count FROM users WHERE id = ?`), id).Scan(&got); err != nil || got != want {
				t.Errorf("%s: transaction_count %d (%v), want %d", id, got, err, want)
			}
		}
	})
}
