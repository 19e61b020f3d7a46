package graph

import (
	"context"
	"fmt"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
	"github.com/vektah/gqlparser/v2/parser"

	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/auth"
)

// QueryLimits bound the text of an operation before it is validated.
// Validation is the costly step for a hostile document: the rule that
// overlapping fields can be merged compares every pair of fields that share
// a response name, so a few kilobytes of `{ a a a … }` cost seconds. These
// limits are checked on the raw text and one bounded parse, so a document
// past them is refused in about the time a trivial query takes.
type QueryLimits struct {
	// Bytes is the longest query text.
	Bytes int
	// Tokens is the most lexical tokens the parser reads before giving up.
	Tokens int
	// Fields is the most field selections in the document, fragments
	// included.
	Fields int
	// Overlap bounds the sum, over response names, of the square of how
	// often each name is selected in the document: an upper bound on the
	// pairs of fields the overlap rule compares.
	Overlap int
}

// The limits for callers with a valid token and for anonymous callers, who
// may only read public fields (the credit packs, introspection in
// development): GraphiQL's introspection query is about 1.7 KB, 180 tokens
// and 90 fields, well inside the anonymous limits, and an application's
// queries are smaller still. Past these, what a document costs to refuse is
// its JSON decoding (see BenchmarkHostileQueryRefusal).
var (
	DefaultQueryLimits   = QueryLimits{Bytes: 16 << 10, Tokens: 3000, Fields: 500, Overlap: 10000}
	AnonymousQueryLimits = QueryLimits{Bytes: 4 << 10, Tokens: 1000, Fields: 200, Overlap: 2000}
)

// queryGuard applies QueryLimits to every operation, over HTTP and
// WebSocket, before gqlgen parses and validates it. A document already in
// the query cache passed validation once and costs nothing to reuse, so only
// its length is checked again.
type queryGuard struct {
	known     graphql.Cache[*ast.QueryDocument]
	signedIn  QueryLimits
	anonymous QueryLimits
}

var _ interface {
	graphql.HandlerExtension
	graphql.OperationParameterMutator
} = queryGuard{}

func (queryGuard) ExtensionName() string                   { return "QueryGuard" }
func (queryGuard) Validate(graphql.ExecutableSchema) error { return nil }

func (g queryGuard) MutateOperationParameters(ctx context.Context, params *graphql.RawParams) *gqlerror.Error {
	limits := g.signedIn
	if _, ok := auth.FromContext(ctx); !ok {
		limits = g.anonymous
	}
	if len(params.Query) > limits.Bytes {
		return limitError("queryBytes", limits.Bytes, "the query is %d bytes long; the limit is %d", len(params.Query), limits.Bytes)
	}
	if _, ok := g.known.Get(ctx, params.Query); ok {
		return nil
	}
	return checkDocument(params.Query, limits)
}

// checkDocument parses query with the token limit and measures what
// validation would have to compare. A query that does not parse is left to
// gqlgen, which reports the syntax error the usual way.
func checkDocument(query string, limits QueryLimits) *gqlerror.Error {
	doc, err := parser.ParseQueryWithTokenLimit(&ast.Source{Input: query}, limits.Tokens)
	if err != nil {
		if limits.Tokens > 0 && tokenLimitReached(err) {
			return limitError("queryTokens", limits.Tokens, "the query has more than %d tokens", limits.Tokens)
		}
		return nil
	}
	names := map[string]int{}
	fields := 0
	var walk func(ast.SelectionSet)
	walk = func(set ast.SelectionSet) {
		for _, sel := range set {
			switch s := sel.(type) {
			case *ast.Field:
				fields++
				names[s.Alias]++
				walk(s.SelectionSet)
			case *ast.InlineFragment:
				walk(s.SelectionSet)
			}
		}
	}
	for _, op := range doc.Operations {
		walk(op.SelectionSet)
	}
	for _, f := range doc.Fragments {
		walk(f.SelectionSet)
	}
	if fields > limits.Fields {
		return limitError("queryFields", limits.Fields, "the query selects %d fields; the limit is %d", fields, limits.Fields)
	}
	overlap := 0
	for _, n := range names {
		overlap += n * n
	}
	if overlap > limits.Overlap {
		return limitError("queryOverlap", limits.Overlap,
			"the query selects the same names too often (%d; the limit is %d): use fewer aliases or repeated fields", overlap, limits.Overlap)
	}
	return nil
}

// tokenLimitReached says whether the parser stopped at its token limit
// (gqlparser reports it as a syntax error with this message).
func tokenLimitReached(err error) bool {
	e, ok := err.(*gqlerror.Error)
	return ok && strings.HasPrefix(e.Message, "exceeded token limit")
}

// limitError is the refusal of an operation that is past one of the
// server's limits: INVALID_ARGUMENT, naming the limit and its value, so a
// client can tell which one and by how much.
func limitError(limit string, max int, format string, args ...any) *gqlerror.Error {
	return &gqlerror.Error{
		Message:    fmt.Sprintf(format, args...),
		Extensions: map[string]any{"code": string(apperr.InvalidArgument), "limit": limit, "max": max},
	}
}
