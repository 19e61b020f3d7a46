package server

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/migrator"
)

// ReadinessOptions tune the background readiness probe (see readiness).
// Zero fields take the defaults.
type ReadinessOptions struct {
	// Interval is the time between two checks (default 1s).
	Interval time.Duration
	// Timeout bounds one check (default 2s).
	Timeout time.Duration
	// FailAfter is how many consecutive failed checks make a ready
	// instance unready (default 3).
	FailAfter int
	// RecoverAfter is how many consecutive good checks make an unready
	// instance ready again (default 2).
	RecoverAfter int
}

func (o ReadinessOptions) withDefaults() ReadinessOptions {
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	if o.FailAfter <= 0 {
		o.FailAfter = 3
	}
	if o.RecoverAfter <= 0 {
		o.RecoverAfter = 2
	}
	return o
}

// probeResult is one check: what /readyz shows under "checks".
type probeResult struct {
	database, migrations string // "ok", "unreachable", "pending", "unknown"
	err                  error  // why, for the log
}

func (r probeResult) ok() bool { return r.database == "ok" && r.migrations == "ok" }

var healthy = probeResult{database: "ok", migrations: "ok"}

// readiness is whether the instance can serve, as /readyz reports it.
//
// A probe in the background checks the database (a ping and the
// migrations) on a connection of its own, not the request pool's: under
// load every pooled connection is busy, and a check that queued for one
// read a saturated pool as a database that does not answer (/readyz
// flapped while the instance served hundreds of requests a second).
// Transactions the request pool committed since the last check count as
// the database answering too, whatever the probe's own connection says.
// The state changes only after several consecutive results the other way
// (hysteresis), and /readyz answers the state without touching the
// database, so no caller, anonymous or not, makes it do work.
type readiness struct {
	opts       ReadinessOptions
	probe      *database.DB
	migrations *migrator.Migrator
	committed  func() uint64 // transactions the request pool has committed
	logger     *slog.Logger

	mu            sync.Mutex
	ready         bool
	shown         probeResult // the result /readyz reports
	fails, oks    int         // consecutive results against the state
	lastCommitted uint64
	migrationsOK  bool // the last migrations check that ran found none pending

	observed atomic.Uint64 // background checks done (tests wait for them)

	cancel context.CancelFunc // stops the background checks
	done   chan struct{}
}

// startReadiness opens the probe's connection, runs a first check (the
// state starts from it, without hysteresis) and starts checking in the
// background until close.
func startReadiness(ctx context.Context, url string, committed func() uint64, logger *slog.Logger, opts ReadinessOptions) (*readiness, error) {
	probe, err := database.OpenProbe(url)
	if err != nil {
		return nil, fmt.Errorf("readiness probe: %w", err)
	}
	m, err := migrator.New(probe)
	if err != nil {
		probe.Close()
		return nil, fmt.Errorf("readiness probe: %w", err)
	}
	r := &readiness{
		opts: opts.withDefaults(), probe: probe, migrations: m, committed: committed, logger: logger,
		done: make(chan struct{}),
	}
	r.lastCommitted = committed()
	first := r.check(ctx)
	r.ready, r.shown, r.migrationsOK = first.ok(), first, first.migrations == "ok"
	if !r.ready {
		logger.WarnContext(ctx, "readiness: not ready", r.attrs(first)...)
	}
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel = cancel
	go r.run(bg)
	return r, nil
}

// state is what /readyz answers: ready or not, and the checks to show.
func (r *readiness) state() (bool, map[string]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ready, map[string]string{"database": r.shown.database, "migrations": r.shown.migrations}
}

// close stops the probe and closes its connection.
func (r *readiness) close() error {
	r.cancel()
	<-r.done
	return r.probe.Close()
}

func (r *readiness) run(ctx context.Context) {
	defer close(r.done)
	ticker := time.NewTicker(r.opts.Interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		res := r.check(ctx)
		if ctx.Err() != nil {
			return // stopped during the check: its failure means nothing
		}
		r.observe(ctx, res)
		r.observed.Add(1)
	}
}

// check runs one probe. The request pool's commits since the last check
// stand in for a database the probe's own connection could not reach, as
// long as the migrations were current when last checked.
func (r *readiness) check(ctx context.Context) probeResult {
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	res := r.probeOnce(ctx)
	committed := r.committed()
	r.mu.Lock()
	defer r.mu.Unlock()
	served := committed != r.lastCommitted
	r.lastCommitted = committed
	if res.database == "ok" {
		r.migrationsOK = res.migrations == "ok"
	} else if served && r.migrationsOK {
		r.logger.DebugContext(ctx, "readiness: the probe failed but requests committed", "error", fmt.Sprint(res.err))
		return healthy
	}
	return res
}

func (r *readiness) probeOnce(ctx context.Context) probeResult {
	if err := r.probe.SQL.PingContext(ctx); err != nil {
		return probeResult{database: "unreachable", migrations: "unknown", err: err}
	}
	current, err := r.migrations.Current(ctx)
	switch {
	case err != nil:
		return probeResult{database: "ok", migrations: "unknown", err: err}
	case !current:
		return probeResult{database: "ok", migrations: "pending"}
	}
	return healthy
}

// observe moves the state with a check's result: it turns only after
// FailAfter consecutive failures, or RecoverAfter consecutive successes.
func (r *readiness) observe(ctx context.Context, res probeResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if res.ok() {
		r.fails = 0
		if r.ready {
			return
		}
		r.oks++
		if r.oks >= r.opts.RecoverAfter {
			r.ready, r.shown, r.oks = true, res, 0
			r.logger.InfoContext(ctx, "readiness: ready")
		}
		return
	}
	r.oks = 0
	if !r.ready {
		r.shown = res // the current reason
		return
	}
	r.fails++
	r.logger.DebugContext(ctx, "readiness: check failed", append(r.attrs(res), slog.Int("consecutive", r.fails))...)
	if r.fails >= r.opts.FailAfter {
		r.ready, r.shown, r.fails = false, res, 0
		r.logger.WarnContext(ctx, "readiness: not ready", r.attrs(res)...)
	}
}

func (r *readiness) attrs(res probeResult) []any {
	attrs := []any{"database", res.database, "migrations", res.migrations}
	if res.err != nil {
		attrs = append(attrs, "error", res.err.Error())
	}
	return attrs
}
