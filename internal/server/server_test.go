package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/migrator"
	"github.com/tally-billing/tally/internal/seed"
	"github.com/tally-billing/tally/internal/testdb"
)

// syncBuffer collects the server's log lines across goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func start(t *testing.T, db *database.DB) (*httptest.Server, *syncBuffer) {
	t.Helper()
	a := newAPI(t, db, nil)
	return a.ts, a.logs
}

func get(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

type gqlResponse struct {
	Data   map[string]json.RawMessage `json:"data"`
	Errors []struct {
		Message    string         `json:"message"`
		Extensions map[string]any `json:"extensions"`
	} `json:"errors"`
}

func graphql(t *testing.T, ts *httptest.Server, query string, vars map[string]any) (int, gqlResponse) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	resp, err := http.Post(ts.URL+"/graphql", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out gqlResponse
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("decoding %q: %v", raw, err)
	}
	return resp.StatusCode, out
}

// TestProbes: healthz is 200 while the process lives; readyz is 200 when
// the server starts over a migrated database, turns 503 with the reason
// once a migration is reverted (the probe checks in the background), and
// 200 again once it is applied. The database made unreachable is
// TestReadyzFollowsAnUnreachableDatabase.
func TestProbes(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil, fastProbe)
		ts := a.ts
		if code, body := get(t, ts.URL+"/healthz"); code != 200 || body["status"] != "ok" {
			t.Fatalf("healthz: %d %v", code, body)
		}
		if code, body := get(t, ts.URL+"/readyz"); code != 200 || body["status"] != "ok" {
			t.Fatalf("readyz: %d %v", code, body)
		}

		// A migration reverted: not ready, and the reason is given.
		m, err := migrator.New(db)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Down(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
		waitReadyz(t, ts, 503, map[string]any{"database": "ok", "migrations": "pending"})
		// Alive all the same.
		if code, _ := get(t, ts.URL+"/healthz"); code != 200 {
			t.Fatalf("healthz with a pending migration: %d", code)
		}
		if _, err := m.Up(context.Background()); err != nil {
			t.Fatal(err)
		}
		waitReadyz(t, ts, 200, map[string]any{"database": "ok", "migrations": "ok"})
	})
}

func TestGraphQLServesCreditPackages(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		if _, err := seed.DemoPackages(ctx, db.Ent); err != nil {
			t.Fatal(err)
		}
		// An inactive pack is not on sale.
		db.Ent.CreditPackage.Create().SetName("Retired").SetCredits(5).SetPriceAmount(100).
			SetCurrency("usd").SetActive(false).SaveX(ctx)
		ts, _ := start(t, db)
		code, resp := graphql(t, ts, `{ creditPackages { id name credits priceAmount currency } }`, nil)
		if code != 200 || len(resp.Errors) > 0 {
			t.Fatalf("%d %+v", code, resp.Errors)
		}
		var packs []struct {
			ID      string `json:"id"`
			Name    string `json:"name"`
			Credits int64  `json:"credits"`
		}
		if err := json.Unmarshal(resp.Data["creditPackages"], &packs); err != nil {
			t.Fatal(err)
		}
		if len(packs) != 3 || packs[0].Name != "Starter" || packs[0].Credits != 100 || packs[2].Name != "Pro" {
			t.Fatalf("packs: %+v", packs)
		}

		// A pack is a Relay node.
		_, resp = graphql(t, ts, `query($id: ID!) { node(id: $id) { id ... on CreditPackage { name } } }`,
			map[string]any{"id": packs[1].ID})
		if len(resp.Errors) > 0 || !strings.Contains(string(resp.Data["node"]), `"Standard"`) {
			t.Fatalf("node(pack): %s %+v", resp.Data["node"], resp.Errors)
		}
	})
}

