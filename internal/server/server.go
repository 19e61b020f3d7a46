// Package server wires Tally's HTTP surface: the chi router with health and
// readiness probes, metrics, the GraphQL endpoint and playground, and the
// Stripe webhook; and runs it with a graceful shutdown.
package server

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/riverqueue/river"
	"go.opentelemetry.io/otel/trace"

	"github.com/go-chi/cors"

	"github.com/tally-billing/tally/graph"
	"github.com/tally-billing/tally/internal/admin"
	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/config"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/events"
	"github.com/tally-billing/tally/internal/jobs"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/outbound"
	"github.com/tally-billing/tally/internal/payments"
	"github.com/tally-billing/tally/internal/playground"
	"github.com/tally-billing/tally/internal/users"
	"github.com/tally-billing/tally/webhook"
)

// maxWebhookBody caps Stripe events, which can carry large objects but
// stay well under this. GraphQL bodies are capped by the transport.
const maxWebhookBody = 1 << 20

// Server is one Tally instance over an open database.
type Server struct {
	cfg      config.Config
	db       *database.DB
	logger   *slog.Logger
	metrics  *metrics
	verifier *auth.Verifier
	events   events.Broker
	ledger   *ledger.Service
	payments *payments.Service
	jobs     *jobs.Queue
	inserter *jobs.Inserter
	policy   outbound.Policy // the webhook endpoint URLs allowed
	ready    *readiness
	tracing  trace.TracerProvider
	// graphQLExtensions are added after the tracing's.
	graphQLExtensions []graphql.HandlerExtension
	handler           http.Handler
}

// Option tunes a Server beyond its configuration (tests).
type Option func(*options)

type options struct {
	readiness ReadinessOptions
	tracing   trace.TracerProvider
	graphQL   []graphql.HandlerExtension
	jobPoll   time.Duration
	retries   []time.Duration
}

// WithWebhookRetries replaces the waits between the attempts of an
// outbound delivery (tests, which cannot wait minutes).
func WithWebhookRetries(waits ...time.Duration) Option {
	return func(opts *options) { opts.retries = waits }
}

// WithJobPolling sets how often idle job workers look for jobs inserted by
// other processes (tests shorten it).
func WithJobPolling(d time.Duration) Option { return func(opts *options) { opts.jobPoll = d } }

// WithReadiness tunes the readiness probe (see ReadinessOptions).
func WithReadiness(o ReadinessOptions) Option { return func(opts *options) { opts.readiness = o } }

// WithTracing traces requests with tp (see tracing.go); without it, or with
// nil, the server adds no tracing at all.
func WithTracing(tp trace.TracerProvider) Option { return func(opts *options) { opts.tracing = tp } }

// WithGraphQLExtensions adds extensions to the GraphQL handler, after the
// server's own (see graph.Options.Extensions).
func WithGraphQLExtensions(exts ...graphql.HandlerExtension) Option {
	return func(opts *options) { opts.graphQL = append(opts.graphQL, exts...) }
}

