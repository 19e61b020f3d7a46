package migrator_test

import (
	"context"
	"testing"

	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/migrator"
	"github.com/tally-billing/tally/internal/testdb"
)

// TestSubscriptionsMigrationKeepsPayments: the subscriptions migration
// rebuilds payments on SQLite (package_id becomes nullable). A payment that
// transactions, lots and events point at survives it both ways, with every
// reference intact.
func TestSubscriptionsMigrationKeepsPayments(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		m, err := migrator.New(db)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Down(ctx, 1); err != nil {
			t.Fatal(err)
		}
		exec := func(stmts ...string) {
			t.Helper()
			for _, stmt := range stmts {
				if _, err := db.SQL.ExecContext(ctx, stmt); err != nil {
					t.Fatalf("%s: %v", stmt, err)
				}
			}
		}
		exec(`INSERT INTO users (id, created_at, updated_at, external_id, credits_balance, status)
			 VALUES ('usr_a', '2026-01-01 00:00:00', '2026-01-01 00:00:00', 'a', 10, 'ACTIVE')`,
			`INSERT INTO credit_packages (id, created_at, updated_at, name, credits, price_amount, currency, active, sort_order)
			 VALUES ('pkg_a', '2026-01-01 00:00:00', '2026-01-01 00:00:00', 'A', 10, 100, 'usd', true, 0)`,
			`INSERT INTO payments (id, created_at, updated_at, amount, currency, credits, status, amount_refunded, livemode, package_id, user_id, kind, save_card)
			 VALUES ('pay_a', '2026-01-01 00:00:00', '2026-01-01 00:00:00', 100, 'usd', 10, 'SUCCEEDED', 0, false, 'pkg_a', 'usr_a', 'CHECKOUT', false)`,
			`INSERT INTO processed_events (id, stripe_event_id, type, livemode, api_version, outcome, error, attempts, payment_id, received_at)
			 VALUES ('pev_a', 'evt_a', 'checkout.session.completed', false, '2023-10-16', 'applied', '', 1, 'pay_a', '2026-01-01 00:00:00')`)
		for round := 0; round < 2; round++ {
			if _, err := m.Up(ctx); err != nil {
				t.Fatalf("round %d: up: %v", round, err)
			}
			var n int
			q := `SELECT count(*) FROM payments p JOIN processed_events e ON e.payment_id = p.id WHERE p.package_id = 'pkg_a'`
			if err := db.SQL.QueryRowContext(ctx, q).Scan(&n); err != nil || n != 1 {
				t.Fatalf("round %d: the payment and its event after up: %d (%v)", round, n, err)
			}
			if _, err := m.Down(ctx, 1); err != nil {
				t.Fatalf("round %d: down: %v", round, err)
			}
			if err := db.SQL.QueryRowContext(ctx, q).Scan(&n); err != nil || n != 1 {
				t.Fatalf("round %d: the payment and its event after down: %d (%v)", round, n, err)
			}
		}
		if _, err := m.Up(ctx); err != nil {
			t.Fatal(err)
		}
		if db.Dialect == "sqlite3" {
			rows, err := db.SQL.QueryContext(ctx, `PRAGMA foreign_key_check`)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			if rows.Next() {
				t.Fatal("foreign_key_check reports a broken reference after the rebuild")
			}
		}
	})
}
