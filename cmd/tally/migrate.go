package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"text/tabwriter"

	"entgo.io/ent/dialect"
	"github.com/spf13/cobra"

	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/migrator"
)

func newMigrateCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply, revert, list or write database migrations",
	}
	addSettingFlags(cmd.PersistentFlags(), "database-url")
	cmd.AddCommand(newMigrateUpCommand(), newMigrateDownCommand(), newMigrateStatusCommand(), newMigrateNewCommand())
	return cmd
}

// withMigrator opens the configured database and runs fn on its migrations.
func withMigrator(cmd *cobra.Command, fn func(context.Context, *database.DB, *migrator.Migrator) error) error {
	cfg, err := loadConfig(cmd.Flags())
	if err != nil {
		return err
	}
	db, err := openDatabase(cmd.Context(), cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	m, err := migrator.New(db)
	if err != nil {
		return err
	}
	return fn(cmd.Context(), db, m)
}

func printResults(cmd *cobra.Command, verb string, rs []migrator.Result, db *database.DB) {
	out := cmd.OutOrStdout()
	if len(rs) == 0 {
		fmt.Fprintf(out, "nothing to do: %s\n", describe(db))
		return
	}
	for _, r := range rs {
		fmt.Fprintf(out, "%s %s\n", verb, r.Name)
	}
}

func newMigrateUpCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "up",
		Short: "Apply every pending migration",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withMigrator(cmd, func(ctx context.Context, db *database.DB, m *migrator.Migrator) error {
				rs, err := m.Up(ctx)
				printResults(cmd, "applied", rs, db)
				return err
			})
		},
	}
}

func newMigrateDownCommand() *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "down [N]",
		Short: "Revert the last N migrations (1 by default), or --all of them",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n := 1
			if len(args) == 1 {
				if all {
					return usageError{errors.New("give either N or --all, not both")}
				}
				v, err := strconv.Atoi(args[0])
				if err != nil || v < 1 {
					return usageError{fmt.Errorf("N must be a whole number of at least 1, not %q", args[0])}
				}
				n = v
			}
			return withMigrator(cmd, func(ctx context.Context, db *database.DB, m *migrator.Migrator) error {
				var rs []migrator.Result
				var err error
				if all {
					rs, err = m.DownAll(ctx)
				} else {
					rs, err = m.Down(ctx, n)
				}
				printResults(cmd, "reverted", rs, db)
				return err
			})
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "revert every migration, leaving an empty schema")
	return cmd
}

func newMigrateStatusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "List the migrations and whether each is applied",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withMigrator(cmd, func(ctx context.Context, db *database.DB, m *migrator.Migrator) error {
				ss, err := m.Status(ctx)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "database: %s\n", describe(db))
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "STATE\tAPPLIED AT\tMIGRATION")
				pending := 0
				for _, s := range ss {
					state, at := "applied", s.AppliedAt
					if !s.Applied {
						state, at = "pending", "-"
						pending++
					}
					fmt.Fprintf(w, "%s\t%s\t%s\n", state, at, s.Name)
				}
				if err := w.Flush(); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%d applied, %d pending\n", len(ss)-pending, pending)
				return nil
			})
		},
	}
}

var migrationName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,60}$`)

func newMigrateNewCommand() *cobra.Command {
	var devURL string
	cmd := &cobra.Command{
		Use:   "new NAME",
		Short: "Write the migrations that take the database to the current ent schema (developers)",
		Long: `Compares the migrations in ent/migrate/migrations with the ent schema and writes
the difference as a new migration for PostgreSQL and for SQLite, with its down
part. Run it from the repository root after changing ent/schema and running
go generate ./... . PostgreSQL needs a scratch database: --dev-url or
$TEST_DATABASE_URL (a temporary schema is created in it and dropped).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if !migrationName.MatchString(name) {
				return usageError{fmt.Errorf("NAME %q must be lower_snake_case, like add_payment_notes", name)}
			}
			if devURL == "" {
				devURL = os.Getenv("TEST_DATABASE_URL")
			}
			if devURL == "" {
				return usageError{errors.New("PostgreSQL migrations need a scratch server: pass --dev-url postgres://… or set TEST_DATABASE_URL")}
			}
			ctx := cmd.Context()
			for _, d := range migrator.Dialects {
				if _, err := os.Stat(d.Dir); err != nil {
					return fmt.Errorf("run this from the repository root: %s not found", d.Dir)
				}
				dev, cleanup, err := scratchDatabase(ctx, d.Name, devURL)
				if err != nil {
					return err
				}
				written, err := migrator.Generate(ctx, dev, d.Dir, name)
				cleanup()
				if err != nil {
					return err
				}
				if len(written) == 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: no changes\n", d.Name)
				}
				for _, f := range written {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: wrote %s\n", d.Name, f)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&devURL, "dev-url", "", "PostgreSQL server for a scratch schema (default $TEST_DATABASE_URL)")
	return cmd
}

// scratchDatabase opens an empty database of dialect d for Atlas to replay
// the migrations on.
func scratchDatabase(ctx context.Context, d, pgURL string) (*database.DB, func(), error) {
	switch d {
	case dialect.Postgres:
		url, drop, err := database.ScratchPostgresDatabase(ctx, pgURL, "tally_migrate_dev")
		if err != nil {
			return nil, nil, err
		}
		db, err := database.Open(ctx, url, database.Options{})
		if err != nil {
			_ = drop(ctx)
			return nil, nil, err
		}
		return db, func() { db.Close(); _ = drop(context.WithoutCancel(ctx)) }, nil
	default:
		dir, err := os.MkdirTemp("", "tally-migrate-dev-")
		if err != nil {
			return nil, nil, err
		}
		db, err := database.Open(ctx, filepath.Join(dir, "dev.db"), database.Options{})
		if err != nil {
			os.RemoveAll(dir)
			return nil, nil, err
		}
		return db, func() { db.Close(); os.RemoveAll(dir) }, nil
	}
}
