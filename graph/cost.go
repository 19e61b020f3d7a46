package graph

import (
	"context"
	"encoding/json"

	"github.com/99designs/gqlgen/complexity"
	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// What fields cost in an operation's complexity: roughly what each makes
// the server do, in units of a field rendered from data already loaded. An
// operation may cost at most DefaultComplexityLimit, so one request makes at
// most about a hundred database round trips and ten writes, however it is
// written: aliases of a field that reads the database pay for each read.
// A connection inside a page is counted for every item of the page, though
// entgql loads the edges it generates for a whole page in one query: the
// count errs on the side of refusing.
const (
	DefaultComplexityLimit = 5000

	// costRead is a field that makes a database round trip of its own.
	costRead = 50
	// costWrite is a mutation: a transaction with its locks and writes.
	costWrite = 500
	// costFilterTerm is each value of a where filter: a term of the SQL
	// condition the database evaluates for every row it reads.
	costFilterTerm = 5
)

// fieldReads are the fields, other than connections and mutations, that
// read the database when resolved: how many round trips each makes.
var fieldReads = map[string]int{
	"Query.viewer":         1,
	"Query.user":           1,
	"Query.creditPackages": 1,
	"Query.creditPlans":    1,
	"Query.node":           2, // who owns it, then the node
	// Not the balances nor a user's first pages: see documentReads.
	// A sum over the user's postings up to the time.
	"User.balanceAt": 1,
	// One statement: two sums over the user's postings and the period's
	// transactions grouped by kind.
	"User.statement": 1,
	// The user's settings; in them, this month's charges and the pack
	// each read again.
	"User.autoRecharge":                   1,
	"AutoRecharge.chargedThisMonthAmount": 2, // the pack's currency, then the sum
	"AutoRecharge.package":                1,
}

// batchedConnections are the connections whose first pages the users of a
// list share (see batchedPage in firstpages.go).
var batchedConnections = map[string]bool{"User.transactions": true, "User.payments": true}

// documentReads are the fields that cost a read for each place they have
// in the document, not for each object that shows them: the users of a
// list share one statement per place (loaders.go), and elsewhere the field
// reads for its one user. Their per-object cost is what they render.
var documentReads = map[string]bool{
	"User.availableCredits": true, "User.reservedCredits": true, "User.heldCredits": true,
	"User.transactions": true, "User.payments": true,
}

// documentReadCost is what the fields of documentReads cost in set: a read
// per place (a fragment per spread), a user's pages only when they are
// first pages (the others cost a read per user in Complexity).
func documentReadCost(set ast.SelectionSet, fragments ast.FragmentDefinitionList, vars map[string]any, seen int) int {
	if seen > 64 { // as selectionDepth: validation refuses cycles; be safe anyway
		return 0
	}
	cost := 0
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			if s.ObjectDefinition != nil && documentReads[s.ObjectDefinition.Name+"."+s.Name] {
				args := s.ArgumentMap(vars)
				if !batchedConnections[s.ObjectDefinition.Name+"."+s.Name] || firstPage(args) {
					cost += costRead
				}
			}
			cost += documentReadCost(s.SelectionSet, fragments, vars, seen+1)
		case *ast.InlineFragment:
			cost += documentReadCost(s.SelectionSet, fragments, vars, seen+1)
		case *ast.FragmentSpread:
			if f := fragments.ForName(s.Name); f != nil {
				cost += documentReadCost(f.SelectionSet, fragments, vars, seen+1)
			}
		}
	}
	return cost
}

// firstPage says a connection's arguments ask for a first page, forward.
func firstPage(args map[string]any) bool {
	return args["after"] == nil && args["before"] == nil && args["last"] == nil
}

// costedSchema is the executable schema with Tally's costs. gqlgen's own
// default (every field 1 plus what is below it) stays for the rest:
// non-connection edges are loaded for a whole page in one query.
type costedSchema struct{ graphql.ExecutableSchema }

func (s costedSchema) Complexity(ctx context.Context, typeName, field string, child int, args map[string]any) (int, bool) {
	switch typeName {
	case "Mutation":
		return costWrite + child, true
	case "Subscription":
		return costRead + child, true
	}
	key := typeName + "." + field
	switch key {
	case "Query.ledgerReport":
		// Four reads of the stored check runs.
		return 4*costRead + child, true
	case "Query.nodes":
		// Each id is node(id:): who owns it, then the node.
		ids, _ := args["ids"].([]any)
		return max(len(ids), 1) * (fieldReads["Query.node"]*costRead + child), true
	case "Query.creditPackages", "Query.creditPlans":
		// A short list without pagination: counted as a default page.
		return costRead + DefaultPageSize*child, true
	}
	if reads, ok := fieldReads[key]; ok {
		return reads*costRead + child, true
	}
	if batchedConnections[key] && firstPage(args) {
		// Its read is in documentReadCost; what is below it, for every item.
		return pageSizeArg(args)*child + costFilterTerm*filterTerms(args["where"]), true
	}
	if def := s.Schema().Types[typeName]; def != nil {
		if f := def.Fields.ForName(field); f != nil && f.Arguments.ForName("first") != nil {
			// A connection: one query for the page (two with totalCount),
			// and what is below it for every item of the page. A user's
			// subscriptions are one, read by a query for each user of a
			// list.
			return costRead + pageSizeArg(args)*child + costFilterTerm*filterTerms(args["where"]), true
		}
	}
	return s.ExecutableSchema.Complexity(ctx, typeName, field, child, args)
}

// pageSizeArg is the page size a connection's raw arguments ask for.
func pageSizeArg(args map[string]any) int {
	for _, name := range []string{"first", "last"} {
		if n, ok := intArg(args[name]); ok {
			return max(int(min(n, MaxPageSize)), 1)
		}
	}
	return DefaultPageSize
}

func intArg(v any) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, true
	case int:
		return int64(n), true
	case json.Number:
		i, err := n.Int64()
		return i, err == nil
	}
	return 0, false
}

// filterTerms counts the values of a raw where argument: every scalar and
// every list item, however nested.
func filterTerms(v any) int {
	switch x := v.(type) {
	case nil:
		return 0
	case map[string]any:
		n := 0
		for _, f := range x {
			n += filterTerms(f)
		}
		return n
	case []any:
		n := 0
		for _, item := range x {
			n += max(filterTerms(item), 1)
		}
		return n
	default:
		return 1
	}
}

// complexityLimit refuses an operation that costs more than limit, before
// any resolver runs.
type complexityLimit struct {
	limit int
	es    graphql.ExecutableSchema
}

var _ interface {
	graphql.HandlerExtension
	graphql.OperationContextMutator
} = &complexityLimit{}

func (*complexityLimit) ExtensionName() string { return "ComplexityLimit" }

func (c *complexityLimit) Validate(es graphql.ExecutableSchema) error {
	c.es = es
	return nil
}

func (c *complexityLimit) MutateOperationContext(ctx context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	cost := complexity.Calculate(ctx, c.es, oc.Operation, oc.Variables) +
		documentReadCost(oc.Operation.SelectionSet, oc.Doc.Fragments, oc.Variables, 0)
	if cost > c.limit {
		err := limitError("complexity", c.limit, "the operation's complexity is %d; the limit is %d (see the README's limits)", cost, c.limit)
		err.Extensions["cost"] = cost
		return err
	}
	return nil
}
