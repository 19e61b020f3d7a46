package graph

import (
	"context"
	"fmt"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/tally-billing/tally/internal/apperr"
)

// Page sizes of connections. A connection asked without first or last
// returns DefaultPageSize items; more than MaxPageSize is an error, not a
// silent clamp, so a client never mistakes a short page for the end.
const (
	DefaultPageSize = 20
	MaxPageSize     = 100
)

// pageArgs, the @page directive, checks first and last of a connection field
// and supplies the default page size when neither is given (entgql would
// return everything). A directive rather than a field middleware: gqlgen
// wraps every field of a response in the field middlewares, scalars
// included, and that wrapping cost a 50-row history page 14% of its time.
func pageArgs(ctx context.Context, _ any, next graphql.Resolver) (any, error) {
	fc := graphql.GetFieldContext(ctx)
	if fc == nil {
		return next(ctx)
	}
	first, _ := fc.Args["first"].(*int)
	last, _ := fc.Args["last"].(*int)
	for name, v := range map[string]*int{"first": first, "last": last} {
		if v != nil && (*v < 0 || *v > MaxPageSize) {
			return nil, apperr.New(apperr.InvalidArgument, "%s must be from 0 to %d, not %d", name, MaxPageSize, *v)
		}
	}
	if first != nil && last != nil {
		return nil, apperr.New(apperr.InvalidArgument, "give first or last, not both")
	}
	if first == nil && last == nil {
		size := DefaultPageSize
		fc.Args["first"] = &size
	}
	return next(ctx)
}

// pageSize is what a connection field will return at most, for complexity.
func pageSize(first, last *int) int {
	switch {
	case first != nil:
		return max(*first, 1)
	case last != nil:
		return max(*last, 1)
	default:
		return DefaultPageSize
	}
}

// depthLimit refuses operations nested deeper than max fields (introspection
// fields are not counted: the playground's own introspection query is deep).
type depthLimit struct{ max int }

var _ interface {
	graphql.HandlerExtension
	graphql.OperationContextMutator
} = depthLimit{}

func (depthLimit) ExtensionName() string                   { return "DepthLimit" }
func (depthLimit) Validate(graphql.ExecutableSchema) error { return nil }

func (d depthLimit) MutateOperationContext(_ context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	if oc.Operation == nil {
		return nil
	}
	if depth := selectionDepth(oc.Operation.SelectionSet, oc.Doc.Fragments, 0); depth > d.max {
		return &gqlerror.Error{
			Message:    fmt.Sprintf("the operation is nested %d levels deep; the limit is %d", depth, d.max),
			Extensions: map[string]any{"code": string(apperr.InvalidArgument)},
		}
	}
	return nil
}

func selectionDepth(set ast.SelectionSet, fragments ast.FragmentDefinitionList, seen int) int {
	if seen > 64 { // cyclic fragments are refused by validation; be safe anyway
		return seen
	}
	deepest := 0
	for _, sel := range set {
		var d int
		switch s := sel.(type) {
		case *ast.Field:
			if strings.HasPrefix(s.Name, "__") {
				continue
			}
			d = 1 + selectionDepth(s.SelectionSet, fragments, seen+1)
		case *ast.InlineFragment:
			d = selectionDepth(s.SelectionSet, fragments, seen+1)
		case *ast.FragmentSpread:
			if f := fragments.ForName(s.Name); f != nil {
				d = selectionDepth(f.SelectionSet, fragments, seen+1)
			}
		}
		deepest = max(deepest, d)
	}
	return deepest
}

// introspectionGate refuses __schema and __type, when introspection is off,
// before anything runs: FORBIDDEN, not the INTERNAL (with an error in the
// log) that gqlgen's resolver-level refusal became.
type introspectionGate struct{}

var _ interface {
	graphql.HandlerExtension
	graphql.OperationContextMutator
} = introspectionGate{}

func (introspectionGate) ExtensionName() string                   { return "IntrospectionGate" }
func (introspectionGate) Validate(graphql.ExecutableSchema) error { return nil }

func (introspectionGate) MutateOperationContext(_ context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	if !oc.DisableIntrospection || !selectsIntrospection(oc.Operation.SelectionSet, oc.Doc.Fragments, 0) {
		return nil
	}
	return &gqlerror.Error{
		Message:    "introspection is disabled on this server",
		Extensions: map[string]any{"code": string(apperr.Forbidden)},
	}
}

// selectsIntrospection says whether a root selection asks for __schema or
// __type, directly or through fragments.
func selectsIntrospection(set ast.SelectionSet, fragments ast.FragmentDefinitionList, seen int) bool {
	if seen > 64 {
		return false
	}
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			if s.Name == "__schema" || s.Name == "__type" {
				return true
			}
		case *ast.InlineFragment:
			if selectsIntrospection(s.SelectionSet, fragments, seen+1) {
				return true
			}
		case *ast.FragmentSpread:
			if f := fragments.ForName(s.Name); f != nil && selectsIntrospection(f.SelectionSet, fragments, seen+1) {
				return true
			}
		}
	}
	return false
}
