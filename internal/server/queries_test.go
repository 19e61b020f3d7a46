package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"entgo.io/ent/dialect"
	entsql "entgo.io/ent/dialect/sql"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/credittransaction"
	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/config"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/server"
	"github.com/tally-billing/tally/internal/testdb"
	"github.com/tally-billing/tally/webhook"
)

// countingAPI is a server whose every database statement is counted.
func countingAPI(t *testing.T, db *database.DB) (*api, *atomic.Int64) {
	t.Helper()
	return loggingAPI(t, db, nil)
}

// loggingAPI is countingAPI that also hands every statement to log.
func loggingAPI(t *testing.T, db *database.DB, log func(string)) (*api, *atomic.Int64) {
	t.Helper()
	return loggingAPIWith(t, db, nil, log)
}

// loggingAPIWith is loggingAPI with settings beyond the defaults.
func loggingAPIWith(t *testing.T, db *database.DB, env map[string]string, log func(string)) (*api, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	a := driverAPI(t, db, env, func(d dialect.Driver) dialect.Driver {
		return dialect.DebugWithContext(d, func(_ context.Context, v ...any) {
			n.Add(1)
			if log != nil {
				log(fmt.Sprint(v...))
			}
		})
	})
	return a, &n
}

// driverAPI is a server whose ent client talks to db through wrap's driver.
func driverAPI(t *testing.T, db *database.DB, env map[string]string, wrap func(dialect.Driver) dialect.Driver) *api {
	t.Helper()
	wrapped := *db
	wrapped.Driver = wrap(entsql.OpenDB(db.Dialect, db.SQL))
	wrapped.Ent = ent.NewClient(ent.Driver(wrapped.Driver))
	vars := map[string]string{"TALLY_JWT_SECRET": testSecret, "DATABASE_URL": db.URL, "TALLY_RATE_LIMIT": "0"}
	for k, v := range env {
		vars[k] = v
	}
	cfg, err := config.Load(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(context.Background(), cfg, &wrapped, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { ts.Close(); srv.Close() })
	return &api{t: t, ts: ts, db: db, logs: &syncBuffer{}}
}

// TestQueryCountsStayFlat: a connection page costs the same number of
// database statements whether it has 5 items or 50 (no N+1 on nested edges).
// Every statement is counted, the ledger's hand-written ones too (the
// balances), not only ent's.
func TestQueryCountsStayFlat(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		seedUsers(t, db, 60, 5, 4)
		a, exp := tracedAPI(t, db)
		admin, alice := token(t, "root", auth.RoleAdmin), token(t, "alice", auth.RoleUser)
		for i := range 60 {
			a.ok(admin, grantMutation, map[string]any{"input": map[string]any{
				"externalUserId": "alice", "amount": 1, "reason": "seed", "idempotencyKey": fmt.Sprint("alice-", i),
			}})
		}
		a.ok(alice, viewerQuery, nil)
		cost := func(tok, query string) int {
			before := statements(exp, "")
			a.ok(tok, query, nil)
			return statements(exp, "") - before
		}
		for _, q := range []struct{ name, tok, query string }{
			{"viewer transactions with postings", alice,
				`{ viewer { transactions(first: %d) { edges { node { id amount postings { account amount lot { id remaining } } } } } } }`},
			{"admin transactions with their users", admin,
				`{ creditTransactions(first: %d) { edges { node { id user { externalId } postings { amount } } } } }`},
			{"admin users with their lots", admin,
				`{ users(first: %d) { edges { node { externalId lots(first: 3) { edges { node { remaining } } } } } } }`},
			{"admin users with balances, transactions and payments", admin, userPageQuery},
		} {
			small, large := cost(q.tok, fmt.Sprintf(q.query, 5)), cost(q.tok, fmt.Sprintf(q.query, 50))
			t.Logf("%s: %d statements for 5 items, %d for 50", q.name, small, large)
			if small == 0 {
				t.Fatalf("%s: no statements counted; the counter is not wired", q.name)
			}
			if small != large {
				t.Errorf("%s: %d statements for 5 items, %d for 50", q.name, small, large)
			}
		}
	})
}

// spendStatementBudget is what a spend may take: on PostgreSQL BEGIN, the
// lock that reads the lots too (see ledger/lockread.go), one statement
// that writes everything (and publishes the new balance), COMMIT; SQLite,
// in process, writes a statement per table.
func spendStatementBudget(db *database.DB) int64 {
	return perDialect(db, 8, 4)
}

// perDialect is a budget on SQLite or on PostgreSQL.
func perDialect(db *database.DB, sqlite, postgres int64) int64 {
	if db.Dialect == dialect.Postgres {
		return postgres
	}
	return sqlite
}

