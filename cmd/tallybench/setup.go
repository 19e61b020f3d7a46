package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/config"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/migrator"
	"github.com/tally-billing/tally/internal/server"
)

// benchSecret signs the harness's tokens. It is fixed and public: the
// server lives only as long as the run and listens on loopback.
const benchSecret = "tallybench-secret-of-at-least-thirty-two-bytes"

// The accounts the workloads use. W1 and B1 spend from different users, so
// that neither waits on the other's row lock and each one's transaction
// count can be checked on its own.
const (
	hotExternalID    = "bench-hot"
	rawExternalID    = "bench-raw"
	readerExternalID = "bench-reader"
	// seedBalance is far more than any run can spend, so that no spend is
	// ever refused for want of credits.
	seedBalance  = int64(1) << 40
	readerCredit = int64(1000)
)

// env is everything one benchmark runs against: a fresh migrated database,
// a Tally server over real HTTP on loopback, and a second pool for the
// raw-SQL baselines.
type env struct {
	dialect string
	db      *database.DB
	ledger  *ledger.Service
	raw     *rawStore
	rawDB   *database.DB
	api     *gqlClient
	baseURL string

	serviceToken, readerToken string
	hotUserID, rawUserID      string
	readerUserID              string

	cleanup []func()
}

// Close stops the server and removes the database, last created first.
func (e *env) Close() {
	for i := len(e.cleanup) - 1; i >= 0; i-- {
		e.cleanup[i]()
	}
}

func newEnv(ctx context.Context, o options) (_ *env, err error) {
	e := &env{}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	url, err := e.freshDatabase(ctx, o)
	if err != nil {
		return nil, err
	}
	// The server's configuration comes from the environment like a real
	// deployment's (so that TALLY_DB_MAX_CONNS and friends can be tried),
	// except what the harness must control.
	fixed := map[string]string{
		"DATABASE_URL":     url,
		"TALLY_JWT_SECRET": benchSecret,
		"TALLY_RATE_LIMIT": "0", // the limiter would refuse the load
		// One log line per request would be a large part of the work.
		"TALLY_LOG_LEVEL": "error",
		// Set together with the secret, a public key is a config error.
		"TALLY_JWT_PUBLIC_KEY": "",
	}
	cfg, err := config.Load(func(k string) string {
		if v, ok := fixed[k]; ok {
			return v
		}
		return os.Getenv(k)
	})
	if err != nil {
		return nil, err
	}
	if e.db, err = database.Open(ctx, url, database.Options{MaxOpenConns: cfg.DBMaxConns}); err != nil {
		return nil, err
	}
	e.cleanup = append(e.cleanup, func() { e.db.Close() })
	e.dialect = e.db.Dialect
	m, err := migrator.New(e.db)
	if err != nil {
		return nil, err
	}
	if _, err := m.Up(ctx); err != nil {
		return nil, err
	}
	if err := e.startServer(ctx, cfg); err != nil {
		return nil, err
	}
	if e.rawDB, err = database.Open(ctx, url, database.Options{MaxOpenConns: cfg.DBMaxConns}); err != nil {
		return nil, err
	}
	e.cleanup = append(e.cleanup, func() { e.rawDB.Close() })
	if e.raw, err = newRawStore(ctx, e.rawDB); err != nil {
		return nil, err
	}
	e.cleanup = append(e.cleanup, e.raw.Close)
	e.api = newGQLClient(e.baseURL, maxClients(o.clients))
	return e, e.seed(ctx)
}

// freshDatabase creates the run's database: a SQLite file in a temporary
// directory, or a new database on the PostgreSQL server (a whole database
// rather than a schema, so that nothing of an earlier run or another user
// of the server is in the tables the invariants are checked over).
func (e *env) freshDatabase(ctx context.Context, o options) (string, error) {
	switch o.db {
	case "sqlite":
		dir, err := os.MkdirTemp("", "tallybench-")
		if err != nil {
			return "", err
		}
		e.cleanup = append(e.cleanup, func() { os.RemoveAll(dir) })
		return "sqlite://" + filepath.Join(dir, "tally.db"), nil
	case "postgres":
		url, drop, err := database.ScratchPostgresDatabase(ctx, o.pgURL, "tallybench")
		if err != nil {
			return "", err
		}
		e.cleanup = append(e.cleanup, func() {
			if err := drop(context.Background()); err != nil {
				logf("dropping the benchmark database: %v", err)
			}
		})
		return url, nil
	}
	return "", fmt.Errorf("--db must be sqlite or postgres, not %q", o.db)
}

// startServer runs Tally in this process on a loopback port, so that the
// workloads go through its real HTTP stack (router, middleware, auth,
// GraphQL) exactly as a client's requests would.
func (e *env) startServer(ctx context.Context, cfg config.Config) error {
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	srv, err := server.New(ctx, cfg, e.db, logger)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		return err
	}
	serveCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(serveCtx, ln) }()
	e.cleanup = append(e.cleanup, func() {
		stop()
		if err := <-done; err != nil {
			logf("server: %v", err)
		}
		srv.Close()
	})
	e.ledger = srv.Ledger()
	e.baseURL = "http://" + ln.Addr().String()
	return waitReady(ctx, e.baseURL)
}

// waitReady polls /readyz: Serve starts accepting in a goroutine.
func waitReady(ctx context.Context, base string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return errors.New("the server did not become ready within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// seed creates the three users and their credits through the ledger (so
// that lots and postings are as Tally writes them), and mints the tokens.
func (e *env) seed(ctx context.Context) error {
	admin := ledger.Actor{Kind: ledger.ActorAdmin, ID: "tallybench"}
	for _, u := range []struct {
		external string
		id       *string
		credits  int64
	}{
		{hotExternalID, &e.hotUserID, seedBalance},
		{rawExternalID, &e.rawUserID, seedBalance},
		{readerExternalID, &e.readerUserID, readerCredit},
	} {
		created, err := e.db.Ent.User.Create().SetExternalID(u.external).Save(ctx)
		if err != nil {
			return fmt.Errorf("creating user %s: %w", u.external, err)
		}
		*u.id = created.ID
		if _, err := e.ledger.Grant(ctx, admin, ledger.GrantRequest{
			UserID: created.ID, Amount: u.credits, IdempotencyKey: "seed-" + u.external,
		}); err != nil {
			return fmt.Errorf("granting credits to %s: %w", u.external, err)
		}
	}
	var err error
	if e.serviceToken, err = auth.Mint([]byte(benchSecret), auth.MintClaims{Subject: "tallybench", Role: auth.RoleService}, 24*time.Hour); err != nil {
		return err
	}
	e.readerToken, err = auth.Mint([]byte(benchSecret), auth.MintClaims{Subject: readerExternalID}, 24*time.Hour)
	return err
}

func maxClients(cs []int) int {
	m := 1
	for _, c := range cs {
		m = max(m, c)
	}
	return m
}
