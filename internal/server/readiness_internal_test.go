package server

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/migrator"
	"github.com/tally-billing/tally/internal/testdb"
)

// TestReadinessHysteresis: the state turns unready only after FailAfter
// consecutive failed checks and ready again only after RecoverAfter
// consecutive good ones; /readyz shows the current reason while unready.
func TestReadinessHysteresis(t *testing.T) {
	r := &readiness{opts: ReadinessOptions{}.withDefaults(), logger: slog.New(slog.DiscardHandler), ready: true, shown: healthy}
	down := probeResult{database: "unreachable", migrations: "unknown", err: errors.New("connection refused")}
	pending := probeResult{database: "ok", migrations: "pending"}
	ctx := context.Background()
	steps := []struct {
		res    probeResult
		ready  bool
		checks map[string]string
	}{
		{down, true, map[string]string{"database": "ok", "migrations": "ok"}},
		{down, true, nil},
		{healthy, true, nil}, // not consecutive: counting starts again
		{down, true, nil},
		{down, true, nil},
		{down, false, map[string]string{"database": "unreachable", "migrations": "unknown"}},
		{healthy, false, nil},
		{pending, false, map[string]string{"database": "ok", "migrations": "pending"}},
		{healthy, false, nil},
		{healthy, true, map[string]string{"database": "ok", "migrations": "ok"}},
		{pending, true, nil},
	}
	for i, s := range steps {
		r.observe(ctx, s.res)
		ready, checks := r.state()
		if ready != s.ready {
			t.Fatalf("after check %d (%+v): ready %v, want %v", i+1, s.res, ready, s.ready)
		}
		if s.checks != nil && (checks["database"] != s.checks["database"] || checks["migrations"] != s.checks["migrations"]) {
			t.Fatalf("after check %d: checks %v, want %v", i+1, checks, s.checks)
		}
	}
}

// TestReadinessTakesCommitsAsEvidence: when the probe's own connection
// fails (here its pool is closed) but the request pool committed
// transactions since the last check, the check counts as good, provided
// the migrations were current when last seen; without new commits it
// fails.
func TestReadinessTakesCommitsAsEvidence(t *testing.T) {
	db := testdb.New(t, testdb.SQLite)
	probe, err := database.OpenProbe(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	m, err := migrator.New(probe)
	if err != nil {
		t.Fatal(err)
	}
	var committed uint64
	r := &readiness{
		opts: ReadinessOptions{}.withDefaults(), probe: probe, migrations: m, logger: slog.New(slog.DiscardHandler),
		committed: func() uint64 { return committed },
	}
	ctx := context.Background()
	if res := r.check(ctx); !res.ok() || !r.migrationsOK {
		t.Fatalf("a working probe: %+v", res)
	}
	probe.Close()
	if res := r.check(ctx); res.database != "unreachable" {
		t.Fatalf("a closed probe without commits: %+v, want unreachable", res)
	}
	committed++
	if res := r.check(ctx); !res.ok() {
		t.Fatalf("a closed probe while requests committed: %+v, want ok", res)
	}
	r.migrationsOK = false
	committed++
	if res := r.check(ctx); res.ok() {
		t.Fatalf("commits stood in for a probe whose last migrations check was not current: %+v", res)
	}
}
