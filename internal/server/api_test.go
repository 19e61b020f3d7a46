package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/config"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/server"
	"github.com/tally-billing/tally/internal/testdb"
)

const testSecret = "test-secret-of-at-least-thirty-two-bytes!"

// api is one Tally server over a test database, called over real HTTP.
type api struct {
	t    *testing.T
	ts   *httptest.Server
	srv  *server.Server
	db   *database.DB
	logs *syncBuffer
	// jobsRunning says runJobs has started the job workers.
	jobsRunning bool
}

func newAPI(t *testing.T, db *database.DB, env map[string]string, opts ...server.Option) *api {
	t.Helper()
	vars := map[string]string{"TALLY_JWT_SECRET": testSecret, "DATABASE_URL": db.URL, "TALLY_RATE_LIMIT": "0"}
	for k, v := range env {
		vars[k] = v
	}
	cfg, err := config.Load(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	opts = append([]server.Option{server.WithJobPolling(20 * time.Millisecond)}, opts...)
	srv, err := server.New(context.Background(), cfg, db, slog.New(slog.NewJSONHandler(logs, nil)), opts...)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { ts.Close(); srv.Close() })
	return &api{t: t, ts: ts, srv: srv, db: db, logs: logs}
}

func token(t testing.TB, sub string, role auth.Role) string {
	t.Helper()
	tok, err := auth.Mint([]byte(testSecret), auth.MintClaims{Subject: sub, Role: role}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

type gqlError struct {
	Message    string         `json:"message"`
	Path       []any          `json:"path"`
	Extensions map[string]any `json:"extensions"`
}

type result struct {
	status int
	header http.Header
	Data   json.RawMessage `json:"data"`
	Errors []gqlError      `json:"errors"`
}

// code is the extensions.code of the only error, or "" when there is none.
func (r result) code() string {
	if len(r.Errors) == 0 {
		return ""
	}
	c, _ := r.Errors[0].Extensions["code"].(string)
	return c
}

// get decodes a path of the data, e.g. get("spendCredits", "user", "creditsBalance").
func (r result) get(t *testing.T, path ...string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(r.Data, &v); err != nil {
		t.Fatalf("data %s: %v", r.Data, err)
	}
	for _, p := range path {
		if list, ok := v.([]any); ok {
			i, err := strconv.Atoi(p)
			if err != nil || i < 0 || i >= len(list) {
				t.Fatalf("no item %q in %s", p, r.Data)
			}
			v = list[i]
			continue
		}
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("no %q in %s", p, r.Data)
		}
		v = m[p]
	}
	return v
}

func (a *api) post(tok, contentType string, body []byte) result {
	a.t.Helper()
	req, err := http.NewRequest(http.MethodPost, a.ts.URL+"/graphql", bytes.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	return a.do(req)
}

func (a *api) do(req *http.Request) result {
	a.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := result{status: resp.StatusCode, header: resp.Header}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &r); err != nil {
			a.t.Fatalf("status %d, body %q: %v", resp.StatusCode, raw, err)
		}
	}
	return r
}

func (a *api) gql(tok, query string, vars map[string]any) result {
	a.t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	return a.post(tok, "application/json", body)
}

// ok fails the test unless the operation succeeded.
func (a *api) ok(tok, query string, vars map[string]any) result {
	a.t.Helper()
	r := a.gql(tok, query, vars)
	if r.status != 200 || len(r.Errors) > 0 {
		a.t.Fatalf("%s\nstatus %d, errors %+v", query, r.status, r.Errors)
	}
	return r
}

// refused fails the test unless the operation failed with code and the
// money tables did not change.
func (a *api) refused(tok, query string, vars map[string]any, code string) result {
	a.t.Helper()
	before := moneyDigest(a.t, a.db)
	r := a.gql(tok, query, vars)
	if r.code() != code {
		a.t.Fatalf("%s with %v: status %d, errors %+v; want %s", query, vars, r.status, r.Errors, code)
	}
	if after := moneyDigest(a.t, a.db); after != before {
		a.t.Fatalf("%s was refused (%s) but the money tables changed", query, code)
	}
	return r
}

