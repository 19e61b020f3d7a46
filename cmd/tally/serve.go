package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tally-billing/tally/internal/config"
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
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		ctx := cmd.Context()
		cfg, err := loadConfig(cmd.Flags())
		if err != nil {
			return err
		}
		logger := newLogger(cfg)
		// Take the port first: a port in use is reported before the
		// database is touched.
		ln, err := server.Listen(cfg.Addr)
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("%s: %w (is another tally serve running? choose another address with --addr or TALLY_ADDR)", settingName(cmd.Flags(), "addr"), err)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", settingName(cmd.Flags(), "addr"), err)
		}
		defer ln.Close()
		var metricsLn net.Listener
		if cfg.MetricsAddr != "" {
			if metricsLn, err = server.Listen(cfg.MetricsAddr); err != nil {
				return fmt.Errorf("TALLY_METRICS_ADDR: %w", err)
			}
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
		}
		srv, err := server.New(ctx, cfg, db, logger, server.WithTracing(tracing.Provider()))
		if err != nil {
			return err
		}
		defer srv.Close()
		// Expired lots and reservations are swept in the background; every
		// replica may run the sweeper, each expiry re-checks under the
		// user's lock.
		background, stopBackground := context.WithCancel(ctx)
		var running sync.WaitGroup
		running.Go(func() {
			srv.Ledger().RunSweeper(background, cfg.SweepInterval, logger.With("component", "sweeper"))
		})
		defer func() { stopBackground(); running.Wait() }()
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
		base := "http://" + ln.Addr().String()
		logger.Info("tally is serving",
			"env", cfg.Env, "addr", ln.Addr().String(), "database", describe(db),
			"graphql", base+"/graphql", "playground", cfg.Playground, "tracing", tracing.Enabled())
		if cfg.Env == config.Development {
			fmt.Fprintf(os.Stderr, "\nTally is running on %s\n  playground: %s/\n  GraphQL:    %s/graphql\n  webhook:    %s/api/webhooks/stripe\n  database:   %s\nStop it with Ctrl-C.\n\n",
				ln.Addr(), base, base, base, describe(db))
		}
		return srv.Serve(ctx, ln)
	}
	return cmd
}
