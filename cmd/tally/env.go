package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel/trace"

	"github.com/tally-billing/tally/internal/config"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/migrator"
)

// settingFlags are the command-line flags that override an environment
// variable of the same meaning.
var settingFlags = map[string]string{
	"addr":         "TALLY_ADDR",
	"database-url": "DATABASE_URL",
	"env":          "TALLY_ENV",
	"log-level":    "TALLY_LOG_LEVEL",
}

func addSettingFlags(fs *pflag.FlagSet, names ...string) {
	for _, n := range names {
		fs.String(n, "", "overrides $"+settingFlags[n])
	}
}

// loadConfig reads the environment, with flags set on the command line
// taking precedence. A problem is reported under the name the user set, the
// flag or the variable; a bad flag value is a usage error.
func loadConfig(fs *pflag.FlagSet) (config.Config, error) {
	overrides := map[string]string{}
	flagOf := map[string]string{}
	fs.Visit(func(f *pflag.Flag) {
		if env, ok := settingFlags[f.Name]; ok {
			overrides[env] = f.Value.String()
			flagOf[env] = "--" + f.Name
		}
	})
	cfg, err := config.Load(func(name string) string {
		if v, ok := overrides[name]; ok {
			return v
		}
		return os.Getenv(name)
	})
	var cerr *config.Error
	if !errors.As(err, &cerr) {
		return cfg, err
	}
	fromFlag := false
	for i, p := range cerr.Problems {
		if flag, ok := flagOf[p.Name]; ok {
			cerr.Problems[i].Name = flag
			fromFlag = true
		}
	}
	if fromFlag {
		return cfg, usageError{cerr}
	}
	return cfg, cerr
}

// settingName is how the user set a setting: the flag when it is on the
// command line, else the environment variable.
func settingName(fs *pflag.FlagSet, flag string) string {
	if f := fs.Lookup(flag); f != nil && f.Changed {
		return "--" + flag
	}
	return settingFlags[flag]
}

func newLogger(cfg config.Config) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(os.Stdout, opts))
	}
	return slog.New(slog.NewJSONHandler(os.Stdout, opts))
}

func openDatabase(ctx context.Context, cfg config.Config) (*database.DB, error) {
	return openTracedDatabase(ctx, cfg, nil)
}

// openTracedDatabase is openDatabase with its statements traced by tp
// (none when nil).
func openTracedDatabase(ctx context.Context, cfg config.Config, tp trace.TracerProvider) (*database.DB, error) {
	db, err := database.Open(ctx, cfg.DatabaseURL, database.Options{MaxOpenConns: cfg.DBMaxConns, TracerProvider: tp})
	if err != nil {
		return nil, err
	}
	return db, nil
}

// openConfigured loads the configuration (flags over the environment) and
// opens its database, which serve must have migrated (see openCurrent).
func openConfigured(cmd *cobra.Command) (config.Config, *database.DB, error) {
	cfg, err := loadConfig(cmd.Flags())
	if err != nil {
		return cfg, nil, err
	}
	db, err := openCurrent(cmd.Context(), cfg)
	return cfg, db, err
}

// openCurrent opens a database that serve has migrated already; tools that
// only read and write rows refuse an older schema with a hint rather than
// an SQL error.
func openCurrent(ctx context.Context, cfg config.Config) (*database.DB, error) {
	db, err := openDatabase(ctx, cfg)
	if err != nil {
		return nil, err
	}
	m, err := migrator.New(db)
	if err == nil {
		var current bool
		if current, err = m.Current(ctx); err == nil && !current {
			err = fmt.Errorf("the database %s is not migrated: start tally serve once, or run tally migrate up", describe(db))
		}
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

func describe(db *database.DB) string {
	return fmt.Sprintf("%s (%s)", database.Redacted(db.URL), db.Dialect)
}