// moneyDigest summarizes every row money operations write.
func moneyDigest(t *testing.T, db *database.DB) string {
	t.Helper()
	var b strings.Builder
	for _, q := range []string{
		`SELECT COUNT(*), COALESCE(SUM(credits_balance), 0) FROM users`,
		`SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM credit_transactions`,
		`SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM credit_ledgers`,
		`SELECT COUNT(*), COALESCE(SUM(remaining), 0) FROM credit_lots`,
		`SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM credit_reservations`,
		`SELECT COUNT(*), 0 FROM idempotency_keys`,
		`SELECT COUNT(*), 0 FROM admin_actions`,
		`SELECT COUNT(*), 0 FROM users WHERE status = 'FROZEN'`,
	} {
		var n, sum int64
		if err := db.SQL.QueryRow(q).Scan(&n, &sum); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%d/%d ", n, sum)
	}
	return b.String()
}

const (
	grantMutation = `mutation($input: GrantCreditsInput!) { grantCredits(input: $input) {
		replayed transaction { id kind amount } user { id externalId creditsBalance }
		adminAction { action amount reason balanceBefore balanceAfter requestId } } }`
	spendMutation = `mutation($input: SpendCreditsInput!) { spendCredits(input: $input) {
		replayed transaction { id kind amount metadata { key value } postings { account amount } } user { creditsBalance availableCredits } } }`
	viewerQuery = `{ viewer { id externalId creditsBalance availableCredits
		transactions(first: 10) { totalCount edges { node { id kind amount postings { account amount } } } } } }`
	// historyPage is W3p's page (tallybench): the one the benchmarks, the
	// round-trip and the allocation budgets measure.
	historyPage = `{ viewer { transactions(first: 50) { edges { node { id amount kind createdAt } } pageInfo { endCursor hasNextPage } } } }`
)

func TestAPIAuthentication(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		if r := a.gql("", viewerQuery, nil); r.code() != "UNAUTHENTICATED" {
			t.Fatalf("viewer without a token: %+v", r.Errors)
		}
		// Public fields need no token.
		a.ok("", `{ creditPackages { id } }`, nil)

		expired := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"sub": "alice", "role": "user", "exp": time.Now().Add(-time.Hour).Unix(),
		})
		signed, _ := expired.SignedString([]byte(testSecret))
		if r := a.gql(signed, viewerQuery, nil); r.status != 401 || r.code() != "UNAUTHENTICATED" {
			t.Fatalf("expired token: %d %+v", r.status, r.Errors)
		}
		forged := token(t, "alice", auth.RoleAdmin) + "x"
		if r := a.gql(forged, viewerQuery, nil); r.status != 401 || r.code() != "UNAUTHENTICATED" {
			t.Fatalf("forged token: %d %+v", r.status, r.Errors)
		}
		svc := token(t, "backend", auth.RoleService)
		a.refused(svc, viewerQuery, nil, "FORBIDDEN")
		user := token(t, "alice", auth.RoleUser)
		a.refused(user, `{ ledgerReport { ok } }`, nil, "FORBIDDEN")
		a.refused(user, grantMutation, map[string]any{"input": map[string]any{
			"externalUserId": "alice", "amount": 100, "reason": "self-service", "idempotencyKey": "g1",
		}}, "FORBIDDEN")
	})
}