// New builds the server's services and routes over db, and starts its
// readiness probe. Close releases what it started (the probe and the event
// broker's connections).
func New(ctx context.Context, cfg config.Config, db *database.DB, logger *slog.Logger, opts ...Option) (*Server, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	verifier, err := auth.VerifierFromConfig(ctx, cfg, db.Ent)
	if err != nil {
		return nil, err
	}
	broker, err := events.New(ctx, db, logger.With("component", "events"))
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, db: db, logger: logger, metrics: newMetrics(), verifier: verifier, events: broker, tracing: o.tracing, graphQLExtensions: o.graphQL}
	publishing := ledger.WithNotifier(s.publish)
	if tb, ok := broker.(events.Transactional); ok {
		publishing = ledger.WithNotifications(func(changes []ledger.BalanceChange) (string, []string, error) {
			evs := make([]events.BalanceChanged, len(changes))
			for i, c := range changes {
				evs[i] = events.BalanceChanged{UserID: c.UserID, Balance: c.Balance, TransactionID: c.TransactionID, At: c.At}
			}
			return tb.Notifications(evs)
		})
	}
	if err := s.buildServices(cfg, publishing, o); err != nil {
		broker.Close()
		return nil, err
	}
	committed := func() uint64 { return s.ledger.Stats().Transactions }
	if s.ready, err = startReadiness(ctx, db.URL, committed, logger.With("component", "readiness"), o.readiness); err != nil {
		broker.Close()
		return nil, err
	}
	if s.handler, err = s.routes(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// buildServices makes the ledger, the payments and the job queue: the
// ledger writes the outbound events its transactions cause, with their
// jobs, through an inserter, and the queue's workers deliver them.
func (s *Server) buildServices(cfg config.Config, publishing ledger.Option, o options) error {
	var err error
	if s.inserter, err = jobs.NewInserter(s.db); err != nil {
		return err
	}
	s.policy = outbound.Policy{AllowHTTP: cfg.Outbound.AllowHTTP, AllowPrivate: cfg.Outbound.AllowPrivate}
	livemode := payments.LiveKey(cfg.StripeSecretKey)
	s.ledger = ledger.New(s.db, publishing, ledger.WithTracerProvider(o.tracing),
		outbound.LedgerEvents(s.db, cfg.Outbound.LowBalanceThreshold, s.inserter),
		ledger.WithRecharges(payments.NewRecharger(s.db, s.inserter, livemode)))
	s.metrics.watchLedger(s.ledger)
	s.payments = payments.New(s.db, s.ledger, payments.Config{
		SecretKey: cfg.StripeSecretKey, APIBase: cfg.StripeAPIBase, Livemode: livemode,
		RechargeRetryAfter: cfg.RechargeRetryAfter, Jobs: s.inserter, Logger: s.logger.With("component", "payments"),
	})
	logger := s.logger.With("component", "jobs")
	deliverer := outbound.NewDeliverer(s.db, outbound.NewSender(s.policy, cfg.Outbound.Timeout), logger).WithSchedule(o.retries)
	s.jobs, err = jobs.New(s.db, s.ledger, jobs.Config{
		Workers: cfg.Workers, CheckInterval: cfg.CheckInterval, SweepInterval: cfg.SweepInterval, PollInterval: o.jobPoll,
		Invariants: s.payments.Invariants(), Logger: logger,
		Register: func(w *river.Workers) {
			deliverer.Register(w)
			s.payments.RegisterJobs(w)
		},
		Periodic: []river.JobArgs{payments.RechargeSweepArgs{}},
		Queues: map[string]river.QueueConfig{
			outbound.Queue:         outbound.QueueConfig(cfg.Outbound.Workers, o.jobPoll),
			payments.RechargeQueue: payments.RechargeQueueConfig(cfg.Workers),
		},
		Timeout:      cfg.Outbound.JobTimeout,
		ExpiryNotice: cfg.Outbound.ExpiryNotice,
		RescueAfter:  cfg.Outbound.RescueAfter,
	})
	return err
}

// Ledger is the server's ledger (for background work such as the sweeper).
func (s *Server) Ledger() *ledger.Service { return s.ledger }

// RunJobs works the job queue until ctx ends (nothing when the
// configuration has no workers), then lets running jobs finish within
// grace.
func (s *Server) RunJobs(ctx context.Context, grace time.Duration) error {
	return s.jobs.Run(ctx, grace)
}

// Close stops the readiness probe and the event broker.
func (s *Server) Close() error { return errors.Join(s.ready.close(), s.events.Close()) }

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

// resolver gives the GraphQL resolvers the server's services.
func (s *Server) resolver() *graph.Resolver {
	return &graph.Resolver{
		Client:   s.db.Ent,
		Ledger:   s.ledger,
		Accounts: users.New(s.db.Ent),
		Admin:    admin.New(s.ledger).WithWebhooks(s.policy, s.inserter),
		Payments: s.payments,
		Checks:   s.jobs,
		Events:   s.events,
	}
}

// Handler is the root HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) routes(ctx context.Context) (http.Handler, error) {
	r := chi.NewRouter()
	r.Use(requestID)
	r.Use(requestLog(s.logger, s.metrics))
	r.Use(recoverer(s.logger))

	r.Get("/healthz", s.healthz)
	r.Get("/readyz", s.readyz)
	if s.cfg.MetricsOnAPI() {
		r.Handle("/metrics", s.MetricsHandler())
	}

	var limiter, authFailures *rateLimiter
	var wsLimit graph.RateLimit
	if s.cfg.RateLimit > 0 {
		limiter = newRateLimiter(s.cfg.RateLimit, s.cfg.RateBurst)
		authFailures = newRateLimiter(authFailuresPerSecond, authFailureBurst)
		wsLimit = func(key string) time.Duration { return limiter.wait(key, time.Now()) }
	}
	gql := graph.NewHandler(s.resolver(), graph.Options{
		Introspection:     s.cfg.Introspection,
		Production:        s.cfg.Env == config.Production,
		Verifier:          s.verifier,
		RateLimit:         wsLimit,
		AllowedOrigins:    s.cfg.CORSOrigins,
		AdminQueryTimeout: s.cfg.AdminQueryTimeout,
		Logger:            s.logger,
		Extensions:        append(s.graphQLTracing(), s.graphQLExtensions...),
	})
	api := chi.Chain()
	if len(s.cfg.CORSOrigins) > 0 {
		api = append(api, cors.Handler(cors.Options{
			AllowedOrigins: s.cfg.CORSOrigins,
			AllowedMethods: []string{http.MethodGet, http.MethodPost, http.MethodOptions},
			AllowedHeaders: []string{"Authorization", "Content-Type", "Accept"},
			ExposedHeaders: []string{"X-Request-Id", "Retry-After"},
			MaxAge:         600,
		}))
	}
	api = append(api, requireJSON)
	if authFailures != nil {
		api = append(api, authFailures.failedAuth)
	}
	api = append(api, auth.Middleware(s.verifier))
	if limiter != nil {
		api = append(api, limiter.middleware)
	}
	// The transport caps bodies itself, with a smaller cap for callers
	// without a token (it knows the caller; a cap here would not).
	r.Handle("/graphql", api.Handler(gql))
	if s.cfg.Playground {
		if err := playground.Register(r, playground.Options{Endpoint: "/graphql", DevToken: s.devToken(ctx)}); err != nil {
			return nil, err
		}
	}
	r.Method(http.MethodPost, "/api/webhooks/stripe", webhook.New(webhook.Options{
		Secrets:             s.cfg.StripeWebhookSecrets,
		Tolerance:           s.cfg.StripeWebhookTolerance,
		AcceptedAPIVersions: s.cfg.StripeWebhookAPIVersions,
		Processor:           s.payments,
		Logger:              s.logger.With("component", "webhook"),
		MaxBody:             maxWebhookBody,
		KnownEventTypes:     payments.HandledEventTypes,
		Metrics:             s.metrics.webhook,
		TracerProvider:      s.tracing,
	}))
	r.NotFound(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not found"})
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method not allowed"})
	})
	return s.traced(r), nil
}

// MetricsHandler serves the Prometheus metrics, behind TALLY_METRICS_TOKEN
// when it is set (compared in constant time).
func (s *Server) MetricsHandler() http.Handler {
	h := promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{})
	if s.cfg.MetricsToken == "" {
		return h
	}
	want := []byte("Bearer " + s.cfg.MetricsToken)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", "Bearer")
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "the metrics need TALLY_METRICS_TOKEN as a bearer token"})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// healthz says the process is alive; it touches nothing else, so that an
// orchestrator never restarts a healthy process because the database is slow.
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz says whether this instance can serve: the database answers and
// every migration is applied, as the readiness probe last concluded (see
// readiness). It touches nothing else.
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	ready, checks := s.ready.state()
	if !ready {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "unavailable", "checks": checks})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "checks": checks})
}

// Listen opens the listening socket, so that a taken port is reported before
// anything else starts.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		var opErr *net.OpError
		if errors.As(err, &opErr) && opErr.Err != nil {
			return nil, fmt.Errorf("cannot listen on %s: %w", addr, opErr.Err)
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
