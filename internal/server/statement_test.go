package server_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/testdb"
)

const statementQuery = `query($from: Time!, $to: Time!) { viewer { id statement(from: $from, to: $to) {
	from to openingBalance closingBalance totals { kind transactions amount }
	transactions(first: 100) { edges { node { kind amount createdAt postings { account amount } } } } } } }`

// TestAPIStatementAndBalanceAt reads a user's past balances and statements
// over HTTP: the statement's movements are the period's transactions, whose
// postings on the user's account take the opening balance to the closing
// one; bad periods are INVALID_ARGUMENT.
func TestAPIStatementAndBalanceAt(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		admin, alice := token(t, "root", auth.RoleAdmin), token(t, "alice", auth.RoleUser)
		r := a.ok(admin, grantMutation, map[string]any{"input": map[string]any{
			"externalUserId": "alice", "amount": 100, "reason": "welcome", "idempotencyKey": "g1",
		}})
		aliceID := r.get(t, "grantCredits", "user", "id").(string)
		var stamps []string
		for i, amount := range []int{30, 20} {
			r = a.ok(alice, `mutation($input: SpendCreditsInput!) { spendCredits(input: $input) { transaction { createdAt } } }`,
				map[string]any{"input": map[string]any{"amount": amount, "idempotencyKey": fmt.Sprintf("s%d", i)}})
			stamps = append(stamps, r.get(t, "spendCredits", "transaction", "createdAt").(string))
		}
		now := time.Now().UTC().Format(time.RFC3339Nano)
		long := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339Nano)

		check := func(from, to string, opening, closing float64, movements int) {
			t.Helper()
			r := a.ok(alice, statementQuery, map[string]any{"from": from, "to": to})
			st := r.get(t, "viewer", "statement").(map[string]any)
			if st["openingBalance"] != opening || st["closingBalance"] != closing {
				t.Fatalf("[%s, %s): %s", from, to, r.Data)
			}
			edges := st["transactions"].(map[string]any)["edges"].([]any)
			if len(edges) != movements {
				t.Fatalf("[%s, %s): %d movements, want %d: %s", from, to, len(edges), movements, r.Data)
			}
			// Opening plus the movements' postings on the account is the closing balance.
			sum := opening
			for _, e := range edges {
				for _, p := range e.(map[string]any)["node"].(map[string]any)["postings"].([]any) {
					if p.(map[string]any)["account"] == "user:"+aliceID {
						sum += p.(map[string]any)["amount"].(float64)
					}
				}
			}
			var totals float64
			for _, k := range st["totals"].([]any) {
				totals += k.(map[string]any)["amount"].(float64)
			}
			if sum != closing || opening+totals != closing {
				t.Fatalf("[%s, %s): postings take %v to %v, totals to %v; closing %v", from, to, opening, sum, opening+totals, closing)
			}
		}
		check(long, now, 0, 50, 3)
		// Half-open: the first spend's own moment opens the period, the
		// second's closes it.
		check(stamps[0], stamps[1], 100, 70, 1)
		check(stamps[1], now, 70, 50, 1)
		check(stamps[1], stamps[1], 70, 70, 0)
		// The earliest time accepted, and a time in another zone (the same
		// instant as the first spend's, 14 hours ahead).
		check("1970-01-01T00:00:00Z", now, 0, 50, 3)
		first, _ := time.Parse(time.RFC3339Nano, stamps[0])
		check(first.In(time.FixedZone("", 14*3600)).Format(time.RFC3339Nano), now, 100, 50, 2)

		r = a.ok(admin, `query($id: ID!, $a: Time!, $b: Time!) { user(id: $id) { before: balanceAt(time: $a) after: balanceAt(time: $b) } }`,
			map[string]any{"id": aliceID, "a": long, "b": stamps[0]})
		if r.get(t, "user", "before") != float64(0) || r.get(t, "user", "after") != float64(70) {
			t.Fatalf("balanceAt: %s", r.Data)
		}

		future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		a.refused(alice, statementQuery, map[string]any{"from": now, "to": long}, "INVALID_ARGUMENT")
		a.refused(alice, statementQuery, map[string]any{"from": long, "to": future}, "INVALID_ARGUMENT")
		a.refused(alice, statementQuery, map[string]any{"from": "yesterday", "to": now}, "INVALID_ARGUMENT")
		a.refused(alice, statementQuery, map[string]any{"from": long, "to": "2026-13-01T00:00:00Z"}, "INVALID_ARGUMENT")
		a.refused(alice, statementQuery, map[string]any{"from": long, "to": 5}, "GRAPHQL_VALIDATION_FAILED")
		a.refused(alice, `query($t: Time!) { viewer { balanceAt(time: $t) } }`, map[string]any{"t": future}, "INVALID_ARGUMENT")
		// Go's zero time, which the Time scalar would answer as null, and
		// anything else before 1970.
		a.refused(alice, statementQuery, map[string]any{"from": "0001-01-01T00:00:00Z", "to": now}, "INVALID_ARGUMENT")
		a.refused(alice, `query($t: Time!) { viewer { balanceAt(time: $t) } }`, map[string]any{"t": "1969-12-31T23:59:59Z"}, "INVALID_ARGUMENT")
		a.refused(alice, `{ viewer { statement(from: "2026-01-01T00:00:00Z\u0000", to: "2026-01-02T00:00:00Z") { openingBalance } } }`, nil, "INVALID_ARGUMENT")

		// Each past balance is a sum over the account: aliases pay for each,
		// and a hundred of them are over the complexity limit.
		var many strings.Builder
		many.WriteString("{ viewer {")
		for i := range 100 {
			fmt.Fprintf(&many, " b%d: balanceAt(time: %q)", i, long)
		}
		many.WriteString(" } }")
		if r := a.gql(alice, many.String(), nil); len(r.Errors) == 0 || !strings.Contains(r.Errors[0].Message, "complexity") {
			t.Fatalf("a hundred balanceAt: %+v", r.Errors)
		}
	})
}
