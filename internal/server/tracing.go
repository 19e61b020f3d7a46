package server

import (
	"net/http"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/tally-billing/tally/internal/telemetry"
)

// traced wraps the router in otelhttp's server span when tracing is on, and
// returns it untouched when it is off: no middleware, no cost.
//
// The probes and /metrics are not traced (an orchestrator and a scraper hit
// them every few seconds), nor WebSocket upgrades (a span would last as
// long as the socket; each subscription event gets a GraphQL span instead).
// A caller's W3C traceparent is honoured, so that a trace begun by a gateway
// or a frontend goes on here.
func (s *Server) traced(h http.Handler) http.Handler {
	if s.tracing == nil {
		return h
	}
	return otelhttp.NewHandler(h, "http.server",
		otelhttp.WithTracerProvider(s.tracing),
		otelhttp.WithPropagators(telemetry.Propagator()),
		otelhttp.WithFilter(func(r *http.Request) bool {
			switch r.URL.Path {
			case "/healthz", "/readyz", "/metrics":
				return false
			}
			return !strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
		}),
	)
}

// nameSpan names the HTTP server span after the route, once routing has
// found it (otelhttp starts the span before): "POST /graphql".
func nameSpan(r *http.Request, route string) {
	if span := trace.SpanFromContext(r.Context()); span.IsRecording() {
		span.SetName(r.Method + " " + route)
		span.SetAttributes(semconv.HTTPRoute(route))
	}
}

// graphQLTracing is the GraphQL operation span, when tracing is on.
func (s *Server) graphQLTracing() []graphql.HandlerExtension {
	if s.tracing == nil {
		return nil
	}
	return []graphql.HandlerExtension{telemetry.NewGraphQL(s.tracing)}
}