func TestAPICreditsFlow(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		admin, svc := token(t, "root", auth.RoleAdmin), token(t, "backend", auth.RoleService)
		alice, bob := token(t, "alice", auth.RoleUser), token(t, "bob", auth.RoleUser)
		a.ok(bob, viewerQuery, nil) // provisions bob

		// A grant to a user who never signed in provisions them, and is audited.
		r := a.ok(admin, grantMutation, map[string]any{"input": map[string]any{
			"externalUserId": "alice", "amount": 100, "reason": "welcome", "idempotencyKey": "g1",
		}})
		if r.get(t, "grantCredits", "user", "creditsBalance") != float64(100) ||
			r.get(t, "grantCredits", "adminAction", "balanceAfter") != float64(100) ||
			r.get(t, "grantCredits", "adminAction", "balanceBefore") != float64(0) ||
			r.get(t, "grantCredits", "adminAction", "requestId") == "" {
			t.Fatalf("grant: %s", r.Data)
		}
		aliceID := r.get(t, "grantCredits", "user", "id").(string)
		// The same key again: the first result, no second grant or audit row.
		r = a.ok(admin, grantMutation, map[string]any{"input": map[string]any{
			"externalUserId": "alice", "amount": 100, "reason": "welcome", "idempotencyKey": "g1",
		}})
		if r.get(t, "grantCredits", "replayed") != true || r.get(t, "grantCredits", "user", "creditsBalance") != float64(100) {
			t.Fatalf("replayed grant: %s", r.Data)
		}

		// The user spends from their own account.
		r = a.ok(alice, spendMutation, map[string]any{"input": map[string]any{
			"amount": 30, "reason": "report", "idempotencyKey": "s1",
			"metadata": []map[string]string{{"key": "job", "value": "42"}},
		}})
		if r.get(t, "spendCredits", "user", "creditsBalance") != float64(70) {
			t.Fatalf("spend: %s", r.Data)
		}
		// The service spends for alice, naming her by external id.
		a.ok(svc, spendMutation, map[string]any{"input": map[string]any{
			"externalUserId": "alice", "amount": 20, "idempotencyKey": "s1",
		}})
		r = a.ok(alice, viewerQuery, nil)
		if r.get(t, "viewer", "creditsBalance") != float64(50) || r.get(t, "viewer", "id") != aliceID {
			t.Fatalf("viewer: %s", r.Data)
		}
		edges := r.get(t, "viewer", "transactions", "edges").([]any)
		if len(edges) != 3 || edges[0].(map[string]any)["node"].(map[string]any)["amount"] != float64(20) {
			t.Fatalf("transactions, newest first: %s", r.Data)
		}

		spend := func(input map[string]any) map[string]any { return map[string]any{"input": input} }
		a.refused(alice, spendMutation, spend(map[string]any{"amount": 0, "idempotencyKey": "x1"}), "INVALID_ARGUMENT")
		a.refused(alice, spendMutation, spend(map[string]any{"amount": -5, "idempotencyKey": "x2"}), "INVALID_ARGUMENT")
		a.refused(alice, spendMutation, spend(map[string]any{"amount": int64(1) << 60, "idempotencyKey": "x3"}), "INVALID_ARGUMENT")
		a.refused(alice, spendMutation, spend(map[string]any{"amount": 51, "idempotencyKey": "x4"}), "INSUFFICIENT_CREDITS")
		a.refused(alice, spendMutation, spend(map[string]any{"amount": 31, "reason": "report", "idempotencyKey": "s1"}), "IDEMPOTENCY_KEY_REUSED")
		a.refused(alice, spendMutation, spend(map[string]any{"amount": 1, "idempotencyKey": ""}), "INVALID_ARGUMENT")
		a.refused(bob, spendMutation, spend(map[string]any{"userId": aliceID, "amount": 1, "idempotencyKey": "x5"}), "FORBIDDEN")
		a.refused(svc, spendMutation, spend(map[string]any{"amount": 1, "idempotencyKey": "x6"}), "INVALID_ARGUMENT")
		a.refused(svc, spendMutation, spend(map[string]any{"userId": aliceID, "externalUserId": "alice", "amount": 1, "idempotencyKey": "x7"}), "INVALID_ARGUMENT")
		a.refused(svc, spendMutation, spend(map[string]any{"externalUserId": "nobody", "amount": 1, "idempotencyKey": "x8"}), "NOT_FOUND")

		// Frozen: no spending until unfrozen; both audited.
		freeze := `mutation($input: FreezeUserInput!) { freezeUser(input: $input) { user { status } adminAction { action } } }`
		a.ok(admin, freeze, map[string]any{"input": map[string]any{"userId": aliceID, "reason": "fraud check"}})
		a.refused(alice, spendMutation, spend(map[string]any{"amount": 1, "idempotencyKey": "x9"}), "ACCOUNT_FROZEN")
		a.ok(admin, `mutation($input: UnfreezeUserInput!) { unfreezeUser(input: $input) { user { status } } }`,
			map[string]any{"input": map[string]any{"userId": aliceID, "reason": "cleared"}})
		a.ok(alice, spendMutation, spend(map[string]any{"amount": 1, "idempotencyKey": "x9"}))

		// Revoke, audited, never below zero.
		r = a.ok(admin, `mutation($input: RevokeCreditsInput!) { revokeCredits(input: $input) {
			revokedAmount user { creditsBalance } adminAction { balanceBefore balanceAfter } } }`,
			map[string]any{"input": map[string]any{"userId": aliceID, "amount": 1000, "reason": "cleanup", "idempotencyKey": "r1"}})
		if r.get(t, "revokeCredits", "revokedAmount") != float64(49) || r.get(t, "revokeCredits", "user", "creditsBalance") != float64(0) ||
			r.get(t, "revokeCredits", "adminAction", "balanceBefore") != float64(49) {
			t.Fatalf("revoke: %s", r.Data)
		}

		// The audit trail and the invariant report.
		r = a.ok(admin, `{ adminActions(first: 10) { totalCount edges { node { action admin { externalId } targetUser { externalId } } } } }`, nil)
		if r.get(t, "adminActions", "totalCount") != float64(4) {
			t.Fatalf("admin actions: %s", r.Data)
		}
		r = a.checkLedger(admin)
		if r.get(t, "ledgerReport", "ok") != true {
			t.Fatalf("ledger report: %s", r.Data)
		}
		r = a.ok(admin, `query($w: UserWhereInput) { users(first: 5, where: $w) { totalCount edges { node { externalId creditsBalance } } } }`,
			map[string]any{"w": map[string]any{"externalID": "alice"}})
		if r.get(t, "users", "totalCount") != float64(1) {
			t.Fatalf("users filtered by external id: %s", r.Data)
		}
	})
}

