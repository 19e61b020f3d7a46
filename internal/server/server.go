// Package server wires Tally's HTTP surface: the chi router with health and
// readiness probes, metrics, the GraphQL endpoint and playground, and the
// Stripe webhook; and runs it with a graceful shutdown.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/99designs/gqlgen/graphql/playground"
	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/go-chi/cors"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/graph"
	"github.com/tally-billing/tally/internal/admin"
	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/config"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/events"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/migrator"
	"github.com/tally-billing/tally/internal/payments"
	"github.com/tally-billing/tally/internal/users"
	"github.com/tally-billing/tally/webhook"
)

// Body caps: GraphQL operations are small; Stripe events can carry large
// objects but stay well under this.
const (
	maxGraphQLBody = 1 << 20
	maxWebhookBody = 1 << 20
)

// Server is one Tally instance over an open database.
type Server struct {
	cfg      config.Config
	db       *database.DB
	migrator *migrator.Migrator
	logger   *slog.Logger
	metrics  *metrics
	verifier *auth.Verifier
	events   events.Broker
	ledger   *ledger.Service
	payments *payments.Service
	handler  http.Handler
}

// New builds the server's services and routes over db. Close releases what
// it started (the event broker's connection).
func New(ctx context.Context, cfg config.Config, db *database.DB, logger *slog.Logger) (*Server, error) {
	m, err := migrator.New(db)
	if err != nil {
		return nil, err
	}
	verifier, err := auth.VerifierFromConfig(cfg)
	if err != nil {
		return nil, err
	}
	broker, err := events.New(ctx, db, logger.With("component", "events"))
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, db: db, migrator: m, logger: logger, metrics: newMetrics(), verifier: verifier, events: broker}
	publishing := ledger.WithNotifier(s.publish)
	if tb, ok := broker.(events.Transactional); ok {
		publishing = ledger.WithTxNotifier(func(ctx context.Context, tx *ent.Tx, changes []ledger.BalanceChange) error {
			evs := make([]events.BalanceChanged, len(changes))
			for i, c := range changes {
				evs[i] = events.BalanceChanged{UserID: c.UserID, Balance: c.Balance, TransactionID: c.TransactionID, At: c.At}
			}
			query, args, err := tb.PublishStatement(evs)
			if err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, query, args...)
			return err
		})
	}
	s.ledger = ledger.New(db, publishing)
	s.metrics.watchLedger(s.ledger)
	s.payments = payments.New(db, s.ledger, payments.Config{
		SecretKey: cfg.StripeSecretKey, APIBase: cfg.StripeAPIBase, Livemode: payments.LiveKey(cfg.StripeSecretKey),
	})
	s.handler = s.routes()
	return s, nil
}

// Ledger is the server's ledger (for background work such as the sweeper).
func (s *Server) Ledger() *ledger.Service { return s.ledger }

// Close stops the event broker.
func (s *Server) Close() error { return s.events.Close() }

// publish hands a committed balance change to subscriptions. A failure
// loses a notification, never money: clients re-read the balance.
func (s *Server) publish(ctx context.Context, c ledger.BalanceChange) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	err := s.events.Publish(ctx, events.BalanceChanged{
		UserID: c.UserID, Balance: c.Balance, TransactionID: c.TransactionID, At: c.At,
	})
	if err != nil {
		s.logger.WarnContext(ctx, "publishing a balance change", "error", err.Error(), "user", c.UserID)
	}
}

// Handler is the root HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.RequestID)
	r.Use(requestLog(s.logger, s.metrics))
	r.Use(recoverer(s.logger))

	r.Get("/healthz", s.healthz)
	r.Get("/readyz", s.readyz)
	r.Handle("/metrics", promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{}))

	gql := graph.NewHandler(&graph.Resolver{
		Client:   s.db.Ent,
		Ledger:   s.ledger,
		Accounts: users.New(s.db.Ent),
		Admin:    admin.New(s.ledger),
		Payments: s.payments,
		Events:   s.events,
	}, graph.Options{
		Introspection:  s.cfg.Introspection,
		Verifier:       s.verifier,
		AllowedOrigins: s.cfg.CORSOrigins,
		Logger:         s.logger,
	})
	api := r.With(maxBody(maxGraphQLBody))
	if len(s.cfg.CORSOrigins) > 0 {
		api = api.With(cors.Handler(cors.Options{
			AllowedOrigins: s.cfg.CORSOrigins,
			AllowedMethods: []string{http.MethodGet, http.MethodPost, http.MethodOptions},
			AllowedHeaders: []string{"Authorization", "Content-Type", "Accept"},
			ExposedHeaders: []string{"X-Request-Id", "Retry-After"},
			MaxAge:         600,
		}))
	}
	api = api.With(requireJSON, auth.Middleware(s.verifier))
	if s.cfg.RateLimit > 0 {
		api = api.With(newRateLimiter(s.cfg.RateLimit, s.cfg.RateBurst).middleware)
	}
	api.Handle("/graphql", gql)
	if s.cfg.Playground {
		r.Handle("/", playground.Handler("Tally", "/graphql"))
	}
	r.Method(http.MethodPost, "/api/webhooks/stripe", webhook.New(webhook.Options{
		Secrets:             s.cfg.StripeWebhookSecrets,
		Tolerance:           s.cfg.StripeWebhookTolerance,
		AcceptedAPIVersions: s.cfg.StripeWebhookAPIVersions,
		Processor:           s.payments,
		Logger:              s.logger.With("component", "webhook"),
		MaxBody:             maxWebhookBody,
	}))
	r.NotFound(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not found"})
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method not allowed"})
	})
	return r
}

// healthz says the process is alive; it touches nothing else, so that an
// orchestrator never restarts a healthy process because the database is slow.
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz says whether this instance can serve: the database answers and
// every migration is applied.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	checks := map[string]string{"database": "ok", "migrations": "ok"}
	status := http.StatusOK
	if err := s.db.SQL.PingContext(ctx); err != nil {
		s.logger.WarnContext(ctx, "readiness: database unreachable", "error", err.Error())
		checks["database"] = "unreachable"
		checks["migrations"] = "unknown"
		status = http.StatusServiceUnavailable
	} else if current, err := s.migrator.Current(ctx); err != nil {
		s.logger.WarnContext(ctx, "readiness: migration check failed", "error", err.Error())
		checks["migrations"] = "unknown"
		status = http.StatusServiceUnavailable
	} else if !current {
		checks["migrations"] = "pending"
		status = http.StatusServiceUnavailable
	}
	overall := "ok"
	if status != http.StatusOK {
		overall = "unavailable"
	}
	writeJSON(w, status, map[string]any{"status": overall, "checks": checks})
}

// Listen opens the listening socket, so that a taken port is reported before
// anything else starts.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		var opErr *net.OpError
		if errors.As(err, &opErr) && opErr.Err != nil {
			return nil, fmt.Errorf("cannot listen on %s: %v", addr, opErr.Err)
		}
		return nil, fmt.Errorf("cannot listen on %s: %w", addr, err)
	}
	return ln, nil
}

// Serve answers requests on ln until ctx is cancelled, then stops accepting,
// lets requests in flight finish (up to the shutdown timeout) and returns.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving HTTP: %w", err)
	case <-ctx.Done():
	}
	s.logger.Info("shutting down", "timeout", s.cfg.ShutdownTimeout.String())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutting down: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving HTTP: %w", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