// TestSpendStatementBudget: the statements (round trips, counting BEGIN and
// COMMIT) of one spendCredits by a service, the application backend's hot
// path. Each one under the account's lock lengthens the time every other
// spend on that account waits; a change that adds one fails here.
func TestSpendStatementBudget(t *testing.T) {
	spendStatementBudgetWith(t, nil, 0, nil)
}

// TestSpendStatementBudgetWithThreshold: with a low-balance threshold (not
// crossed) a spend costs no statement more: the available credits it is
// compared with are worked out by the spend, not read.
func TestSpendStatementBudgetWithThreshold(t *testing.T) {
	spendStatementBudgetWith(t, map[string]string{"TALLY_LOW_BALANCE_THRESHOLD": "10"}, 0, nil)
}

// TestSpendStatementBudgetWithAutoRecharge: with auto-recharge on and the
// credits above its threshold, a spend costs no statement more (as with a
// low-balance threshold); below it, with the recharge on its way, one more
// (the settings, which say a recharge is in flight).
func TestSpendStatementBudgetWithAutoRecharge(t *testing.T) {
	for _, c := range []struct {
		name      string
		threshold int
		more      int64
	}{{"above", 10, 0}, {"below with a recharge in flight", 1000, 1}} {
		t.Run(c.name, func(t *testing.T) {
			spendStatementBudgetWith(t, nil, c.more, func(a *api, db *database.DB) {
				savedCard(t, db, "alice")
				pkg := rechargePack(t, db)
				a.ok(token(t, "alice", auth.RoleUser), setAutoRecharge, rechargeInput(pkg.ID, map[string]any{"thresholdCredits": c.threshold}))
			})
		})
	}
}

func spendStatementBudgetWith(t *testing.T, env map[string]string, more int64, setup func(*api, *database.DB)) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		var mu sync.Mutex
		var statements []string
		a, n := loggingAPIWith(t, db, env, func(s string) { mu.Lock(); statements = append(statements, s); mu.Unlock() })
		admin, svc := token(t, "root", auth.RoleAdmin), token(t, "backend", auth.RoleService)
		a.ok(admin, grantMutation, map[string]any{"input": map[string]any{
			"externalUserId": "alice", "amount": 100, "reason": "seed", "idempotencyKey": "seed",
		}})
		if setup != nil {
			setup(a, db)
		}
		spend := `mutation($input: SpendCreditsInput!) { spendCredits(input: $input) {
			transaction { id amount } user { creditsBalance } replayed } }`
		// The first spend looks the user's external id up; later ones know it.
		budget := spendStatementBudget(db) + more
		for i, budget := range []int64{budget + 1, budget} {
			mu.Lock()
			statements = nil
			mu.Unlock()
			before := n.Load()
			a.ok(svc, spend, map[string]any{"input": map[string]any{
				"externalUserId": "alice", "amount": 1, "idempotencyKey": fmt.Sprint("spend-", i),
			}})
			got := n.Load() - before
			t.Logf("spend %d: %d statements", i, got)
			if got > budget {
				mu.Lock()
				t.Errorf("spend %d: %d statements, budget %d:\n%s", i, got, budget, strings.Join(statements, "\n"))
				mu.Unlock()
			}
		}
	})
}

// TestPurchaseWebhookStatementBudget: the statements of applying one
// checkout.session.completed, and of acknowledging its redelivery (Stripe
// retries, and bursts of duplicates are normal).
func TestPurchaseWebhookStatementBudget(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		var mu sync.Mutex
		var statements []string
		a, n := loggingAPI(t, db, func(s string) { mu.Lock(); statements = append(statements, s); mu.Unlock() })
		_, _, body := pendingPurchase(t, db)
		for _, step := range []struct {
			outcome string
			budget  int64
		}{{"applied", purchaseWebhookBudget(db)}, {"duplicate", duplicateWebhookBudget}} {
			mu.Lock()
			statements = nil
			mu.Unlock()
			before := n.Load()
			code, out := a.webhook(body, webhook.Sign(body, config.DevWebhookSecret, time.Now()))
			if code != 200 || out["outcome"] != step.outcome {
				t.Fatalf("delivery: %d %v, want %s", code, out, step.outcome)
			}
			got := n.Load() - before
			t.Logf("%s: %d statements", step.outcome, got)
			if got > step.budget {
				mu.Lock()
				t.Errorf("%s: %d statements, budget %d:\n%s", step.outcome, got, step.budget, strings.Join(statements, "\n"))
				mu.Unlock()
			}
		}
	})
}

// purchaseWebhookBudget is what applying a purchase may take; one of the
// statements reads the webhook endpoints, to which the purchase's
// payment.succeeded would go (with none, nothing more is written).
func purchaseWebhookBudget(db *database.DB) int64 {
	return perDialect(db, 12, 5)
}

const duplicateWebhookBudget = 1

