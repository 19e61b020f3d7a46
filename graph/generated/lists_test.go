package generated

import (
	"fmt"
	"strings"
	"testing"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2"
	"github.com/vektah/gqlparser/v2/ast"
)

// TestAsksResolved: a list is marshaled in order only when nothing its
// elements ask for can wait (marshalList); a field with a resolver at any
// depth, through a fragment, or of an interface keeps gqlgen's goroutine
// per element.
func TestAsksResolved(t *testing.T) {
	const page = `query { viewer { transactions(first: 2) { edges { %s } } } }`
	fragments := map[string]string{
		"Cols":        `fragment Cols on CreditTransaction { id amount }`,
		"WithPayment": `fragment WithPayment on CreditTransaction { id payment { id } }`,
	}
	for _, c := range []struct {
		name, edge string
		resolved   bool
	}{
		{"columns", `node { id amount kind createdAt } cursor`, false},
		{"typename", `__typename node { __typename id }`, false},
		{"fragment of columns", `node { ...Cols }`, false},
		{"inline fragment of columns", `node { ... on CreditTransaction { id kind } }`, false},
		{"an edge resolved", `node { id user { id } }`, true},
		{"a list of the node resolved", `node { postings { account } }`, true},
		{"through a fragment", `node { ...WithPayment }`, true},
		{"through an inline fragment", `node { ... on CreditTransaction { reservation { id } } }`, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			oc, set := selectionOf(t, fmt.Sprintf(page, c.edge), fragments, "viewer", "transactions", "edges")
			if got := asksResolved(oc, set); got != c.resolved {
				t.Errorf("asksResolved = %v, want %v", got, c.resolved)
			}
		})
	}
	t.Run("a field of an interface", func(t *testing.T) {
		if !asksResolved(selectionOf(t, `query { nodes(ids: ["a", "b"]) { id } }`, nil, "nodes")) {
			t.Error("a Node's id counted as a column: the element's type is known only per element")
		}
	})
}

// selectionOf parses query, with the fragments it spreads, and returns the
// selection of the field at path.
func selectionOf(t *testing.T, query string, fragments map[string]string, path ...string) (*graphql.OperationContext, ast.SelectionSet) {
	t.Helper()
	for name, frag := range fragments {
		if strings.Contains(query, "..."+name) {
			query += "\n" + frag
		}
	}
	doc, errs := gqlparser.LoadQuery(parsedSchema, query)
	if errs != nil {
		t.Fatalf("query: %v", errs)
	}
	return &graphql.OperationContext{Doc: doc}, field(t, doc.Operations[0].SelectionSet, path...).SelectionSet
}

func field(t *testing.T, set ast.SelectionSet, path ...string) *ast.Field {
	t.Helper()
	var f *ast.Field
	for _, name := range path {
		f = nil
		for _, s := range set {
			if s, ok := s.(*ast.Field); ok && s.Name == name {
				f = s
			}
		}
		if f == nil {
			t.Fatalf("no field %s", name)
		}
		set = f.SelectionSet
	}
	return f
}
