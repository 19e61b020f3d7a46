package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/credittransaction"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/testdb"
)

// statements counts the SQL statements traced so far whose text holds
// match ("" for all): the ledger's hand-written statements as well as
// ent's.
func statements(exp *tracetest.InMemoryExporter, match string) int {
	n := 0
	for _, s := range exp.GetSpans() {
		if s.InstrumentationScope.Name == sqlScope && strings.Contains(attr(s, "db.query.text"), match) {
			n++
		}
	}
	return n
}

// seedUsers writes n users with grants transactions each (one in three has
// also spent and reserved, so their balances differ) and payments payments,
// straight through the ledger: the tests that read them need many.
func seedUsers(t *testing.T, db *database.DB, n, grants, payments int) []*ent.User {
	t.Helper()
	ctx := context.Background()
	l := ledger.New(db)
	root := ledger.Actor{Kind: ledger.ActorAdmin, ID: "root"}
	backend := ledger.Actor{Kind: ledger.ActorService, ID: "backend"}
	pkg := db.Ent.CreditPackage.Create().SetName("Pack").SetCredits(10).SetPriceAmount(100).SetCurrency("usd").SaveX(ctx)
	var out []*ent.User
	for i := range n {
		u := db.Ent.User.Create().SetExternalID(fmt.Sprintf("seeded-%03d", i)).SaveX(ctx)
		for j := range grants {
			if _, err := l.Grant(ctx, root, ledger.GrantRequest{UserID: u.ID, Amount: int64(10 + i + j), Reason: "seed", IdempotencyKey: fmt.Sprint("g-", i, "-", j)}); err != nil {
				t.Fatal(err)
			}
		}
		if i%3 == 0 {
			if _, err := l.Spend(ctx, backend, ledger.SpendRequest{UserID: u.ID, Amount: 3, IdempotencyKey: fmt.Sprint("s-", i)}); err != nil {
				t.Fatal(err)
			}
			if _, err := l.Reserve(ctx, backend, ledger.ReserveRequest{UserID: u.ID, Amount: int64(1 + i), IdempotencyKey: fmt.Sprint("r-", i)}); err != nil {
				t.Fatal(err)
			}
		}
		for j := range payments {
			db.Ent.Payment.Create().SetUserID(u.ID).SetPackageID(pkg.ID).SetAmount(int64(100 + j)).SetCurrency("usd").SetCredits(10).SaveX(ctx)
		}
		out = append(out, u)
	}
	return out
}

const userPageQuery = `{ users(first: %d) { edges { node { id externalId availableCredits reservedCredits heldCredits
	transactions(first: 3) { pageInfo { hasNextPage hasPreviousPage startCursor endCursor } edges { cursor node { id amount postings { amount } } } }
	payments(first: 3) { pageInfo { hasNextPage endCursor } edges { cursor node { id amount } } } } } } }`

// TestUserPageBalancesCostOneStatement: the hostile case of the balances, a
// page of the largest size asking each user's three balances (twice, under
// aliases), reads them all in one statement.
func TestUserPageBalancesCostOneStatement(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		seedUsers(t, db, 105, 1, 0)
		a, exp := tracedAPI(t, db)
		admin := token(t, "root", auth.RoleAdmin)
		a.ok(admin, `{ viewer { id } }`, nil)
		before := statements(exp, "credit_reservations r")
		r := a.ok(admin, `{ users(first: 100) { edges { node { availableCredits reservedCredits heldCredits
			a: availableCredits b: reservedCredits c: heldCredits } } } }`, nil)
		if got := statements(exp, "credit_reservations r") - before; got != 1 {
			t.Errorf("%d balance statements for a page of 100 users, want 1", got)
		}
		if edges := r.get(t, "users", "edges").([]any); len(edges) != 100 {
			t.Fatalf("%d users, want 100", len(edges))
		}
	})
}

