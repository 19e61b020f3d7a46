package server_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	collector "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/server"
	"github.com/tally-billing/tally/internal/telemetry"
	"github.com/tally-billing/tally/internal/testdb"
)

// receiver is an OTLP/HTTP trace receiver: it takes protobuf POSTs to
// /v1/traces and keeps each span's service and name.
type receiver struct {
	mu    sync.Mutex
	spans []string // "service span-name"
	bad   []string
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	var req collector.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(body, &req)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" || err != nil {
		rc.bad = append(rc.bad, r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Type"))
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	for _, rs := range req.ResourceSpans {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.Key == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				rc.spans = append(rc.spans, service+" "+s.Name)
			}
		}
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&collector.ExportTraceServiceResponse{})
	_, _ = w.Write(out)
}

func (rc *receiver) received() ([]string, []string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.spans), slices.Clone(rc.bad)
}

// TestOTLPExportReachesACollector: with OTEL_EXPORTER_OTLP_ENDPOINT set,
// serve's tracing exports a request's spans (HTTP, GraphQL, ledger, SQL)
// over OTLP/HTTP to the endpoint, flushed by Shutdown, under service.name
// "tally" or OTEL_SERVICE_NAME.
func TestOTLPExportReachesACollector(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		for _, service := range []string{"", "billing-eu"} {
			rc := &receiver{}
			collectorSrv := httptest.NewServer(rc)
			t.Cleanup(collectorSrv.Close)
			env := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": collectorSrv.URL, "OTEL_SERVICE_NAME": service}
			tracing, err := telemetry.Setup(context.Background(), func(k string) string { return env[k] })
			if err != nil {
				t.Fatal(err)
			}
			if !tracing.Enabled() {
				t.Fatal("tracing is off with an endpoint set")
			}
			traced, err := database.Open(context.Background(), db.URL, database.Options{TracerProvider: tracing.Provider()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { traced.Close() })
			a := newAPI(t, traced, nil, server.WithTracing(tracing.Provider()))
			admin := token(t, "root", auth.RoleAdmin)
			a.ok(admin, grantMutation, map[string]any{"input": map[string]any{
				"externalUserId": "erin", "amount": 5, "reason": "welcome", "idempotencyKey": "otlp-" + service,
			}})
			a.ts.Close() // the server span has ended once the server has stopped
			if err := tracing.Shutdown(context.Background()); err != nil {
				t.Fatalf("flushing to the collector: %v", err)
			}
			spans, bad := rc.received()
			if len(bad) > 0 {
				t.Fatalf("the collector refused: %v", bad)
			}
			want := service
			if want == "" {
				want = "tally"
			}
			for _, name := range []string{"POST /graphql", "mutation", "ledger.transaction", "sql.tx.commit"} {
				if !slices.Contains(spans, want+" "+name) {
					t.Errorf("no %q span from service %q among %v", name, want, spans)
				}
			}
		}
	})
}

// TestTracingConfiguration: without an endpoint (or with the SDK disabled,
// or the exporter "none") there is no provider at all, so nothing is
// instrumented; a protocol other than http/protobuf is refused at start
// with a line that names it, and so is an endpoint that is not an HTTP URL.
func TestTracingConfiguration(t *testing.T) {
	for _, env := range []map[string]string{
		{},
		{"OTEL_EXPORTER_OTLP_ENDPOINT": "  "},
		{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_SDK_DISABLED": "true"},
		{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1/v1/traces", "OTEL_TRACES_EXPORTER": "none"},
		{"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"},
	} {
		tracing, err := telemetry.Setup(context.Background(), func(k string) string { return env[k] })
		if err != nil || tracing.Enabled() || tracing.Provider() != nil || tracing.Shutdown(context.Background()) != nil {
			t.Errorf("%v: tracing on (%v) or failed (%v)", env, tracing.Enabled(), err)
		}
	}
	for _, env := range []map[string]string{
		{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
		{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1/v1/traces", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
		{"OTEL_EXPORTER_OTLP_ENDPOINT": "127.0.0.1:4318"},
		{"OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://collector"},
		{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://"},
		{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a b"},
		{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "nonsense\x00"},
	} {
		_, err := telemetry.Setup(context.Background(), func(k string) string { return env[k] })
		if err == nil || !strings.Contains(err.Error(), "OTEL_EXPORTER_OTLP_") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: %v, want a one-line refusal naming the variable", env, err)
		}
	}
}
