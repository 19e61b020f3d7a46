package generated

import (
	"fmt"
	"strings"
	"testing"
)

// TestPlainable: a connection is written by its plain writer only when
// everything it asks for, at every depth, is a column; a resolver, an
// interface's field, @defer or any directive but @skip and @include leaves
// it to gqlgen. The answers' equality with gqlgen's own is checked over
// HTTP (internal/server, TestPlainWritesAnswerAsGqlgen).
func TestPlainable(t *testing.T) {
	const page = `query%s { viewer { transactions(first: 2) { %s } } }`
	fragments := map[string]string{
		"Cols":        `fragment Cols on CreditTransaction { id amount }`,
		"WithPayment": `fragment WithPayment on CreditTransaction { id payment { id } }`,
	}
	for _, c := range []struct {
		name, connection string
		plain            bool
	}{
		{"the history page", `edges { node { id amount kind createdAt } } pageInfo { endCursor hasNextPage }`, true},
		{"typenames, aliases and the count", `__typename n: totalCount edges { __typename c: cursor node { __typename i: id } }`, true},
		{"every column", `edges { node { id createdAt userId kind amount reason actor idempotencyKey paymentId reservationId } }`, true},
		{"a fragment of columns", `edges { node { ...Cols } }`, true},
		{"an inline fragment of columns", `edges { node { ... on CreditTransaction { id kind } } }`, true},
		{"@skip and @include", `edges { node { id @skip(if: $no) ...Cols @include(if: $no) } }`, true},
		{"an edge resolved", `edges { node { id user { id } } }`, false},
		{"a list resolved", `edges { node { postings { account } } }`, false},
		{"a resolver through a fragment", `edges { node { ...WithPayment } }`, false},
		{"a resolver through an inline fragment", `edges { node { ... on CreditTransaction { reservation { id } } } }`, false},
		{"a resolver that is skipped", `edges { node { id user @skip(if: $no) { id } } }`, false},
		{"a resolved column", `totalCount totalCountCapped`, false},
		{"@defer", `edges { node { id ... @defer { amount } } }`, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			variables := ""
			if strings.Contains(c.connection, "$no") {
				variables = "($no: Boolean!)"
			}
			oc, set := selectionOf(t, fmt.Sprintf(page, variables, c.connection), fragments, "viewer", "transactions")
			if got := plainable(oc, set); got != c.plain {
				t.Errorf("plainable = %v, want %v", got, c.plain)
			}
		})
	}
	t.Run("a field of an interface", func(t *testing.T) {
		if plainable(selectionOf(t, `query { nodes(ids: ["a", "b"]) { id } }`, nil, "nodes")) {
			t.Error("a Node's id counted as a column: which type's field it is is known only per element")
		}
	})
}
