package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/webhookdelivery"
	"github.com/tally-billing/tally/graph"
	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/testdb"
)

// bulkUsers adds n users in one statement (a thousand times faster than
// through the API), stamped like the admin's row so that both databases
// order them as the API's own.
func bulkUsers(t *testing.T, db *database.DB, n int) {
	t.Helper()
	_, err := db.SQL.ExecContext(context.Background(), db.Rebind(`
		WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < ?)
		INSERT INTO users (id, created_at, updated_at, external_id, credits_balance, transaction_count, status)
		SELECT 'usr_bulk' || i, r.created_at, r.updated_at, 'bulk-' || i, 0, 0, 'ACTIVE'
		  FROM seq, (SELECT created_at, updated_at FROM users WHERE external_id = 'root') r`), n)
	if err != nil {
		t.Fatal(err)
	}
}

// TestTotalCountIsCapped: an admin list's totalCount counts at most
// graph.CountCap items however many match, filtered or not, and exactly
// below it.
func TestTotalCountIsCapped(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		admin := token(t, "root", auth.RoleAdmin)
		a.ok(admin, `{ viewer { id } }`, nil)
		bulkUsers(t, db, graph.CountCap+5)
		const fields = `{ totalCount totalCountCapped pageInfo { hasNextPage } }`
		for query, want := range map[string]float64{
			`{ users(first: 2) ` + fields + ` }`:                                                        graph.CountCap,
			`{ users(first: 0, where: {status: ACTIVE}) ` + fields + ` }`:                               graph.CountCap,
			`{ users(first: 2, where: {externalIDIn: ["bulk-1", "bulk-2", "bulk-3"]}) ` + fields + ` }`: 3,
			`{ users(first: 2, where: {status: FROZEN}) ` + fields + ` }`:                               0,
		} {
			r := a.ok(admin, query, nil)
			if got := r.get(t, "users", "totalCount"); got != want {
				t.Errorf("%s: totalCount %v, want %v", query, got, want)
			}
			if got := r.get(t, "users", "totalCountCapped"); got != (want == graph.CountCap) {
				t.Errorf("%s: totalCountCapped %v", query, got)
			}
			if got := r.get(t, "users", "pageInfo", "hasNextPage"); got != (want > 2) {
				t.Errorf("%s: hasNextPage %v", query, got)
			}
		}
		// Exactly CountCap is not capped: the count reads one row past it.
		if _, err := db.SQL.ExecContext(context.Background(), db.Rebind(`UPDATE users SET status = 'FROZEN' WHERE external_id IN (?, ?, ?, ?, ?, ?)`),
			"bulk-1", "bulk-2", "bulk-3", "bulk-4", "bulk-5", "root"); err != nil {
			t.Fatal(err)
		}
		r := a.ok(admin, `{ users(first: 1, where: {status: ACTIVE}) { totalCount totalCountCapped } }`, nil)
		if r.get(t, "users", "totalCount") != float64(graph.CountCap) || r.get(t, "users", "totalCountCapped") != false {
			t.Errorf("%d active users: %s", graph.CountCap, r.Data)
		}
	})
}

