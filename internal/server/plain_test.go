package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"

	gqlgen "github.com/99designs/gqlgen/graphql"

	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/server"
	"github.com/tally-billing/tally/internal/testdb"
)

// fieldsSeen is a field interceptor: with one installed, every field goes
// through gqlgen's executor (graph.NewHandler turns the plain writers off),
// and it counts the fields it saw.
type fieldsSeen struct {
	mu   sync.Mutex
	seen map[string]int
}

func (*fieldsSeen) ExtensionName() string                  { return "fieldsSeen" }
func (*fieldsSeen) Validate(gqlgen.ExecutableSchema) error { return nil }

func (f *fieldsSeen) InterceptField(ctx context.Context, next gqlgen.Resolver) (any, error) {
	fc := gqlgen.GetFieldContext(ctx)
	f.mu.Lock()
	if f.seen == nil {
		f.seen = map[string]int{}
	}
	f.seen[fc.Object+"."+fc.Field.Name]++
	f.mu.Unlock()
	return next(ctx)
}

func (f *fieldsSeen) count(field string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seen[field]
}

// postGraphQL posts a request body and returns the response as written.
func postGraphQL(t testing.TB, url, tok string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/graphql", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, raw
}

// TestPlainWritesAnswerAsGqlgen: an object whose selection asks only for
// columns is written by the generated plain writers (graph/codegen/plain.go),
// the rest by gqlgen. Every operation here must be answered byte for byte as
// gqlgen's executor alone answers it (a server with a field interceptor),
// with aliases, fragments, @skip and @include, __typename, nulls and set
// values of every nullable column, escaped text, an empty page, a page whose
// nodes ask for a resolver, an admin list, and a refused page size.
func TestPlainWritesAnswerAsGqlgen(t *testing.T) {
	testdb.EachInTurn(t, func(t *testing.T, db *database.DB) {
		plain := newAPI(t, db, nil)
		seen := &fieldsSeen{}
		executor := newAPI(t, db, nil, server.WithGraphQLExtensions(seen))
		admin, alice := token(t, "root", auth.RoleAdmin), token(t, "alice", auth.RoleUser)
		plain.ok(admin, grantMutation, map[string]any{"input": map[string]any{
			"externalUserId": "alice", "amount": 1_000, "idempotencyKey": "seed",
			"reason": "\"quoted\" <b>&amp;</b> é ✓ \\ back\\slash",
		}})
		for i := range 4 {
			plain.ok(alice, spendMutation, map[string]any{"input": map[string]any{
				"amount": i + 1, "idempotencyKey": fmt.Sprint("s-", i),
			}})
		}
		plain.ok(alice, `mutation { reserveCredits(input: {amount: 60, ttlSeconds: 600, idempotencyKey: "r1"}) { reservation { id } } }`, nil)
		last := plain.ok(alice, `{ viewer { transactions(first: 100) { pageInfo { endCursor } } } }`, nil).
			get(t, "viewer", "transactions", "pageInfo", "endCursor")

		const columns = `fragment Columns on CreditTransaction {
			id createdAt userId kind amount reason actor idempotencyKey paymentId reservationId }`
		for _, c := range []struct {
			name, tok, query string
			vars             map[string]any
			refused          bool
		}{
			{name: "the benchmark's page", tok: alice, query: historyPage},
			{name: "every column, aliases, fragments, directives", tok: alice, query: `query($skip: Boolean!, $include: Boolean!) {
				viewer { __typename t: transactions(first: 10) { __typename totalCount
					edges { __typename c: cursor @include(if: $include) node { ...Columns ... on CreditTransaction { amt: amount kind @skip(if: $skip) } } }
					pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } } } ` + columns,
				vars: map[string]any{"skip": true, "include": false}},
			{name: "the same, directives the other way", tok: alice, query: `query($skip: Boolean!, $include: Boolean!) {
				viewer { transactions(first: 3) { edges { c: cursor @include(if: $include) node { ...Columns @skip(if: $skip) id } } } } } ` + columns,
				vars: map[string]any{"skip": false, "include": true}},
			{name: "an empty page", tok: alice, query: `query($after: Cursor) { viewer { transactions(first: 5, after: $after) {
				totalCount edges { node { id } } pageInfo { hasNextPage startCursor endCursor } } } }`,
				vars: map[string]any{"after": last}},
			{name: "nodes asking for a resolver", tok: alice, query: `{ viewer { transactions(first: 3) { edges { node {
				id amount user { __typename externalId creditsBalance } } } } } }`},
			{name: "an admin's list", tok: admin, query: `{ creditTransactions(first: 20) { totalCount edges { cursor node { ...Columns } } } } ` + columns},
			{name: "a refused page size", tok: alice, query: `{ viewer { transactions(first: 100000) { edges { node { id } } } } }`, refused: true},
		} {
			body, _ := json.Marshal(map[string]any{"query": c.query, "variables": c.vars})
			status, got := postGraphQL(t, plain.ts.URL, c.tok, body)
			wantStatus, want := postGraphQL(t, executor.ts.URL, c.tok, body)
			if status != wantStatus || !bytes.Equal(got, want) {
				t.Errorf("%s: plain writers answered\n%d %s\ngqlgen alone\n%d %s", c.name, status, got, wantStatus, want)
			}
			if hasErrors := bytes.Contains(got, []byte(`"errors"`)); hasErrors != c.refused || !json.Valid(got) {
				t.Errorf("%s: errors %t, want %t: %s", c.name, hasErrors, c.refused, got)
			}
		}
		// Nine transactions' columns passed the interceptor: it saw what
		// the plain writers would have written.
		if n := seen.count("CreditTransaction.amount"); n == 0 {
			t.Errorf("the field interceptor saw no CreditTransaction.amount: the plain writers ran with it installed")
		}
	})
}
