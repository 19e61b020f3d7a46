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
			query := fmt.Sprintf(page, c.edge)
			for name, frag := range fragments {
				if strings.Contains(c.edge, "..."+name) {
					query += "\n" + frag
				}
			}
			doc, errs := gqlparser.LoadQuery(parsedSchema, query)
			if errs != nil {
				t.Fatalf("query: %v", errs)
			}
			oc := &graphql.OperationContext{Doc: doc}
			edges := field(t, doc.Operations[0].SelectionSet, "viewer", "transactions", "edges")
			if got := asksResolved(oc, edges.SelectionSet); got != c.resolved {
				t.Errorf("asksResolved = %v, want %v", got, c.resolved)
			}
		})
	}
	t.Run("a field of an interface", func(t *testing.T) {
		doc, errs := gqlparser.LoadQuery(parsedSchema, `query { nodes(ids: ["a", "b"]) { id } }`)
		if errs != nil {
			t.Fatalf("query: %v", errs)
		}
		nodes := field(t, doc.Operations[0].SelectionSet, "nodes")
		if !asksResolved(&graphql.OperationContext{Doc: doc}, nodes.SelectionSet) {
			t.Error("a Node's id counted as a column: the element's type is known only per element")
		}
	})
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
