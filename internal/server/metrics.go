package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/webhook"
)

// metrics live in a registry of the server's own, so that several servers in
// one test process do not collide.
type metrics struct {
	registry *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	webhook  *webhook.Metrics
}

// watchLedger exports the ledger's running totals.
func (m *metrics) watchLedger(l *ledger.Service) {
	m.registry.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "tally_ledger_transactions_total",
			Help: "Database transactions the ledger committed.",
		}, func() float64 { return float64(l.Stats().Transactions) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "tally_ledger_retries_total",
			Help: "Ledger transactions rolled back by a conflict (lock, busy database, concurrent key) and tried again.",
		}, func() float64 { return float64(l.Stats().Retries) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "tally_ledger_conflicts_total",
			Help: "Ledger operations refused with CONFLICT after too many conflicting attempts.",
		}, func() float64 { return float64(l.Stats().Conflicts) }),
	)
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_http_requests_total",
			Help: "HTTP requests by route, method and status.",
		}, []string{"route", "method", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tally_http_request_duration_seconds",
			Help:    "HTTP request latency by route.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route"}),
	}
	m.webhook = webhook.NewMetrics(m.registry)
	m.registry.MustRegister(
		m.requests, m.duration,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// ServeMetrics serves /metrics alone on ln (TALLY_METRICS_ADDR: an address
// the internet does not reach) until ctx is cancelled.
func (s *Server) ServeMetrics(ctx context.Context, ln net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.MetricsHandler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving metrics: %w", err)
	}
	return nil
}