func TestAPIReservations(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		admin, alice, bob := token(t, "root", auth.RoleAdmin), token(t, "alice", auth.RoleUser), token(t, "bob", auth.RoleUser)
		a.ok(admin, grantMutation, map[string]any{"input": map[string]any{
			"externalUserId": "alice", "amount": 100, "reason": "welcome", "idempotencyKey": "g1",
		}})
		r := a.ok(alice, `mutation { reserveCredits(input: {amount: 60, ttlSeconds: 600, idempotencyKey: "r1"}) {
			reservation { id status amount } user { creditsBalance availableCredits reservedCredits } } }`, nil)
		if r.get(t, "reserveCredits", "user", "availableCredits") != float64(40) {
			t.Fatalf("reserve: %s", r.Data)
		}
		resID := r.get(t, "reserveCredits", "reservation", "id").(string)
		a.ok(bob, viewerQuery, nil) // provisions bob
		capture := `mutation($input: CaptureReservationInput!) { captureReservation(input: $input) {
			reservation { status capturedAmount } user { creditsBalance availableCredits } } }`
		a.refused(bob, capture, map[string]any{"input": map[string]any{"reservationId": resID, "idempotencyKey": "c1"}}, "NOT_FOUND")
		a.refused(alice, capture, map[string]any{"input": map[string]any{"reservationId": resID, "amount": 61, "idempotencyKey": "c1"}}, "INVALID_ARGUMENT")
		r = a.ok(alice, capture, map[string]any{"input": map[string]any{"reservationId": resID, "amount": 45, "idempotencyKey": "c1"}})
		if r.get(t, "captureReservation", "user", "creditsBalance") != float64(55) ||
			r.get(t, "captureReservation", "user", "availableCredits") != float64(55) {
			t.Fatalf("capture: %s", r.Data)
		}
		a.refused(alice, `mutation($id: ID!) { releaseReservation(input: {reservationId: $id, idempotencyKey: "l1"}) { reservation { status } } }`,
			map[string]any{"id": resID}, "CONFLICT")
	})
}

