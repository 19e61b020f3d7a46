// Package migrator applies, reverts and reports the versioned SQL migrations
// in ent/migrate/migrations, using goose. The SQL is generated from the ent
// schema (see Generate) and reviewed before it is committed; nothing migrates
// the schema automatically from the Go types at run time.
package migrator

import (
	"context"
	"errors"
	"fmt"

	"entgo.io/ent/dialect"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/tally-billing/tally/ent/migrate/migrations"
	"github.com/tally-billing/tally/internal/database"
)

// Migrator runs the migrations of one database.
type Migrator struct {
	provider *goose.Provider
}

// New prepares the migrations of db's dialect.
func New(db *database.DB) (*Migrator, error) {
	files, err := migrations.For(db.Dialect)
	if err != nil {
		return nil, err
	}
	river, err := riverMigrations(db.Dialect)
	if err != nil {
		return nil, err
	}
	opts := []goose.ProviderOption{goose.WithDisableGlobalRegistry(true), goose.WithGoMigrations(river...)}
	var gooseDialect goose.Dialect
	switch db.Dialect {
	case dialect.Postgres:
		gooseDialect = goose.DialectPostgres
		// Several replicas may start at once: one migrates, the others wait.
		locker, err := lock.NewPostgresSessionLocker()
		if err != nil {
			return nil, fmt.Errorf("creating migration lock: %w", err)
		}
		opts = append(opts, goose.WithSessionLocker(locker))
	case dialect.SQLite:
		gooseDialect = goose.DialectSQLite3
	default:
		return nil, fmt.Errorf("no migrations for dialect %q", db.Dialect)
	}
	p, err := goose.NewProvider(gooseDialect, db.SQL, files, opts...)
	if err != nil {
		return nil, fmt.Errorf("loading migrations: %w", err)
	}
	return &Migrator{provider: p}, nil
}

// Result is one migration applied or reverted.
type Result struct {
	Version int64
	Name    string
}

func results(rs []*goose.MigrationResult) []Result {
	out := make([]Result, 0, len(rs))
	for _, r := range rs {
		if r.Empty {
			continue
		}
		out = append(out, Result{Version: r.Source.Version, Name: nameOf(r.Source)})
	}
	return out
}

// Up applies every pending migration, each in its own transaction.
func (m *Migrator) Up(ctx context.Context) ([]Result, error) {
	rs, err := m.provider.Up(ctx)
	if err != nil {
		return results(rs), fmt.Errorf("applying migrations: %w", unwrapPartial(err))
	}
	return results(rs), nil
}

// Down reverts the last n applied migrations.
func (m *Migrator) Down(ctx context.Context, n int) ([]Result, error) {
	if n < 1 {
		return nil, errors.New("the number of migrations to revert must be at least 1")
	}
	var done []Result
	for range n {
		r, err := m.provider.Down(ctx)
		if errors.Is(err, goose.ErrNoNextVersion) {
			break
		}
		if err != nil {
			return done, fmt.Errorf("reverting migration: %w", unwrapPartial(err))
		}
		done = append(done, results([]*goose.MigrationResult{r})...)
	}
	return done, nil
}

// DownAll reverts every applied migration, leaving an empty schema.
func (m *Migrator) DownAll(ctx context.Context) ([]Result, error) {
	rs, err := m.provider.DownTo(ctx, 0)
	if err != nil {
		return results(rs), fmt.Errorf("reverting migrations: %w", unwrapPartial(err))
	}
	return results(rs), nil
}

// Status is one migration and whether it is applied.
type Status struct {
	Version int64
	Name    string
	Applied bool
	// AppliedAt is zero when the migration is pending.
	AppliedAt string
}

// Status lists every known migration, oldest first.
func (m *Migrator) Status(ctx context.Context) ([]Status, error) {
	ss, err := m.provider.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading migration status: %w", err)
	}
	out := make([]Status, 0, len(ss))
	for _, s := range ss {
		st := Status{Version: s.Source.Version, Name: nameOf(s.Source), Applied: s.State == goose.StateApplied}
		if st.Applied {
			st.AppliedAt = s.AppliedAt.UTC().Format("2006-01-02 15:04:05Z")
		}
		out = append(out, st)
	}
	return out, nil
}

// Current reports whether every known migration is applied.
func (m *Migrator) Current(ctx context.Context) (bool, error) {
	pending, err := m.provider.HasPending(ctx)
	if err != nil {
		return false, fmt.Errorf("checking for pending migrations: %w", err)
	}
	return !pending, nil
}

func unwrapPartial(err error) error {
	var partial *goose.PartialError
	if errors.As(err, &partial) && partial.Err != nil {
		return fmt.Errorf("%s: %w", nameOf(partial.Failed.Source), partial.Err)
	}
	return err
}

// nameOf is a migration's file name, or for one written in Go (River's
// tables) a name in the same form.
func nameOf(src *goose.Source) string {
	if src.Path == "" {
		return riverName(src.Version)
	}
	return baseName(src.Path)
}

func baseName(path string) string {
	for i := len(path) - 1; i >= 0; i-- {
		if path[i] == '/' {
			return path[i+1:]
		}
	}
	return path
}
