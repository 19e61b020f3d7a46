package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/config"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/server"
	"github.com/tally-billing/tally/internal/testdb"
	"github.com/tally-billing/tally/internal/testwait"
	"github.com/tally-billing/tally/webhook"
)

const sqlScope = "github.com/XSAM/otelsql"

// tracedAPI is a server whose requests, ledger and SQL are traced into an
// in-memory exporter: a second pool on db opened with the tracer provider,
// as serve opens its database when an OTLP endpoint is set.
func tracedAPI(t *testing.T, db *database.DB) (*api, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	traced, err := database.Open(context.Background(), db.URL, database.Options{TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { traced.Close() })
	return newAPI(t, traced, nil, server.WithTracing(tp)), exp
}

// spanTree indexes finished spans by id.
type spanTree map[trace.SpanID]tracetest.SpanStub

// ended waits for the server span named name (otelhttp ends it after the
// response is written, so the client may see the answer first) and returns
// the spans of its trace.
func ended(t *testing.T, exp *tracetest.InMemoryExporter, name string) (tracetest.SpanStub, spanTree) {
	t.Helper()
	var root tracetest.SpanStub
	testwait.Until(t, "the "+name+" span", func() bool {
		for _, s := range exp.GetSpans() {
			if s.Name == name && s.SpanKind == trace.SpanKindServer {
				root = s
				return true
			}
		}
		return false
	})
	tree := spanTree{}
	for _, s := range exp.GetSpans() {
		if s.SpanContext.TraceID() == root.SpanContext.TraceID() {
			tree[s.SpanContext.SpanID()] = s
		}
	}
	return root, tree
}

// child is the one span named name (or, with prefix, starting with it)
// whose parent is parent.
func (tr spanTree) child(t *testing.T, parent tracetest.SpanStub, name string, prefix bool) tracetest.SpanStub {
	t.Helper()
	var found []tracetest.SpanStub
	for _, s := range tr {
		if s.Parent.SpanID() == parent.SpanContext.SpanID() && (s.Name == name || prefix && strings.HasPrefix(s.Name, name)) {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d spans %q under %q; the trace: %s", len(found), name, parent.Name, tr)
	}
	return found[0]
}

// sqlUnder is how many SQL spans have parent as their parent.
func (tr spanTree) sqlUnder(parent tracetest.SpanStub) int {
	n := 0
	for _, s := range tr {
		if s.Parent.SpanID() == parent.SpanContext.SpanID() && s.InstrumentationScope.Name == sqlScope {
			n++
		}
	}
	return n
}

func (tr spanTree) String() string {
	var b strings.Builder
	for _, s := range tr {
		b.WriteString("\n  " + s.Name + " (" + s.InstrumentationScope.Name + ") parent " + s.Parent.SpanID().String())
	}
	return b.String()
}

// leaks fails the test if an attribute of the trace holds one of the
// values: spans carry kinds and codes, never the customer's data.
func (tr spanTree) leaks(t *testing.T, values ...string) {
	t.Helper()
	for _, s := range tr {
		for _, kv := range s.Attributes {
			for _, v := range values {
				if strings.Contains(kv.Value.Emit(), v) {
					t.Errorf("span %q attribute %s holds %q", s.Name, kv.Key, v)
				}
			}
		}
	}
}

func attr(s tracetest.SpanStub, key string) string {
	for _, kv := range s.Attributes {
		if kv.Key == attribute.Key(key) {
			return kv.Value.Emit()
		}
	}
	return ""
}

// TestTracesFollowARequest: a spend over GraphQL is one trace, HTTP server
// span → GraphQL operation → ledger operation → its transaction → the SQL
// statements; a signed purchase webhook is HTTP → event processing → ledger
// transaction → SQL. Refusals are recorded by code, not as errors.
func TestTracesFollowARequest(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a, exp := tracedAPI(t, db)
		// Not alice: pendingPurchase makes her below.
		admin, dana := token(t, "root", auth.RoleAdmin), token(t, "dana", auth.RoleUser)
		a.ok(admin, grantMutation, map[string]any{"input": map[string]any{
			"externalUserId": "dana", "amount": 100, "reason": "welcome", "idempotencyKey": "g1",
		}})
		ended(t, exp, "POST /graphql")
		exp.Reset()

		body := `mutation Pay($input: SpendCreditsInput!) { spendCredits(input: $input) { user { creditsBalance } } }`
		a.ok(dana, body, map[string]any{"input": map[string]any{
			"amount": 42, "reason": "quarterly-report-for-dana", "idempotencyKey": "spend-key-1",
		}})
		httpSpan, tree := ended(t, exp, "POST /graphql")
		if attr(httpSpan, "http.route") != "/graphql" {
			t.Errorf("HTTP span attributes: %v", httpSpan.Attributes)
		}
		op := tree.child(t, httpSpan, "mutation Pay", false)
		if attr(op, "graphql.operation.type") != "mutation" || attr(op, "graphql.operation.name") != "Pay" {
			t.Errorf("GraphQL span attributes: %v", op.Attributes)
		}
		spend := tree.child(t, op, "ledger.spend", false)
		if attr(spend, "tally.ledger.operation") != "spend" || attr(spend, "tally.actor.kind") != "user" {
			t.Errorf("ledger span attributes: %v", spend.Attributes)
		}
		txn := tree.child(t, spend, "ledger.transaction", false)
		if n := tree.sqlUnder(txn); n < 3 {
			t.Fatalf("%d SQL spans under the spend's transaction; the trace: %s", n, tree)
		}
		tree.leaks(t, "dana", "quarterly-report", "spend-key-1")

		// A refusal: the code on the ledger span, which is not an error.
		exp.Reset()
		a.refused(dana, body, map[string]any{"input": map[string]any{
			"amount": 1000, "reason": "too much", "idempotencyKey": "spend-key-2",
		}}, "INSUFFICIENT_CREDITS")
		httpSpan, tree = ended(t, exp, "POST /graphql")
		op = tree.child(t, httpSpan, "mutation Pay", false)
		spend = tree.child(t, op, "ledger.spend", false)
		if attr(spend, "tally.error.code") != "INSUFFICIENT_CREDITS" || spend.Status.Code.String() == "Error" {
			t.Errorf("refused spend span: %v, status %v", spend.Attributes, spend.Status)
		}
		if !strings.Contains(attr(op, "graphql.error.codes"), "INSUFFICIENT_CREDITS") {
			t.Errorf("refused operation span: %v", op.Attributes)
		}

		// An operation name is the client's: its span's name is bounded.
		exp.Reset()
		long := "Q" + strings.Repeat("x", 5000)
		a.ok(dana, "query "+long+" { viewer { creditsBalance } }", nil)
		httpSpan, tree = ended(t, exp, "POST /graphql")
		op = tree.child(t, httpSpan, "query Qxxx", true)
		if len(op.Name) != len("query ")+64 || len(attr(op, "graphql.operation.name")) != 64 {
			t.Errorf("a long operation name made a span named %d bytes", len(op.Name))
		}

		// The webhook path.
		_, _, event := pendingPurchase(t, a.db)
		exp.Reset()
		if code, out := a.webhook(event, webhook.Sign(event, config.DevWebhookSecret, time.Now())); code != 200 || out["outcome"] != "applied" {
			t.Fatalf("purchase webhook: %d %v", code, out)
		}
		httpSpan, tree = ended(t, exp, "POST /api/webhooks/stripe")
		processing := tree.child(t, httpSpan, "stripe.event checkout.session.completed", false)
		if attr(processing, "tally.webhook.outcome") != "applied" || attr(processing, "stripe.event.id") != "evt_1" {
			t.Errorf("event span attributes: %v", processing.Attributes)
		}
		txn = tree.child(t, processing, "ledger.transaction", false)
		if n := tree.sqlUnder(txn); n < 3 {
			t.Fatalf("%d SQL spans under the webhook's transaction; the trace: %s", n, tree)
		}
		for _, s := range tree {
			if s.InstrumentationScope.Name == sqlScope && strings.Contains(attr(s, "db.query.text"), "alice") {
				t.Errorf("a statement's text holds a value: %s", attr(s, "db.query.text"))
			}
		}

		// Probes and metrics are not traced: a request after them is the
		// only trace.
		exp.Reset()
		for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
			resp, err := http.Get(a.ts.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
		a.ok(dana, viewerQuery, nil)
		ended(t, exp, "POST /graphql")
		for _, s := range exp.GetSpans() {
			if s.SpanKind == trace.SpanKindServer && s.Name != "POST /graphql" {
				t.Errorf("span %q for a probe", s.Name)
			}
		}
	})
}
