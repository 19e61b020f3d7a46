// Package testdb is the harness every database test uses: the same test body
// runs on SQLite and, when TEST_DATABASE_URL is set, on PostgreSQL, each time
// on a fresh database of its own, so tests share no state and run in
// parallel.
//
// On SQLite a fresh database is a file in the test's temporary directory; on
// PostgreSQL it is a schema with a random name in the TEST_DATABASE_URL
// database, dropped when the test ends.
package testdb

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"entgo.io/ent/dialect"
	"github.com/jackc/pgx/v5"

	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/faultproxy"
	"github.com/tally-billing/tally/internal/migrator"
)

// EnvPostgres names the variable that enables the PostgreSQL runs.
const EnvPostgres = "TEST_DATABASE_URL"

// Kind is a database the tests run on.
type Kind string

// The kinds of database.
const (
	SQLite   Kind = "sqlite"
	Postgres Kind = "postgres"
)

// Kinds are the databases available to this test run.
func Kinds() []Kind {
	kinds := []Kind{SQLite}
	if os.Getenv(EnvPostgres) != "" {
		kinds = append(kinds, Postgres)
	}
	return kinds
}

// Each runs body as a parallel subtest per database kind, on a fresh,
// migrated database.
func Each(t *testing.T, body func(t *testing.T, db *database.DB)) {
	t.Helper()
	for _, kind := range Kinds() {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			body(t, New(t, kind))
		})
	}
}

// EachInTurn is Each for a test that must have the process to itself, such
// as one counting allocations (process-wide): the databases one after the
// other, and, since the test does not call t.Parallel, no other test at the
// same time.
func EachInTurn(t *testing.T, body func(t *testing.T, db *database.DB)) {
	t.Helper()
	for _, kind := range Kinds() {
		t.Run(string(kind), func(t *testing.T) { body(t, New(t, kind)) })
	}
}

// EachEmpty is Each with a fresh database that has no migrations applied.
func EachEmpty(t *testing.T, body func(t *testing.T, db *database.DB)) {
	t.Helper()
	for _, kind := range Kinds() {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			body(t, NewEmpty(t, kind))
		})
	}
}

// New returns a fresh, migrated database of the given kind, closed and
// removed when the test ends.
func New(t testing.TB, kind Kind) *database.DB {
	t.Helper()
	db := NewEmpty(t, kind)
	m, err := migrator.New(db)
	if err != nil {
		t.Fatalf("loading migrations: %v", err)
	}
	if _, err := m.Up(context.Background()); err != nil {
		t.Fatalf("migrating the test database: %v", err)
	}
	return db
}

// NewEmpty returns a fresh database with no tables.
func NewEmpty(t testing.TB, kind Kind) *database.DB {
	t.Helper()
	ctx := context.Background()
	var url string
	switch kind {
	case SQLite:
		url = "sqlite://" + filepath.Join(t.TempDir(), "tally.db")
	case Postgres:
		server := os.Getenv(EnvPostgres)
		if server == "" {
			t.Fatalf("%s is not set", EnvPostgres)
		}
		scratch, drop, err := database.ScratchPostgres(ctx, server, "tally_test")
		if err != nil {
			t.Fatalf("creating a test schema: %v", err)
		}
		t.Cleanup(func() {
			if err := drop(context.Background()); err != nil {
				t.Errorf("dropping the test schema: %v", err)
			}
		})
		url = scratch
	default:
		t.Fatalf("unknown database kind %q", kind)
	}
	return Open(t, url)
}

// Open opens another pool on an existing test database (for example a
// second server instance on the same database), closed when the test ends.
func Open(t testing.TB, url string) *database.DB {
	t.Helper()
	db, err := database.Open(context.Background(), url, database.Options{})
	if err != nil {
		t.Fatalf("opening the test database: %v", err)
	}
	// Registered after the schema's drop, so it runs before it.
	t.Cleanup(func() { db.Close() })
	return db
}

// Proxied opens another pool on db, a PostgreSQL test database, whose
// connections pass through a fault proxy (see package faultproxy), so that
// a test can cut them at COMMIT or make the database unreachable. Both are
// closed when the test ends. A connection of SQLite cannot drop: the caller
// runs the proxied part of a test on PostgreSQL only.
func Proxied(t testing.TB, db *database.DB) (*database.DB, *faultproxy.Proxy) {
	t.Helper()
	if db.Dialect != dialect.Postgres {
		t.Fatalf("testdb.Proxied needs PostgreSQL, not %s", db.Dialect)
	}
	cfg, err := pgx.ParseConfig(db.URL)
	if err != nil {
		t.Fatalf("parsing the test database's URL: %v", err)
	}
	if strings.HasPrefix(cfg.Host, "/") {
		t.Fatalf("testdb.Proxied needs PostgreSQL over TCP, not the socket in %s", cfg.Host)
	}
	p, through, err := faultproxy.Through(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return Open(t, through), p
}

// PlannerDB is a PostgreSQL test database filled by the given statements
// (the last of them an ANALYZE), for tests of the plans PostgreSQL chooses
// (see Plan); the test is skipped without TEST_DATABASE_URL, since SQLite's
// planner is not the one that scales.
func PlannerDB(t *testing.T, fill ...string) *database.DB {
	t.Helper()
	if os.Getenv(EnvPostgres) == "" {
		t.Skip("a PostgreSQL planner property: set " + EnvPostgres)
	}
	db := New(t, Postgres)
	for _, stmt := range fill {
		if _, err := db.SQL.ExecContext(context.Background(), stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	return db
}

// Plan is PostgreSQL's plan of a statement with ? placeholders (EXPLAIN,
// not run), one line per step, for tests of what an index serves.
func Plan(t testing.TB, db *database.DB, query string, args ...any) string {
	t.Helper()
	rows, err := db.SQL.QueryContext(context.Background(), "EXPLAIN "+db.Rebind(query), args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, line)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(plan, "\n")
}