func TestAPINodeAuthorization(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		admin, alice, bob := token(t, "root", auth.RoleAdmin), token(t, "alice", auth.RoleUser), token(t, "bob", auth.RoleUser)
		r := a.ok(admin, grantMutation, map[string]any{"input": map[string]any{
			"externalUserId": "alice", "amount": 10, "reason": "welcome", "idempotencyKey": "g1",
		}})
		txnID := r.get(t, "grantCredits", "transaction", "id").(string)
		aliceID := r.get(t, "grantCredits", "user", "id").(string)
		node := `query($id: ID!) { node(id: $id) { id } }`
		for _, id := range []string{txnID, aliceID} {
			if r := a.gql(alice, node, map[string]any{"id": id}); r.code() != "" {
				t.Fatalf("alice reading her own %s: %+v", id, r.Errors)
			}
			if r := a.gql(bob, node, map[string]any{"id": id}); r.code() != "NOT_FOUND" {
				t.Fatalf("bob reading alice's %s: %+v", id, r.Errors)
			}
			if r := a.gql(admin, node, map[string]any{"id": id}); r.code() != "" {
				t.Fatalf("admin reading %s: %+v", id, r.Errors)
			}
		}
		// An admin action is for admins only, even for its target.
		r = a.ok(admin, `{ adminActions(first: 1) { edges { node { id } } } }`, nil)
		actionID := r.get(t, "adminActions", "edges").([]any)[0].(map[string]any)["node"].(map[string]any)["id"].(string)
		if r := a.gql(alice, node, map[string]any{"id": actionID}); r.code() != "NOT_FOUND" {
			t.Fatalf("alice reading an admin action: %+v", r.Errors)
		}
		if r := a.gql(alice, node, map[string]any{"id": "garbage"}); r.code() != "INVALID_ARGUMENT" {
			t.Fatalf("malformed id: %+v", r.Errors)
		}
	})
}

