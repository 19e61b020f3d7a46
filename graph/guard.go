package graph

import (
	"context"
	"fmt"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
	"github.com/vektah/gqlparser/v2/lexer"

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

// checkDocument measures what validation would have to compare, in one
// pass of the lexer: no syntax tree is built (a parse allocates for every
// field and costs about seven times as much). A document that does not lex
// is left to gqlgen, which reports the syntax error the usual way.
func checkDocument(query string, limits QueryLimits) *gqlerror.Error {
	shape, ok := measure(query, limits.Tokens)
	switch {
	case !ok:
		return nil
	case shape.tokens > limits.Tokens:
		return limitError("queryTokens", limits.Tokens, "the query has more than %d tokens", limits.Tokens)
	case shape.fields > limits.Fields:
		return limitError("queryFields", limits.Fields, "the query selects %d fields; the limit is %d", shape.fields, limits.Fields)
	case shape.overlap > limits.Overlap:
		return limitError("queryOverlap", limits.Overlap,
			"the query selects the same names too often (%d; the limit is %d): use fewer aliases or repeated fields", shape.overlap, limits.Overlap)
	}
	return nil
}

// shape is what checkDocument measures of a document.
type shape struct {
	tokens  int // lexical tokens, comments aside (as the parser counts them)
	fields  int // field selections, in operations and fragments
	overlap int // the sum over response names of the square of their count
}

// measure reads the document's tokens, stopping one past maxTokens, and
// counts its field selections exactly as a walk of the parsed document
// would (the tests hold the two to agreement). A field is a name in a
// selection set, outside arguments, that does not name a directive, a
// fragment or a type condition; before a colon it is an alias, and the
// response name. ok is false when the text does not lex.
func measure(query string, maxTokens int) (s shape, ok bool) {
	l := lexer.New(&ast.Source{Input: query})
	names := map[string]int{}
	var (
		selection, parens             int  // depth of selection sets, and of parentheses
		afterSpread, afterAt, skipped bool // the next name is not a field
		pending                       string
		hasPending                    bool
	)
	field := func(response string) {
		s.fields++
		names[response]++
	}
	for {
		tok, err := l.ReadToken()
		if err != nil {
			return s, false
		}
		if tok.Kind == lexer.Comment {
			continue
		}
		if tok.Kind == lexer.EOF {
			break
		}
		if s.tokens++; s.tokens > maxTokens {
			return s, true
		}
		if hasPending {
			hasPending = false
			field(pending)
			if tok.Kind == lexer.Colon { // pending was an alias: the next name is its field
				skipped = true
				continue
			}
		}
		switch tok.Kind {
		case lexer.ParenL:
			parens++
		case lexer.ParenR:
			parens--
		case lexer.BraceL:
			if parens == 0 {
				selection++
				afterSpread = false
			}
		case lexer.BraceR:
			if parens == 0 {
				selection--
			}
		case lexer.Spread:
			afterSpread = true
		case lexer.At:
			afterAt, afterSpread = true, false
		case lexer.Name:
			switch {
			case afterAt: // a directive's name, wherever it is
				afterAt = false
			case parens > 0 || selection == 0:
			case afterSpread:
				afterSpread = false
				skipped = tok.Value == "on" // a type condition follows
			case skipped:
				skipped = false
			default:
				pending, hasPending = tok.Value, true
			}
		}
	}
	if hasPending {
		field(pending)
	}
	for _, n := range names {
		s.overlap += n * n
	}
	return s, true
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
