package migrator_test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"

	"entgo.io/ent/dialect/sql/schema"

	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/migrator"
	"github.com/tally-billing/tally/internal/testdb"
)

// TestMigrationsRoundTrip applies every up on a fresh database, checks the
// result matches the ent schema exactly, reverts everything and does it all
// again: downs must undo their ups completely.
func TestMigrationsRoundTrip(t *testing.T) {
	testdb.EachEmpty(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		m, err := migrator.New(db)
		if err != nil {
			t.Fatal(err)
		}
		status := mustStatus(t, m)
		if len(status) < 2 {
			t.Fatalf("want at least 2 migrations, found %d", len(status))
		}
		assertApplied(t, m, 0)
		if current, err := m.Current(ctx); err != nil || current {
			t.Fatalf("Current() on an empty database = %v, %v; want false", current, err)
		}

		for round := 1; round <= 2; round++ {
			applied, err := m.Up(ctx)
			if err != nil {
				t.Fatalf("round %d: up: %v", round, err)
			}
			if len(applied) != len(status) {
				t.Fatalf("round %d: up applied %d migrations, want %d", round, len(applied), len(status))
			}
			assertApplied(t, m, len(status))
			if current, err := m.Current(ctx); err != nil || !current {
				t.Fatalf("round %d: Current() after up = %v, %v; want true", round, current, err)
			}
			assertNoDrift(t, db)
			if again, err := m.Up(ctx); err != nil || len(again) != 0 {
				t.Fatalf("round %d: second up applied %d migrations (%v), want none", round, len(again), err)
			}

			reverted, err := m.DownAll(ctx)
			if err != nil {
				t.Fatalf("round %d: down --all: %v", round, err)
			}
			if len(reverted) != len(status) {
				t.Fatalf("round %d: down --all reverted %d migrations, want %d", round, len(reverted), len(status))
			}
			assertApplied(t, m, 0)
			if tables := userTables(t, db); len(tables) != 0 {
				t.Fatalf("round %d: tables left after down --all: %v", round, tables)
			}
		}
	})
}

// TestMigrateDownSteps reverts one migration at a time and re-applies them.
func TestMigrateDownSteps(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		m, err := migrator.New(db)
		if err != nil {
			t.Fatal(err)
		}
		total := len(mustStatus(t, m))
		reverted, err := m.Down(ctx, 1)
		if err != nil || len(reverted) != 1 {
			t.Fatalf("down 1 reverted %d (%v), want 1", len(reverted), err)
		}
		assertApplied(t, m, total-1)
		if current, _ := m.Current(ctx); current {
			t.Fatal("Current() is true with a migration reverted")
		}
		// Asking for more steps than are applied stops at an empty schema.
		reverted, err = m.Down(ctx, total+5)
		if err != nil || len(reverted) != total-1 {
			t.Fatalf("down %d reverted %d (%v), want %d", total+5, len(reverted), err, total-1)
		}
		assertApplied(t, m, 0)
		if _, err := m.Down(ctx, 0); err == nil {
			t.Fatal("down 0 was accepted")
		}
		if _, err := m.Up(ctx); err != nil {
			t.Fatal(err)
		}
		assertApplied(t, m, total)
		assertNoDrift(t, db)
	})
}

func mustStatus(t *testing.T, m *migrator.Migrator) []migrator.Status {
	t.Helper()
	s, err := m.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func assertApplied(t *testing.T, m *migrator.Migrator, want int) {
	t.Helper()
	got := 0
	for _, s := range mustStatus(t, m) {
		if s.Applied {
			got++
		}
	}
	if got != want {
		t.Fatalf("%d migrations applied, want %d", got, want)
	}
}

// planMu serializes drift checks: ent's Atlas planner writes to the global
// table definitions in ent/migrate while it works.
var planMu sync.Mutex

// assertNoDrift asks ent (through Atlas) what it would change to bring the
// migrated database to the ent schema; the answer must be nothing.
func assertNoDrift(t *testing.T, db *database.DB) {
	t.Helper()
	planMu.Lock()
	defer planMu.Unlock()
	var plan bytes.Buffer
	err := db.Ent.Schema.WriteTo(context.Background(), &plan,
		schema.WithDropColumn(true), schema.WithDropIndex(true))
	if err != nil {
		t.Fatalf("planning against the migrated database: %v", err)
	}
	var changes []string
	for _, line := range strings.Split(plan.String(), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line == "BEGIN;" || line == "COMMIT;" || strings.HasPrefix(line, "--") {
			continue
		}
		changes = append(changes, line)
	}
	if len(changes) > 0 {
		t.Fatalf("the migrations drift from the ent schema; `tally migrate new NAME` would write:\n%s",
			strings.Join(changes, "\n"))
	}
}

func userTables(t *testing.T, db *database.DB) []string {
	t.Helper()
	query := `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name <> 'goose_db_version'`
	if db.Dialect != "sqlite3" {
		query = `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_name <> 'goose_db_version'`
	}
	rows, err := db.SQL.Query(query)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	return names
}
