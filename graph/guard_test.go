package graph

import (
	"strings"
	"testing"

	"github.com/99designs/gqlgen/graphql/introspection"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/parser"
)

// parsedShape measures a document the slow way, from its syntax tree: the
// independent implementation that measure must agree with.
func parsedShape(t testing.TB, query string) (shape, bool) {
	doc, err := parser.ParseQuery(&ast.Source{Input: query})
	if err != nil {
		return shape{}, false
	}
	names := map[string]int{}
	var s shape
	var walk func(ast.SelectionSet)
	walk = func(set ast.SelectionSet) {
		for _, sel := range set {
			switch x := sel.(type) {
			case *ast.Field:
				s.fields++
				names[x.Alias]++
				walk(x.SelectionSet)
			case *ast.InlineFragment:
				walk(x.SelectionSet)
			}
		}
	}
	for _, op := range doc.Operations {
		walk(op.SelectionSet)
	}
	for _, f := range doc.Fragments {
		walk(f.SelectionSet)
	}
	for _, n := range names {
		s.overlap += n * n
	}
	return s, true
}

var guardDocuments = []string{
	introspection.Query,
	`{ __typename }`,
	`{ a b c a }`,
	`{ x: viewer { y: id id } viewer { id } }`,
	`query Q($a: Int = 3, $o: In = {k: [1, 2, {z: "}"}]} @dir(x: 1)) { f(a: $a, o: {b: {c: "{ not a field }"}}) @include(if: true) { g } }`,
	`{ ...F ... on User { id ...G } ... @include(if: true) { h } ... { i } } fragment F on Query @d { j k: l } fragment G on User { m }`,
	"{ a # a comment { b }\n c(x: \"\"\"block { d }\"\"\") }",
	`mutation { spendCredits(input: {amount: 1, metadata: [{key: "k", value: "v"}]}) { replayed transaction { id } } }`,
	`subscription S { creditBalanceChanged { balance } }`,
	`{ on: viewer { on } }`,
}

// TestMeasureAgreesWithTheParser: the guard's lexer-only count of fields
// and repeated names is what a walk of the parsed document finds.
func TestMeasureAgreesWithTheParser(t *testing.T) {
	for _, q := range guardDocuments {
		want, ok := parsedShape(t, q)
		if !ok {
			t.Fatalf("a test document does not parse: %s", q)
		}
		got, ok := measure(q, 1<<20)
		if !ok || got.fields != want.fields || got.overlap != want.overlap {
			t.Errorf("%s\nmeasured %+v (lexed %v), parsed %+v", q, got, ok, want)
		}
	}
}

// FuzzMeasureAgreesWithTheParser: for every document that parses, the
// guard counts what the parser's tree holds; for anything else it never
// panics.
func FuzzMeasureAgreesWithTheParser(f *testing.F) {
	for _, q := range guardDocuments {
		f.Add(q)
	}
	f.Add("#" + strings.Repeat("x", 100) + "\n{ " + strings.Repeat("__typename ", 50) + "}")
	f.Fuzz(func(t *testing.T, q string) {
		got, lexed := measure(q, 1<<20)
		want, parsed := parsedShape(t, q)
		if !parsed {
			return
		}
		if !lexed || got.fields != want.fields || got.overlap != want.overlap {
			t.Fatalf("%q\nmeasured %+v (lexed %v), parsed %+v", q, got, lexed, want)
		}
	})
}

// TestTheTokenLimitStopsTheLexer: measure reads one token past the limit.
func TestTheTokenLimitStopsTheLexer(t *testing.T) {
	got, ok := measure("{"+strings.Repeat(" a", 100)+" }", 10)
	if !ok || got.tokens != 11 || got.fields > 10 {
		t.Fatalf("measured %+v", got)
	}
}
