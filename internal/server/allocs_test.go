package server_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"entgo.io/ent/dialect"

	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/server"
	"github.com/tally-billing/tally/internal/testdb"
)

// TestAllocationsPerRequest holds the server's allocations per request (in
// the process, every goroutine's, the database driver's included) to
// budgets: a history page of 50 rows costs gqlgen about a hundred
// allocations per row, and a field middleware around every field, a cursor
// built per row or a goroutine more per row shows here long before a
// benchmark would be run. Measured with job polling off, so that only the
// request allocates.
func TestAllocationsPerRequest(t *testing.T) {
	testdb.EachInTurn(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil, server.WithJobPolling(time.Hour))
		admin, svc, alice := token(t, "root", auth.RoleAdmin), token(t, "backend", auth.RoleService), token(t, "alice", auth.RoleUser)
		a.ok(admin, grantMutation, map[string]any{"input": map[string]any{
			"externalUserId": "alice", "amount": 1_000, "reason": "seed", "idempotencyKey": "seed",
		}})
		for i := range 60 {
			a.ok(svc, `mutation($input: SpendCreditsInput!) { spendCredits(input: $input) { transaction { id } } }`,
				map[string]any{"input": map[string]any{"externalUserId": "alice", "amount": 1, "idempotencyKey": fmt.Sprint("s-", i)}})
		}
		handler := a.srv.Handler()
		// Budgets are what was measured plus 1%, and what the race detector
		// adds. The page is written by its plain writer (graph/codegen's
		// plain.go): through gqlgen's executor it cost 4,100 more (a field
		// context, a context value and two boxings per column, a field set
		// and a path per object), and a marshaler value per column 260.
		for _, op := range []struct {
			name, query string
			sqlite, pg  float64
		}{
			{"viewer { creditsBalance }", `{ viewer { creditsBalance } }`, 380, 370},
			{"history page of 50", historyPage, 1_615, 1_350},
		} {
			body := fmt.Sprintf(`{"query":%q}`, op.query)
			request := func() {
				req := httptest.NewRequest(http.MethodPost, "/graphql", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+alice)
				rec := httptest.NewRecorder()
				handler.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK || strings.Contains(rec.Body.String(), `"errors"`) {
					t.Fatalf("%s: %d %s", op.name, rec.Code, rec.Body.String())
				}
			}
			request() // the query's parse is cached, the statements prepared
			allocs := testing.AllocsPerRun(50, request)
			budget := op.sqlite
			if db.Dialect == dialect.Postgres {
				budget = op.pg
			}
			budget *= allocationsUnderRace
			t.Logf("%s: %.0f allocations per request (budget %.0f)", op.name, allocs, budget)
			if allocs > budget {
				t.Errorf("%s: %.0f allocations per request, budget %.0f", op.name, allocs, budget)
			}
		}
	})
}
