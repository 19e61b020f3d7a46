package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel/trace"

	"github.com/tally-billing/tally/internal/config"
	"github.com/tally-billing/tally/internal/database"
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
// taking precedence.
func loadConfig(fs *pflag.FlagSet) (config.Config, error) {
	overrides := map[string]string{}
	fs.Visit(func(f *pflag.Flag) {
		if env, ok := settingFlags[f.Name]; ok {
			overrides[env] = f.Value.String()
		}
	})
	return config.Load(func(name string) string {
		if v, ok := overrides[name]; ok {
			return v
		}
		return os.Getenv(name)
	})
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

func describe(db *database.DB) string {
	return fmt.Sprintf("%s (%s)", database.Redacted(db.URL), db.Dialect)
}