func TestAPILimits(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		alice := token(t, "alice", auth.RoleUser)
		a.ok(alice, viewerQuery, nil) // provisions alice
		a.refused(alice, `{ viewer { transactions(first: 1000) { totalCount } } }`, nil, "INVALID_ARGUMENT")
		a.refused(alice, `{ viewer { transactions(last: -1) { totalCount } } }`, nil, "INVALID_ARGUMENT")

		deep := `{ viewer { lots(first: 1) { edges { node { transaction { user { lots(first: 1) { edges { node { transaction { user { id } } } } } } } } } } } }`
		if r := a.gql(alice, deep, nil); r.code() != "INVALID_ARGUMENT" || !strings.Contains(r.Errors[0].Message, "nested") {
			t.Fatalf("deep query: %+v", r.Errors)
		}
		var wide strings.Builder
		wide.WriteString("{ viewer {")
		for i := range 10 {
			fmt.Fprintf(&wide, " t%d: transactions(first: 100) { edges { node { id kind amount postings { account amount } } } }", i)
		}
		wide.WriteString(" } }")
		if r := a.gql(alice, wide.String(), nil); len(r.Errors) == 0 || !strings.Contains(r.Errors[0].Message, "complexity") {
			t.Fatalf("wide query: %+v", r.Errors)
		}

		big := []byte(`{"query":"{ creditPackages { id } }","pad":"` + strings.Repeat("x", 2<<20) + `"}`)
		if r := a.post(alice, "application/json", big); r.status != 413 {
			t.Fatalf("oversized body: %d", r.status)
		}
		form := url.Values{"query": {`mutation { spendCredits(input: {amount: 1, idempotencyKey: "f"}) { replayed } }`}}
		for _, ct := range []string{"application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain"} {
			if r := a.post(alice, ct, []byte(form.Encode())); r.status != 415 {
				t.Fatalf("%s POST: %d", ct, r.status)
			}
		}
		req, _ := http.NewRequest(http.MethodGet, a.ts.URL+"/graphql?query="+url.QueryEscape(`mutation { spendCredits(input: {amount: 1, idempotencyKey: "g"}) { replayed } }`), nil)
		req.Header.Set("Authorization", "Bearer "+alice)
		if r := a.do(req); r.status == 200 && r.code() == "" {
			t.Fatalf("a mutation over GET was accepted: %d %+v", r.status, r.Errors)
		}
		req, _ = http.NewRequest(http.MethodGet, a.ts.URL+"/graphql?query="+url.QueryEscape(`{ creditPackages { id } }`), nil)
		if r := a.do(req); r.status != 200 || r.code() != "" {
			t.Fatalf("a query over GET: %d %+v", r.status, r.Errors)
		}
	})
}

func TestAPIRateLimit(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, map[string]string{"TALLY_RATE_LIMIT": "1", "TALLY_RATE_BURST": "3"})
		alice := token(t, "alice", auth.RoleUser)
		for i := range 3 {
			if r := a.gql(alice, `{ creditPackages { id } }`, nil); r.status != 200 {
				t.Fatalf("request %d within the burst: %d", i, r.status)
			}
		}
		r := a.gql(alice, `{ creditPackages { id } }`, nil)
		if r.status != 429 || r.header.Get("Retry-After") == "" {
			t.Fatalf("past the burst: %d, Retry-After %q", r.status, r.header.Get("Retry-After"))
		}
		// Another caller has a bucket of its own.
		if r := a.gql(token(t, "bob", auth.RoleUser), `{ creditPackages { id } }`, nil); r.status != 200 {
			t.Fatalf("another caller: %d", r.status)
		}
	})
}

func TestAPIInputErrorsAndMediaTypes(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		alice := token(t, "alice", auth.RoleUser)
		a.ok(alice, viewerQuery, nil)
		// Input that is not an Int at all (past int64, in the query text or in
		// variables, or a string, even one of digits) fails GraphQL validation
		// before any resolver runs; never INTERNAL. A JSON client gets 200
		// with the errors (GraphQL over HTTP), without a data entry.
		for _, c := range []struct {
			query string
			vars  map[string]any
		}{
			{`mutation { spendCredits(input: {amount: 99999999999999999999, idempotencyKey: "big"}) { replayed } }`, nil},
			{spendMutation, map[string]any{"input": map[string]any{"amount": 1e30, "idempotencyKey": "big2"}}},
			{spendMutation, map[string]any{"input": map[string]any{"amount": "ten", "idempotencyKey": "big3"}}},
			{spendMutation, map[string]any{"input": map[string]any{"amount": "5", "idempotencyKey": "big4"}}},
		} {
			if r := a.refused(alice, c.query, c.vars, "GRAPHQL_VALIDATION_FAILED"); r.status != 200 || r.Data != nil {
				t.Fatalf("%v: status %d, data %s", c.vars, r.status, r.Data)
			}
		}

		body := []byte(`{"query":"{ creditPackages { id } }"}`)
		req, _ := http.NewRequest(http.MethodPost, a.ts.URL+"/graphql", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/graphql-response+json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || !strings.HasPrefix(ct, "application/graphql-response+json") {
			t.Fatalf("Accept: application/graphql-response+json answered %d %q", resp.StatusCode, ct)
		}
	})
}