// TestUserPagesAreRight: what the batched reads of a page of users answer
// is what each user's own reads answer: the balances are ledger.Balance's,
// the transactions and payments are the user's newest, in order, with the
// cursors and pageInfo of the per-user path (a page that asks for
// totalCount takes it), and endCursor continues on the keyset path.
func TestUserPagesAreRight(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		seeded := seedUsers(t, db, 12, 5, 4)
		// A user with no transactions nor payments has empty pages.
		seeded = append(seeded, db.Ent.User.Create().SetExternalID("seeded-empty").SaveX(ctx))
		a := newAPI(t, db, nil)
		admin := token(t, "root", auth.RoleAdmin)
		l := ledger.New(db)

		type conn struct {
			TotalCount *int `json:"totalCount"`
			PageInfo   struct {
				HasNextPage     bool    `json:"hasNextPage"`
				HasPreviousPage bool    `json:"hasPreviousPage"`
				StartCursor     *string `json:"startCursor"`
				EndCursor       *string `json:"endCursor"`
			} `json:"pageInfo"`
			Edges []struct {
				Cursor string `json:"cursor"`
				Node   struct {
					ID string `json:"id"`
				} `json:"node"`
			} `json:"edges"`
		}
		type node struct {
			ID               string `json:"id"`
			ExternalID       string `json:"externalId"`
			AvailableCredits int64  `json:"availableCredits"`
			ReservedCredits  int64  `json:"reservedCredits"`
			HeldCredits      int64  `json:"heldCredits"`
			Transactions     conn   `json:"transactions"`
			Filtered         conn   `json:"filtered"`
			Payments         conn   `json:"payments"`
		}
		page := func(extra string) map[string]node {
			t.Helper()
			page := `pageInfo { hasNextPage hasPreviousPage startCursor endCursor } edges { cursor node { id } } ` + extra
			r := a.ok(admin, `{ users(first: 20, where: {externalIDHasPrefix: "seeded-"}) { edges { node {
				id externalId availableCredits reservedCredits heldCredits
				transactions(first: 3) { `+page+` }
				filtered: transactions(first: 2, where: {kind: GRANT}) { `+page+` }
				payments(first: 3) { `+page+` } } } } }`, nil)
			var data struct {
				Users struct {
					Edges []struct {
						Node node `json:"node"`
					} `json:"edges"`
				} `json:"users"`
			}
			if err := json.Unmarshal(r.Data, &data); err != nil {
				t.Fatal(err)
			}
			out := map[string]node{}
			for _, e := range data.Users.Edges {
				out[e.Node.ID] = e.Node
			}
			return out
		}
		// The page the per-user path gives: the newest first items of all,
		// entgql's cursors, a next page when there are more.
		expect := func(all []ent.Cursor, first int, counted bool) conn {
			var c conn
			c.Edges = make([]struct {
				Cursor string `json:"cursor"`
				Node   struct {
					ID string `json:"id"`
				} `json:"node"`
			}, 0)
			for i, cur := range all {
				if i == first {
					c.PageInfo.HasNextPage = true
					break
				}
				var b strings.Builder
				cur.MarshalGQL(&b)
				text := strings.Trim(b.String(), `"`)
				c.Edges = append(c.Edges, struct {
					Cursor string `json:"cursor"`
					Node   struct {
						ID string `json:"id"`
					} `json:"node"`
				}{Cursor: text})
				c.Edges[len(c.Edges)-1].Node.ID = cur.ID
			}
			if n := len(c.Edges); n > 0 {
				c.PageInfo.StartCursor, c.PageInfo.EndCursor = &c.Edges[0].Cursor, &c.Edges[n-1].Cursor
			}
			if counted {
				n := len(all)
				c.TotalCount = &n
			}
			return c
		}
		same := func(what string, got, want conn) {
			t.Helper()
			g, _ := json.Marshal(got)
			w, _ := json.Marshal(want)
			if string(g) != string(w) {
				t.Errorf("%s:\n%s\nwant\n%s", what, g, w)
			}
		}
		for _, counted := range []bool{false, true} {
			extra := ""
			if counted {
				extra = "totalCount"
			}
			got := page(extra)
			if len(got) != len(seeded) {
				t.Fatalf("%d users in the page, want %d", len(got), len(seeded))
			}
			for _, u := range seeded {
				got := got[u.ID]
				b, err := l.Balance(ctx, u.ID)
				if err != nil {
					t.Fatal(err)
				}
				if got.AvailableCredits != b.Available || got.ReservedCredits != b.Reserved || got.HeldCredits != b.Held {
					t.Errorf("%s: available %d reserved %d held %d, ledger says %+v", u.ExternalID,
						got.AvailableCredits, got.ReservedCredits, got.HeldCredits, b)
				}
				var txs, grants, pays []ent.Cursor
				for _, tx := range db.Ent.CreditTransaction.Query().Where(credittransaction.UserID(u.ID)).
					Order(ent.Desc(credittransaction.FieldCreatedAt), ent.Desc(credittransaction.FieldID)).AllX(ctx) {
					txs = append(txs, ent.Cursor{ID: tx.ID, Value: tx.CreatedAt})
					if tx.Kind == credittransaction.KindGrant {
						grants = append(grants, ent.Cursor{ID: tx.ID, Value: tx.CreatedAt})
					}
				}
				for _, p := range db.Ent.Payment.Query().Where(payment.UserID(u.ID)).
					Order(ent.Desc(payment.FieldCreatedAt), ent.Desc(payment.FieldID)).AllX(ctx) {
					pays = append(pays, ent.Cursor{ID: p.ID, Value: p.CreatedAt})
				}
				same(u.ExternalID+" transactions", got.Transactions, expect(txs, 3, counted))
				same(u.ExternalID+" granted transactions", got.Filtered, expect(grants, 2, counted))
				same(u.ExternalID+" payments", got.Payments, expect(pays, 3, counted))
				if counted || len(txs) <= 3 {
					continue
				}
				// The page's end continues where the batch stopped, on the keyset path.
				r := a.ok(admin, `query($id: ID!, $after: Cursor) { user(id: $id) { transactions(first: 3, after: $after) {
					edges { node { id } } } } }`, map[string]any{"id": u.ID, "after": got.Transactions.PageInfo.EndCursor})
				var next []string
				for _, e := range r.get(t, "user", "transactions", "edges").([]any) {
					next = append(next, e.(map[string]any)["node"].(map[string]any)["id"].(string))
				}
				var want []string
				for _, c := range txs[3:min(6, len(txs))] {
					want = append(want, c.ID)
				}
				if strings.Join(next, ",") != strings.Join(want, ",") {
					t.Errorf("%s: the next page is %v, want %v", u.ExternalID, next, want)
				}
			}
		}
		if n := db.Ent.User.Query().Where(user.ExternalIDHasPrefix("seeded-")).CountX(ctx); n != len(seeded) {
			t.Fatalf("%d seeded users", n)
		}
	})
}

