package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tally-billing/tally/internal/config"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/migrator"
	"github.com/tally-billing/tally/internal/seed"
	"github.com/tally-billing/tally/internal/server"
	"github.com/tally-billing/tally/internal/telemetry"
)

func newServeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the API server (migrates the database first)",
		Args:  cobra.NoArgs,
	}
	addSettingFlags(cmd.Flags(), "addr", "database-url", "env", "log-level")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error { return runServe(cmd) }
	return cmd
}

func runServe(cmd *cobra.Command) error {
	ctx := cmd.Context()
	cfg, err := loadConfig(cmd.Flags())
	if err != nil {
		return err
	}
	logger := newLogger(cfg)
	ln, metricsLn, err := listenServe(cmd.Flags(), cfg)
	if err != nil {
		return err
	}
	defer ln.Close()
	if metricsLn != nil {
		defer metricsLn.Close()
	}
	tracing, err := telemetry.Setup(ctx, os.Getenv)
	if err != nil {
		return err
	}
	tracing.LogErrorsTo(logger.With("component", "tracing"))
	// Deferred first, so it runs last: the spans of requests that
	// finished during the graceful shutdown are flushed too.
	defer func() {
		flush, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := tracing.Shutdown(flush); err != nil {
			logger.Warn("traces not flushed", "error", err.Error())
		}
	}()
	db, err := openTracedDatabase(ctx, cfg, tracing.Provider())
	if err != nil {
		return err
	}
	defer db.Close()
	if err := migrateAndSeed(ctx, cfg, db, logger); err != nil {
		return err
	}
	srv, err := server.New(ctx, cfg, db, logger, server.WithTracing(tracing.Provider()))
	if err != nil {
		return err
	}
	defer srv.Close()
	stopBackground := runBackground(ctx, cfg, srv, metricsLn, logger)
	defer stopBackground()
	announce(cfg, ln, db, tracing, logger)
	return srv.Serve(ctx, ln)
}

// listenServe takes the API's port, and the metrics' when they have their
// own address. Taken first: a port in use is reported before the database
// is touched.
func listenServe(fs *pflag.FlagSet, cfg config.Config) (ln, metricsLn net.Listener, err error) {
	ln, err = server.Listen(cfg.Addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, nil, fmt.Errorf("%s: %w (is another tally serve running? choose another address with --addr or TALLY_ADDR)", settingName(fs, "addr"), err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", settingName(fs, "addr"), err)
	}
	if cfg.MetricsAddr != "" {
		if metricsLn, err = server.Listen(cfg.MetricsAddr); err != nil {
			ln.Close()
			return nil, nil, fmt.Errorf("TALLY_METRICS_ADDR: %w", err)
		}
	}
	return ln, metricsLn, nil
}

// migrateAndSeed brings the database's schema up to date, and adds the
// demo packs and plans when the configuration asks for them.
func migrateAndSeed(ctx context.Context, cfg config.Config, db *database.DB, logger *slog.Logger) error {
	m, err := migrator.New(db)
	if err != nil {
		return err
	}
	applied, err := m.Up(ctx)
	if err != nil {
		return err
	}
	for _, r := range applied {
		logger.Info("migration applied", "version", r.Version, "name", r.Name)
	}
	if cfg.SeedDemoData {
		if _, err := seed.DemoPackages(ctx, db.Ent); err != nil {
			return err
		}
		if _, err := seed.DemoPlans(ctx, db.Ent); err != nil {
			return err
		}
	}
	return nil
}

// runBackground starts the job workers and the metrics listener when it has
// its own address; the function it returns stops them and waits for them.
func runBackground(ctx context.Context, cfg config.Config, srv *server.Server, metricsLn net.Listener, logger *slog.Logger) (stop func()) {
	// The job workers run the expiry sweeps and the ledger checks.
	if cfg.Workers == 0 {
		logger.Warn("TALLY_WORKERS is 0: this replica runs no jobs; expiry sweeps and ledger checks need a replica with workers")
	}
	background, stopBackground := context.WithCancel(ctx)
	var running sync.WaitGroup
	running.Go(func() {
		if err := srv.RunJobs(background, cfg.ShutdownTimeout); err != nil {
			logger.Error("background jobs stopped", "error", err.Error())
		}
	})
	switch {
	case metricsLn != nil:
		running.Go(func() {
			if err := srv.ServeMetrics(background, metricsLn); err != nil {
				logger.Error("metrics listener stopped", "error", err.Error())
			}
		})
		logger.Info("metrics are served on their own address", "metrics", "http://"+metricsLn.Addr().String()+"/metrics")
	case !cfg.MetricsOnAPI():
		logger.Warn("metrics are not served: set TALLY_METRICS_ADDR (an internal address) or TALLY_METRICS_TOKEN")
	}
	return func() { stopBackground(); running.Wait() }
}

// announce logs where the server listens and, in development, prints it
// for the person who started it.
func announce(cfg config.Config, ln net.Listener, db *database.DB, tracing *telemetry.Tracing, logger *slog.Logger) {
	base := "http://" + ln.Addr().String()
	logger.Info("tally is serving",
		"env", cfg.Env, "addr", ln.Addr().String(), "database", describe(db),
		"graphql", base+"/graphql", "playground", cfg.Playground, "tracing", tracing.Enabled())
	if cfg.Env == config.Development {
		fmt.Fprintf(os.Stderr, "\nTally is running on %s\n  playground: %s/\n  GraphQL:    %s/graphql\n  webhook:    %s/api/webhooks/stripe\n  database:   %s\nStop it with Ctrl-C.\n\n",
			ln.Addr(), base, base, base, describe(db))
	}
}
