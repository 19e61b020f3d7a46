package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/config"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/server"
	"github.com/tally-billing/tally/internal/testdb"
	"github.com/tally-billing/tally/webhook"
)

// TestTracingOffRecordsNothing: a server without a tracer provider (serve
// without an OTLP endpoint) records no span, even with a recording
// provider installed as OpenTelemetry's global one: nothing in the request
// path falls back to the global provider, so tracing that is off is not
// there at all.
func TestTracingOffRecordsNothing(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	global := otel.GetTracerProvider()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp)))
	t.Cleanup(func() { otel.SetTracerProvider(global) })
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		admin, frank := token(t, "root", auth.RoleAdmin), token(t, "frank", auth.RoleUser)
		a.ok(admin, grantMutation, map[string]any{"input": map[string]any{
			"externalUserId": "frank", "amount": 100, "reason": "welcome", "idempotencyKey": "g1",
		}})
		a.ok(frank, spendMutation, map[string]any{"input": map[string]any{"amount": 1, "reason": "r", "idempotencyKey": "s1"}})
		_, _, event := pendingPurchase(t, db)
		if code, _ := a.webhook(event, webhook.Sign(event, config.DevWebhookSecret, time.Now())); code != 200 {
			t.Fatalf("webhook: %d", code)
		}
		a.ts.Close() // every request has finished
		if spans := exp.GetSpans(); len(spans) > 0 {
			t.Fatalf("%d spans recorded with tracing off, the first %q", len(spans), spans[0].Name)
		}
	})
}

// BenchmarkTracing measures what tracing costs a spend over the whole
// server (HTTP, GraphQL, ledger, SQL), in process: off (serve without an
// OTLP endpoint) and on (every span recorded, into memory; exporting runs
// off the request path, batched). Compare allocs/op:
//
//	go test -run '^$' -bench Tracing -benchtime 2000x ./internal/server
func BenchmarkTracing(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := map[bool]string{false: "off", true: "on"}[on]
		b.Run(name, func(b *testing.B) {
			db := testdb.New(b, testdb.SQLite)
			var opts []server.Option
			if on {
				tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sdktrace.NewSimpleSpanProcessor(discard{})))
				b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
				traced, err := database.Open(context.Background(), db.URL, database.Options{TracerProvider: tp})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { traced.Close() })
				db = traced
				opts = append(opts, server.WithTracing(tp))
			}
			cfg, err := config.Load(func(k string) string {
				return map[string]string{"TALLY_JWT_SECRET": testSecret, "DATABASE_URL": db.URL, "TALLY_RATE_LIMIT": "0"}[k]
			})
			if err != nil {
				b.Fatal(err)
			}
			srv, err := server.New(context.Background(), cfg, db, slog.New(slog.DiscardHandler), opts...)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { srv.Close() })
			h := srv.Handler()
			post := func(tok string, query string, vars map[string]any) {
				body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
				req := httptest.NewRequest(http.MethodPost, "/graphql", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+tok)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != 200 || bytes.Contains(rec.Body.Bytes(), []byte(`"errors"`)) {
					b.Fatalf("%d %s", rec.Code, rec.Body)
				}
			}
			user := token(b, "bench", auth.RoleUser)
			post(token(b, "root", auth.RoleAdmin), grantMutation, map[string]any{"input": map[string]any{
				"externalUserId": "bench", "amount": 1 << 40, "reason": "bench", "idempotencyKey": "g",
			}})
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				post(user, spendMutation, map[string]any{"input": map[string]any{
					"amount": 1, "reason": "r", "idempotencyKey": fmt.Sprintf("s%d", i),
				}})
			}
		})
	}
}

// discard is an exporter that drops what it is given, so that the
// benchmark measures making spans, not keeping them.
type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }
