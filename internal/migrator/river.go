package migrator

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"

	"entgo.io/ent/dialect"
	"github.com/pressly/goose/v3"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverdatabasesql"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
)

// River's tables (the job queue, package jobs) are created and dropped by
// Tally's migrations like every other table.

// riverMigrationVersion places River's tables among Tally's migrations: after
// the ones that existed when the job queue came in.
const riverMigrationVersion = 20261202063800

// riverSteps are the versions of River's own migrations Tally's schema
// goes through, one Tally migration each: PostgreSQL cannot use an enum
// value in the transaction that added it (River 4 adds one, River 6 uses
// it), and each Tally migration is one transaction. A River upgrade that
// brings new migrations adds a step, so that `tally migrate` stays the one
// way the schema changes.
var riverSteps = []int{5, 8}

// riverMigrations are River's schema changes as migrations of Tally's
// (goose Go migrations, run in the transaction goose opens for each): the
// SQL is River's, applied by River's migrator, at pinned versions.
func riverMigrations(dialectName string) ([]*goose.Migration, error) {
	to := func(dir rivermigrate.Direction, target int) func(ctx context.Context, tx *sql.Tx) error {
		return func(ctx context.Context, tx *sql.Tx) error {
			m, err := newMigrator(dialectName)
			if err != nil {
				return err
			}
			if _, err := m.MigrateTx(ctx, tx, dir, &rivermigrate.MigrateOpts{TargetVersion: target}); err != nil {
				return fmt.Errorf("migrating the job queue's tables to River version %d: %w", target, err)
			}
			return nil
		}
	}
	migrations := make([]*goose.Migration, len(riverSteps))
	for i, target := range riverSteps {
		below := -1 // down from the first step removes River's tables
		if i > 0 {
			below = riverSteps[i-1]
		}
		migrations[i] = goose.NewGoMigration(int64(riverMigrationVersion+i),
			&goose.GoFunc{RunTx: to(rivermigrate.DirectionUp, target)},
			&goose.GoFunc{RunTx: to(rivermigrate.DirectionDown, below)})
	}
	return migrations, nil
}

func newMigrator(dialectName string) (*rivermigrate.Migrator[*sql.Tx], error) {
	quiet := &rivermigrate.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	var driver riverdriver.Driver[*sql.Tx]
	switch dialectName {
	case dialect.Postgres:
		driver = riverdatabasesql.New(nil)
	case dialect.SQLite:
		driver = riversqlite.New(nil)
	default:
		return nil, fmt.Errorf("no job queue for dialect %q", dialectName)
	}
	return rivermigrate.New(driver, quiet)
}

// riverName names a River step as the SQL migrations are named.
func riverName(version int64) string {
	step := version - riverMigrationVersion
	if step < 0 || step >= int64(len(riverSteps)) {
		return fmt.Sprint(version)
	}
	return fmt.Sprintf("%d_job_queue_river_v%d", version, riverSteps[step])
}