// TestHistoryCountIsKept: a user's totalCount is the count the ledger keeps
// on their row (holds, spends, grants, batched or not, all counted), read
// without counting their history; a filtered history is counted, and the
// batched first pages of a list of users agree with the user's own.
func TestHistoryCountIsKept(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		admin, alice := token(t, "root", auth.RoleAdmin), token(t, "alice", auth.RoleUser)
		for i := range 3 {
			a.ok(admin, grantMutation, map[string]any{"input": map[string]any{
				"externalUserId": "alice", "amount": 10, "reason": "seed", "idempotencyKey": fmt.Sprint("grant-", i),
			}})
		}
		a.ok(alice, `mutation { spendCredits(input: {amount: 2, idempotencyKey: "s1"}) { replayed } }`, nil)
		a.ok(alice, `mutation { reserveCredits(input: {amount: 3, idempotencyKey: "r1"}) { replayed } }`, nil)
		r := a.ok(alice, `{ viewer { all: transactions(first: 1) { totalCount totalCountCapped }
			grants: transactions(first: 1, where: {kind: GRANT}) { totalCount } } }`, nil)
		if r.get(t, "viewer", "all", "totalCountCapped") != false {
			t.Errorf("a whole history's count is capped: %s", r.Data)
		}
		if all, grants := r.get(t, "viewer", "all", "totalCount"), r.get(t, "viewer", "grants", "totalCount"); all != float64(5) || grants != float64(3) {
			t.Errorf("totalCount %v of all, %v of grants; want 5 and 3", all, grants)
		}
		var real int
		if err := db.SQL.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM credit_transactions`).Scan(&real); err != nil || real != 5 {
			t.Fatalf("%d transactions (%v)", real, err)
		}
		r = a.ok(admin, `{ users(first: 5, where: {externalID: "alice"}) { edges { node {
			all: transactions(first: 1) { totalCount } grants: transactions(first: 0, where: {kind: GRANT}) { totalCount } } } } }`, nil)
		edges, _ := r.get(t, "users", "edges").([]any)
		if len(edges) != 1 || fmt.Sprint(edges[0]) != "map[node:map[all:map[totalCount:5] grants:map[totalCount:3]]]" {
			t.Errorf("the list's pages: %v", edges)
		}
	})
}

// TestFiltersNeedAnIndex: a filter or an order on a field no index serves
// is not in the schema: a validation error, before any statement.
func TestFiltersNeedAnIndex(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		admin := token(t, "root", auth.RoleAdmin)
		a.ok(admin, `{ viewer { id } }`, nil)
		for _, query := range []string{
			`{ users(where: {creditsBalanceGT: 5}) { totalCount } }`,
			`{ users(orderBy: {field: CREDITS_BALANCE}) { totalCount } }`,
			`{ users(orderBy: {field: STATUS}) { totalCount } }`,
			`{ creditTransactions(where: {reason: "x"}) { totalCount } }`,
			`{ creditTransactions(where: {amountGT: 5}) { totalCount } }`,
			`{ creditTransactions(where: {hasPostingsWith: {amount: 1}}) { totalCount } }`,
			`{ payments(where: {currency: "usd"}) { totalCount } }`,
			`{ adminActions(where: {reason: "x"}) { totalCount } }`,
			`{ processedEvents(where: {type: "checkout.session.completed"}) { totalCount } }`,
			`{ viewer { transactions(where: {actor: "x"}) { totalCount } } }`,
		} {
			r := a.refused(admin, query, nil, "GRAPHQL_VALIDATION_FAILED")
			if r.Data != nil {
				t.Errorf("%s: data %s", query, r.Data)
			}
		}
		// What the README and the playground show stays.
		a.ok(admin, `{ adminActions(first: 10, where: {action: "update_credit_package"}) { totalCount } }`, nil)
		a.ok(admin, `{ users(first: 5, where: {externalIDHasPrefix: "seeded-"}, orderBy: {field: CREATED_AT, direction: DESC}) { totalCount } }`, nil)
	})
}

// TestAdminQueryTimeout: an admin query that runs past its limit is
// stopped, on both databases, and answered TIMEOUT with what to do; a
// user's query on the same server has no such limit.
func TestAdminQueryTimeout(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		admin, alice := token(t, "root", auth.RoleAdmin), token(t, "alice", auth.RoleUser)
		first := newAPI(t, db, nil)
		first.ok(admin, `{ viewer { id } }`, nil)
		first.ok(alice, `{ viewer { id } }`, nil)
		// No index serves a substring: both databases read all 200,000
		// rows, tens of milliseconds at least, past a limit of 10 ms.
		bulkUsers(t, db, 200_000)
		a := newAPI(t, db, map[string]string{"TALLY_ADMIN_QUERY_TIMEOUT": "10ms"})
		r := a.gql(admin, `{ users(first: 10, where: {externalIDContainsFold: "nobody"}) { totalCount edges { node { id } } } }`, nil)
		if r.code() != "TIMEOUT" || !strings.Contains(r.Errors[0].Message, "narrow it") || !strings.Contains(r.Errors[0].Message, "10ms") {
			t.Fatalf("status %d, errors %+v; want TIMEOUT saying to narrow the query", r.status, r.Errors)
		}
		a.ok(alice, `{ viewer { id transactions(first: 5) { totalCount } } }`, nil)
		// The database is fine afterwards: the stopped statement left no
		// connection behind in a bad state.
		if n, err := db.Ent.User.Query().Count(context.Background()); err != nil || n != 200_002 {
			t.Fatalf("%d users (%v)", n, err)
		}
	})
}

// TestWebhookListsSayWhenCapped: the admin lists of webhook endpoints and
// deliveries count at most graph.CountCap items, as their descriptions
// say, and totalCountCapped tells when they stopped there.
func TestWebhookListsSayWhenCapped(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		a := newAPI(t, db, nil)
		admin := token(t, "root", auth.RoleAdmin)
		event := db.Ent.WebhookEvent.Create().SetType("credits.granted").SetSeq(1).SetPayload("{}").SaveX(ctx)
		endpoints := make([]*ent.WebhookEndpointCreate, graph.CountCap+1)
		for i := range endpoints {
			endpoints[i] = db.Ent.WebhookEndpoint.Create().SetURL(fmt.Sprintf("https://hooks.example.com/%d", i)).SetSecret("whsec_test")
		}
		created := db.Ent.WebhookEndpoint.CreateBulk(endpoints...).SaveX(ctx)
		deliveries := make([]*ent.WebhookDeliveryCreate, len(created))
		for i, e := range created {
			deliveries[i] = db.Ent.WebhookDelivery.Create().SetEventID(event.ID).SetEndpointID(e.ID).SetSeq(1)
			if i == 0 {
				deliveries[i].SetStatus(webhookdelivery.StatusDelivered)
			}
		}
		db.Ent.WebhookDelivery.CreateBulk(deliveries...).SaveX(ctx)
		for _, c := range []struct {
			field, where string
			first, want  int
		}{
			{"webhookEndpoints", `{}`, 1, graph.CountCap},
			{"webhookEndpoints", `{idIn: ["` + created[0].ID + `", "` + created[1].ID + `"]}`, 1, 2},
			{"webhookDeliveries", `{}`, 0, graph.CountCap},
			{"webhookDeliveries", `{status: DELIVERED}`, 1, 1},
		} {
			q := fmt.Sprintf(`{ %s(first: %d, where: %s) { totalCount totalCountCapped pageInfo { hasNextPage } edges { node { id } } } }`, c.field, c.first, c.where)
			r := a.ok(admin, q, nil)
			if r.get(t, c.field, "totalCount") != float64(c.want) || r.get(t, c.field, "totalCountCapped") != (c.want == graph.CountCap) ||
				r.get(t, c.field, "pageInfo", "hasNextPage") != (c.want > c.first) {
				t.Errorf("%s: %s", q, r.Data)
			}
		}
		a.refused(token(t, "alice", auth.RoleUser), `{ webhookDeliveries(first: 1) { totalCountCapped } }`, nil, "FORBIDDEN")
	})
}