// TestUserPagesKeepEachPlacesSelection: a fragment's page merged with
// different siblings in two places of a response is two batches, each with
// its own selection (one batch would load the amounts for one place only).
func TestUserPagesKeepEachPlacesSelection(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		seeded := seedUsers(t, db, 4, 3, 0)
		a := newAPI(t, db, nil)
		admin := token(t, "root", auth.RoleAdmin)
		r := a.ok(admin, `fragment Page on User { transactions(first: 2) { edges { node { id } } } }
			{ creditTransactions(first: 5) { edges { node { user { ...Page } } } }
			  users(first: 10, where: {externalIDHasPrefix: "seeded-"}) { edges { node { id ...Page
				transactions(first: 2) { edges { node { amount } } } } } } }`, nil)
		var data struct {
			Users struct {
				Edges []struct {
					Node struct {
						ID           string `json:"id"`
						Transactions struct {
							Edges []struct {
								Node struct {
									ID     string `json:"id"`
									Amount int64  `json:"amount"`
								} `json:"node"`
							} `json:"edges"`
						} `json:"transactions"`
					} `json:"node"`
				} `json:"edges"`
			} `json:"users"`
		}
		if err := json.Unmarshal(r.Data, &data); err != nil {
			t.Fatal(err)
		}
		if len(data.Users.Edges) != len(seeded) {
			t.Fatalf("%d users, want %d", len(data.Users.Edges), len(seeded))
		}
		for _, e := range data.Users.Edges {
			if len(e.Node.Transactions.Edges) != 2 {
				t.Fatalf("user %s: %d transactions, want 2", e.Node.ID, len(e.Node.Transactions.Edges))
			}
			for _, tx := range e.Node.Transactions.Edges {
				want := db.Ent.CreditTransaction.GetX(ctx, tx.Node.ID)
				if tx.Node.Amount != want.Amount || want.UserID != e.Node.ID {
					t.Errorf("user %s: transaction %s amount %d, want %d of user %s", e.Node.ID, tx.Node.ID, tx.Node.Amount, want.Amount, want.UserID)
				}
			}
		}
	})
}
