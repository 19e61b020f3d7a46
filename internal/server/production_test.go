package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/config"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/server"
	"github.com/tally-billing/tally/internal/testdb"
)

var production = map[string]string{"TALLY_ENV": "production", "TALLY_SEED_DEMO_DATA": "false"}

func with(base map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range base {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// TestProductionNamesNothingTheCallerDidNotSay: "Did you mean" suggestions
// named schema fields in production, and refused introspection answered
// INTERNAL with an ERROR line in the log per attempt.
func TestProductionNamesNothingTheCallerDidNotSay(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		dev := newAPI(t, db, nil)
		prod := newAPI(t, db, production)
		for _, q := range []string{
			`{ creditPackage { id } }`,      // a field
			`{ creditPackages { id nam } }`, // a field of a type
			`{ node(idd: "x") { id } }`,     // an argument
		} {
			if r := dev.gql("", q, nil); len(r.Errors) == 0 || !strings.Contains(r.Errors[0].Message, "Did you mean") {
				t.Fatalf("development, %s: %+v; want a suggestion", q, r.Errors)
			}
			r := prod.gql("", q, nil)
			if len(r.Errors) == 0 || r.code() != "GRAPHQL_VALIDATION_FAILED" {
				t.Fatalf("production, %s: %+v", q, r.Errors)
			}
			for _, e := range r.Errors {
				if strings.Contains(e.Message, "Did you mean") {
					t.Fatalf("production suggests: %s", e.Message)
				}
			}
		}

		for _, q := range []string{`{ __schema { types { name } } }`, `{ __type(name: "User") { fields { name } } }`,
			`query { ...F } fragment F on Query { __schema { queryType { name } } }`} {
			r := prod.gql("", q, nil)
			if r.code() != "FORBIDDEN" || r.Data != nil {
				t.Fatalf("introspection in production (%s): %d %+v", q, r.status, r.Errors)
			}
		}
		if strings.Contains(prod.logs.String(), `"level":"ERROR"`) {
			t.Fatalf("refusals were logged as errors:\n%s", prod.logs.String())
		}
		prod.ok("", `{ __typename creditPackages { id } }`, nil)
	})
}

// TestMetricsAreNotPublicInProduction: /metrics was open to anyone.
func TestMetricsAreNotPublicInProduction(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		metrics := func(a *api, bearer string) int {
			req, _ := http.NewRequest(http.MethodGet, a.ts.URL+"/metrics", nil)
			if bearer != "" {
				req.Header.Set("Authorization", "Bearer "+bearer)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		if code := metrics(newAPI(t, db, nil), ""); code != 200 {
			t.Fatalf("development metrics: %d", code)
		}
		if code := metrics(newAPI(t, db, production), ""); code != 404 {
			t.Fatalf("production metrics without a token or address: %d, want 404", code)
		}
		tok := "mT4kQ9zR2wX7pL1vN8cB5yH3jF6dG0sA"
		guarded := newAPI(t, db, with(production, "TALLY_METRICS_TOKEN", tok))
		for bearer, want := range map[string]int{"": 401, "wrong": 401, tok + "x": 401, tok: 200} {
			if code := metrics(guarded, bearer); code != want {
				t.Errorf("metrics with bearer %q: %d, want %d", bearer, code, want)
			}
		}

		// On an address of their own, and not on the API's.
		env := with(production, "TALLY_JWT_SECRET", testSecret, "DATABASE_URL", db.URL, "TALLY_METRICS_ADDR", "127.0.0.1:0")
		cfg, err := config.Load(func(k string) string { return env[k] })
		if err != nil {
			t.Fatal(err)
		}
		srv, err := server.New(context.Background(), cfg, db, slog.New(slog.NewJSONHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, stop := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.ServeMetrics(ctx, ln) }()
		t.Cleanup(func() { stop(); <-done })
		resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Contains(body, []byte("go_goroutines")) {
			t.Fatalf("metrics on their own address: %d", resp.StatusCode)
		}
	})
}

// TestFailedAuthenticationIsRateLimited: bad tokens were answered 401 as
// fast as they came, since the limiter ran after authentication.
func TestFailedAuthenticationIsRateLimited(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, map[string]string{"TALLY_RATE_LIMIT": "100", "TALLY_RATE_BURST": "200"})
		forged := token(t, "root", auth.RoleAdmin) + "x"
		got429 := -1
		for i := range 40 {
			r := a.gql(forged, `{ viewer { id } }`, nil)
			if r.status == 429 {
				if r.header.Get("Retry-After") == "" || r.code() != "RATE_LIMITED" {
					t.Fatalf("429 without Retry-After or code: %+v", r)
				}
				got429 = i
				break
			}
			if r.status != 401 {
				t.Fatalf("bad token %d: %d", i, r.status)
			}
		}
		if got429 < 0 {
			t.Fatal("40 bad tokens from one address were all answered 401")
		}
		// Public fields still answer without a token from that address.
		a.ok("", `{ creditPackages { id } }`, nil)
	})
}

// TestRequestIDsAreTheServers: the client's X-Request-Id was stored as the
// admin action's request id (reusable to blur the audit trail) and echoed
// at any length.
func TestRequestIDsAreTheServers(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		admin := token(t, "root", auth.RoleAdmin)
		grant := func(clientID, key string) result {
			body, _ := json.Marshal(map[string]any{"query": grantMutation, "variables": map[string]any{"input": map[string]any{
				"externalUserId": "alice", "amount": 1, "reason": "r", "idempotencyKey": key}}})
			req, _ := http.NewRequest(http.MethodPost, a.ts.URL+"/graphql", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+admin)
			req.Header.Set("X-Request-Id", clientID)
			return a.do(req)
		}
		long := strings.Repeat("z", 5000)
		seen := map[string]bool{}
		for i, clientID := range []string{"client-abc", "client-abc", long, "spaces are not <ok>"} {
			r := grant(clientID, "k"+string(rune('a'+i)))
			serverID := r.header.Get("X-Request-Id")
			if !strings.HasPrefix(serverID, "req_") || seen[serverID] {
				t.Fatalf("response request id %q (client sent %.20q)", serverID, clientID)
			}
			seen[serverID] = true
			if got := r.get(t, "grantCredits", "adminAction", "requestId"); got != serverID {
				t.Fatalf("the audit keeps request id %v, not the server's %s", got, serverID)
			}
		}
		logs := a.logs.String()
		if !strings.Contains(logs, `"client_request_id":"client-abc"`) {
			t.Error("a well-formed client request id is not logged beside the server's")
		}
		if strings.Contains(logs, long[:100]) || strings.Contains(logs, "spaces are not") {
			t.Error("an overlong or malformed client request id reached the log")
		}
	})
}