// TestPageInfoWithoutTotalCountSkipsTheCount: a history page that asks for
// pageInfo but not totalCount does not count the whole history (one
// statement fewer), and its pageInfo is as right as with the count.
func TestPageInfoWithoutTotalCountSkipsTheCount(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a, n := countingAPI(t, db)
		admin, alice := token(t, "root", auth.RoleAdmin), token(t, "alice", auth.RoleUser)
		for i := range 7 {
			a.ok(admin, grantMutation, map[string]any{"input": map[string]any{
				"externalUserId": "alice", "amount": 1, "reason": "seed", "idempotencyKey": fmt.Sprint("seed-", i),
			}})
		}
		a.ok(alice, viewerQuery, nil)
		page := func(extra string) (int64, map[string]any) {
			before := n.Load()
			res := a.ok(alice, `{ viewer { transactions(first: 5) { `+extra+` pageInfo { hasNextPage endCursor } edges { node { id } } } } }`, nil)
			conn, _ := res.get(t, "viewer", "transactions").(map[string]any)
			return n.Load() - before, conn
		}
		counted, withCount := page("totalCount")
		uncounted, without := page("")
		if counted-uncounted != 1 {
			t.Errorf("%d statements with totalCount, %d without; want one fewer without", counted, uncounted)
		}
		if withCount["totalCount"] != float64(7) {
			t.Errorf("totalCount %v, want 7", withCount["totalCount"])
		}
		if fmt.Sprint(without["pageInfo"]) != fmt.Sprint(withCount["pageInfo"]) {
			t.Errorf("pageInfo without the count %v, with it %v", without["pageInfo"], withCount["pageInfo"])
		}
		if info, _ := without["pageInfo"].(map[string]any); info["hasNextPage"] != true {
			t.Errorf("pageInfo %v: 7 transactions in pages of 5 have a next page", info)
		}
	})
}

// TestHistoryPagesWalkTheWholeHistory: following endCursor page by page
// returns every transaction once, newest first (ties on createdAt broken by
// id, as transactions written together share their time), with pageInfo
// right on every page; with and without totalCount (which take different
// cursor conditions); and a cursor that is not one is refused.
func TestHistoryPagesWalkTheWholeHistory(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		ctx := context.Background()
		u := db.Ent.User.Create().SetExternalID("alice").SaveX(ctx)
		l := ledger.New(db)
		admin := ledger.Actor{Kind: ledger.ActorAdmin, ID: "root"}
		// Seven transactions in one database transaction share their time.
		if err := l.Within(ctx, func(ctx context.Context, tx *ledger.Tx) error {
			for i := range 7 {
				if _, err := tx.Grant(ctx, admin, ledger.GrantRequest{UserID: u.ID, Amount: 1, Reason: "seed", IdempotencyKey: fmt.Sprint("same-", i)}); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			if _, err := l.Grant(ctx, admin, ledger.GrantRequest{UserID: u.ID, Amount: 1, Reason: "seed", IdempotencyKey: fmt.Sprint("own-", i)}); err != nil {
				t.Fatal(err)
			}
		}
		var want []string
		for _, tx := range db.Ent.CreditTransaction.Query().Where(credittransaction.UserID(u.ID)).
			Order(ent.Desc(credittransaction.FieldCreatedAt), ent.Desc(credittransaction.FieldID)).AllX(ctx) {
			want = append(want, tx.ID)
		}
		alice := token(t, "alice", auth.RoleUser)
		for _, counted := range []bool{false, true} {
			extra := ""
			if counted {
				extra = "totalCount"
			}
			var got []string
			var after any
			for page := 0; ; page++ {
				res := a.ok(alice, `query($after: Cursor) { viewer { transactions(first: 5, after: $after) { `+extra+`
					edges { node { id } } pageInfo { hasNextPage hasPreviousPage endCursor } } } }`, map[string]any{"after": after})
				conn := res.get(t, "viewer", "transactions").(map[string]any)
				for _, e := range conn["edges"].([]any) {
					got = append(got, e.(map[string]any)["node"].(map[string]any)["id"].(string))
				}
				info := conn["pageInfo"].(map[string]any)
				if info["hasPreviousPage"] != (page > 0) {
					t.Fatalf("counted=%v page %d: hasPreviousPage %v", counted, page, info["hasPreviousPage"])
				}
				if counted && conn["totalCount"] != float64(len(want)) {
					t.Fatalf("totalCount %v, want %d", conn["totalCount"], len(want))
				}
				if info["hasNextPage"] != true {
					break
				}
				if page > len(want) {
					t.Fatal("the pages do not end")
				}
				after = info["endCursor"]
			}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Fatalf("counted=%v: pages gave\n%v\nwant\n%v", counted, got, want)
			}
		}
		a.refused(alice, `{ viewer { transactions(first: 5, after: "bm90IGEgY3Vyc29y") { edges { node { id } } } } }`, nil, "INVALID_ARGUMENT")
	})
}
