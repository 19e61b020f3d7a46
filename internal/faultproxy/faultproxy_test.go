package faultproxy_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/faultproxy"
	"github.com/tally-billing/tally/internal/testdb"
)

// setup returns a proxy in front of the test PostgreSQL server, a URL of a
// fresh schema through it, and a connection to that schema that does not
// pass through it (to see what the server committed). The proxy works on
// PostgreSQL's protocol: there is nothing to proxy with SQLite.
func setup(t *testing.T) (*faultproxy.Proxy, string, *pgx.Conn) {
	t.Helper()
	server := os.Getenv(testdb.EnvPostgres)
	if server == "" {
		t.Skipf("the fault proxy speaks PostgreSQL's protocol: set %s to test it", testdb.EnvPostgres)
	}
	ctx := context.Background()
	direct, drop, err := database.ScratchPostgres(ctx, server, "faultproxy_test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = drop(context.Background()) })
	p, proxied, err := faultproxy.Through(direct)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	conn, err := pgx.Connect(ctx, direct)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	if _, err := conn.Exec(ctx, "CREATE TABLE t (x int)"); err != nil {
		t.Fatal(err)
	}
	return p, proxied, conn
}

func rows(t *testing.T, conn *pgx.Conn) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM t").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCutAtCommit: a transaction committed through the proxy while it cuts
// at COMMIT fails for the client, yet the server committed it; statements
// before the COMMIT pass, and so does everything once the proxy passes
// again.
func TestCutAtCommit(t *testing.T) {
	p, proxied, direct := setup(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, proxied)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p.CutAtCommit()
	if _, err := tx.Exec(ctx, "INSERT INTO t VALUES (1)"); err != nil {
		t.Fatalf("a statement before the COMMIT: %v", err)
	}
	if err := tx.Commit(ctx); err == nil {
		t.Fatal("COMMIT answered through a proxy that cuts at COMMIT")
	}
	if got := rows(t, direct); got != 1 {
		t.Fatalf("the server holds %d rows after the cut COMMIT, want 1 (committed)", got)
	}
	if p.Commits() != 1 || p.Cuts() != 1 {
		t.Fatalf("commits %d, cuts %d; want 1 and 1", p.Commits(), p.Cuts())
	}

	p.Pass()
	again, err := pgx.Connect(ctx, proxied)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close(ctx)
	tx, err = again.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO t VALUES (2)"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("COMMIT through a proxy that passes: %v", err)
	}
	if got := rows(t, direct); got != 2 || p.Commits() != 2 || p.Cuts() != 1 {
		t.Fatalf("rows %d, commits %d, cuts %d; want 2, 2, 1", got, p.Commits(), p.Cuts())
	}
}

// TestCutAtExtendedProtocolCommit: a COMMIT sent as Parse, Bind, Execute
// and Sync is found and cut too.
func TestCutAtExtendedProtocolCommit(t *testing.T) {
	p, proxied, direct := setup(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, proxied)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	pg := conn.PgConn()
	for _, q := range []string{"BEGIN", "INSERT INTO t VALUES (1)"} {
		if _, err := pg.ExecParams(ctx, q, nil, nil, nil, nil).Close(); err != nil {
			t.Fatal(err)
		}
	}
	p.CutAtCommit()
	if _, err := pg.ExecParams(ctx, "commit;", nil, nil, nil, nil).Close(); err == nil {
		t.Fatal("an extended-protocol COMMIT answered through a proxy that cuts at COMMIT")
	}
	if got := rows(t, direct); got != 1 || p.Cuts() != 1 {
		t.Fatalf("rows %d, cuts %d; want 1 and 1", got, p.Cuts())
	}
}

// TestRefuse: open connections are cut and new ones fail until the proxy
// passes again.
func TestRefuse(t *testing.T) {
	p, proxied, _ := setup(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, proxied)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	p.Refuse()
	if _, err := conn.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("a connection open before Refuse still answers")
	}
	if c, err := pgx.Connect(ctx, proxied); err == nil {
		c.Close(ctx)
		t.Fatal("connected through a refusing proxy")
	}
	p.Pass()
	c, err := pgx.Connect(ctx, proxied)
	if err != nil {
		t.Fatalf("connecting once the proxy passes again: %v", err)
	}
	c.Close(ctx)
}

// TestDelayAndRoundTrips: with a delay, each round trip takes at least
// twice it, and the proxy counts one per simple query and one per
// extended-protocol Sync, whatever the messages before it.
func TestDelayAndRoundTrips(t *testing.T) {
	p, proxied, _ := setup(t)
	const delay = 25 * time.Millisecond
	p.SetDelay(delay)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, proxied)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	pg := conn.PgConn()
	for _, step := range []struct {
		name string
		run  func() error
	}{
		{"simple query", func() error { return pg.Exec(ctx, "SELECT 1").Close() }},
		{"extended query", func() error { _, err := pg.ExecParams(ctx, "SELECT 1", nil, nil, nil, nil).Close(); return err }},
	} {
		before, started := p.RoundTrips(), time.Now()
		if err := step.run(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		elapsed := time.Since(started)
		if got := p.RoundTrips() - before; got != 1 {
			t.Errorf("%s: %d round trips counted, want 1", step.name, got)
		}
		if elapsed < 2*delay {
			t.Errorf("%s took %s through a proxy delaying %s each way", step.name, elapsed, delay)
		}
	}
}