func TestGraphQLNodeErrors(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		u := db.Ent.User.Create().SetExternalID("alice").SaveX(context.Background())
		ts, _ := start(t, db)
		cases := []struct{ id, code string }{
			{"not-an-id", "INVALID_ARGUMENT"},
			{"pkg_01jd6m3v9q8x0n2k4t7w5y1zbc", "NOT_FOUND"}, // well formed, absent
			{"zzz_01jd6m3v9q8x0n2k4t7w5y1zbc", "NOT_FOUND"}, // unknown type
			{u.ID, "NOT_FOUND"},                             // exists, but not visible without auth
		}
		for _, c := range cases {
			_, resp := graphql(t, ts, `query($id: ID!) { node(id: $id) { id } }`, map[string]any{"id": c.id})
			if len(resp.Errors) != 1 || resp.Errors[0].Extensions["code"] != c.code {
				t.Errorf("node(%q): %+v, want %s", c.id, resp.Errors, c.code)
			}
			if string(resp.Data["node"]) != "null" {
				t.Errorf("node(%q) returned %s", c.id, resp.Data["node"])
			}
		}
	})
}

func TestHTTPEdges(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ts, logs := start(t, db)

		resp, err := http.Post(ts.URL+"/graphql", "application/json",
			strings.NewReader(`{"query":"`+strings.Repeat(" ", 2<<20)+`{ creditPackages { id } }"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("oversized GraphQL body: %d, want 413", resp.StatusCode)
		}

		resp, err = http.Post(ts.URL+"/api/webhooks/stripe", "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("unsigned webhook: %d, want 400", resp.StatusCode)
		}

		if code, _ := get(t, ts.URL+"/no/such/route"); code != 404 {
			t.Errorf("unknown route: %d", code)
		}

		resp, err = http.Get(ts.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		metrics, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(metrics), `tally_http_requests_total{method="POST",route="/api/webhooks/stripe",status="400"} 1`) {
			t.Errorf("metrics do not count the webhook request:\n%s", metrics)
		}
		for _, name := range []string{"tally_ledger_transactions_total", "tally_ledger_retries_total", "tally_ledger_conflicts_total"} {
			if !strings.Contains(string(metrics), "\n"+name+" ") {
				t.Errorf("metrics lack %s", name)
			}
		}

		// Every request gets an id, echoed to the caller and in its log line.
		resp, err = http.Get(ts.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		reqID := resp.Header.Get("X-Request-Id")
		if reqID == "" {
			t.Fatal("no X-Request-Id header")
		}
		found := false
		for _, line := range strings.Split(logs.String(), "\n") {
			var entry map[string]any
			if json.Unmarshal([]byte(line), &entry) == nil && entry["request_id"] == reqID {
				found = entry["msg"] == "request" && entry["status"] == float64(200) && entry["route"] == "/healthz"
			}
		}
		if !found {
			t.Errorf("no JSON log line for request %s in:\n%s", reqID, logs.String())
		}
	})
}

func TestInternalErrorsDoNotLeak(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ts, logs := start(t, db)
		// Every read of the packages now fails inside the database, as a
		// bug would make it (a closed pool or an unreachable database is
		// UNAVAILABLE instead: TestUnreachableDatabaseOverHTTP).
		if _, err := db.SQL.Exec(`ALTER TABLE credit_packages RENAME COLUMN name TO renamed`); err != nil {
			t.Fatal(err)
		}
		_, resp := graphql(t, ts, `{ creditPackages { id } }`, nil)
		if len(resp.Errors) != 1 || resp.Errors[0].Extensions["code"] != "INTERNAL" || resp.Errors[0].Message != "internal error" {
			t.Fatalf("want a bare INTERNAL error, got %+v", resp.Errors)
		}
		if !strings.Contains(logs.String(), "GraphQL resolver failed") {
			t.Fatal("the internal error was not logged")
		}
	})
}

func TestSeedingIsIdempotentAcrossReplicas(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		other := testdb.Open(t, db.URL)
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := db.Ent
				if i%2 == 1 {
					c = other.Ent
				}
				_, err := seed.DemoPackages(ctx, c)
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if n := db.Ent.CreditPackage.Query().CountX(ctx); n != 3 {
			t.Fatalf("%d packs after seeding 8 times, want 3", n)
		}
	})
}