func TestAPIProductionHidesIntrospection(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		prod := map[string]string{"TALLY_ENV": "production", "TALLY_SEED_DEMO_DATA": "false"}
		a := newAPI(t, db, prod)
		if r := a.gql("", `{ __schema { types { name } } }`, nil); len(r.Errors) == 0 {
			t.Fatal("introspection answered in production")
		}
		resp, err := http.Get(a.ts.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Fatalf("the playground answered %d in production", resp.StatusCode)
		}
		prod["TALLY_INTROSPECTION"] = "true"
		b := newAPI(t, db, prod)
		b.ok("", `{ __schema { types { name } } }`, nil)
	})
}

func TestAPICreditPackageAdmin(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		admin := token(t, "root", auth.RoleAdmin)
		a.ok(admin, viewerQuery, nil)
		create := `mutation($input: CreateCreditPackageInput!) { createCreditPackage(input: $input) {
			creditPackage { id name credits priceAmount currency active } adminAction { action targetId } } }`
		r := a.ok(admin, create, map[string]any{"input": map[string]any{"name": "Mega", "credits": 5000, "priceAmount": 19900, "currency": "EUR"}})
		pkgID := r.get(t, "createCreditPackage", "creditPackage", "id").(string)
		if r.get(t, "createCreditPackage", "creditPackage", "currency") != "eur" ||
			r.get(t, "createCreditPackage", "adminAction", "targetId") != pkgID {
			t.Fatalf("create: %s", r.Data)
		}
		a.refused(admin, create, map[string]any{"input": map[string]any{"name": "Mega", "credits": 1, "priceAmount": 1, "currency": "eur"}}, "CONFLICT")
		a.refused(admin, create, map[string]any{"input": map[string]any{"name": "Zero", "credits": 0, "priceAmount": 1, "currency": "eur"}}, "INVALID_ARGUMENT")
		a.refused(admin, create, map[string]any{"input": map[string]any{"name": "Bad", "credits": 1, "priceAmount": 1, "currency": "euro"}}, "INVALID_ARGUMENT")

		update := `mutation($input: UpdateCreditPackageInput!) { updateCreditPackage(input: $input) { creditPackage { active priceAmount } } }`
		a.ok(admin, update, map[string]any{"input": map[string]any{"id": pkgID, "active": false}})
		r = a.ok("", `{ creditPackages { id } }`, nil)
		for _, p := range r.get(t, "creditPackages").([]any) {
			if p.(map[string]any)["id"] == pkgID {
				t.Fatal("a deactivated pack is still on sale")
			}
		}
		a.refused(admin, update, map[string]any{"input": map[string]any{"id": "pkg_01jd6m3v9q8x0n2k4t7w5y1zbc", "active": true}}, "NOT_FOUND")
		r = a.ok(admin, `{ adminActions(first: 10, where: {action: "update_credit_package"}) { totalCount } }`, nil)
		if r.get(t, "adminActions", "totalCount") != float64(1) {
			t.Fatalf("update not audited: %s", r.Data)
		}
	})
}

func TestAPICORS(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, map[string]string{"TALLY_CORS_ORIGINS": "https://app.example.com"})
		preflight := func(origin string) *http.Response {
			req, _ := http.NewRequest(http.MethodOptions, a.ts.URL+"/graphql", nil)
			req.Header.Set("Origin", origin)
			req.Header.Set("Access-Control-Request-Method", "POST")
			req.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp
		}
		if resp := preflight("https://app.example.com"); resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
			t.Fatalf("allowed origin: %d %v", resp.StatusCode, resp.Header)
		}
		if resp := preflight("https://evil.example.com"); resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("another origin was allowed: %v", resp.Header)
		}
	})
}
