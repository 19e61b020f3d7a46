package graph

import (
	"context"
	"errors"
	"log/slog"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/tally-billing/tally/internal/apperr"
)

var errInternal = errors.New("internal error")

// errorPresenter is the one place where errors become GraphQL errors: an
// apperr.Error keeps its message and code; anything else is logged and shown
// only as INTERNAL, so no internal detail reaches a client.
type errorPresenter struct {
	logger *slog.Logger
	// production strips "Did you mean …" from validation messages: they
	// name fields, arguments and types a caller did not know.
	production bool
}

func (p errorPresenter) present(ctx context.Context, err error) *gqlerror.Error {
	gqlErr := graphql.DefaultErrorPresenter(ctx, err)
	var validation *gqlerror.Error
	if errors.As(err, &validation) && validation.Err == nil {
		// Parse and validation errors from gqlgen itself are safe and already
		// carry their own code.
		if p.production {
			if i := strings.Index(gqlErr.Message, " Did you mean"); i >= 0 {
				gqlErr.Message = gqlErr.Message[:i]
			}
		}
		return gqlErr
	}
	if e, ok := apperr.As(err); ok {
		gqlErr.Message = e.Message
		gqlErr.Extensions = map[string]any{"code": string(e.Code)}
		return gqlErr
	}
	if arg, ok := badArgument(ctx, gqlErr.Path); ok {
		// A value that the argument's scalar refused to decode (a cursor
		// that is not one): the client's mistake. The decoder's own message
		// may name internals, so it is not shown.
		gqlErr.Message = arg + " is not a valid value for its type"
		gqlErr.Extensions = map[string]any{"code": string(apperr.InvalidArgument)}
		return gqlErr
	}
	if !errors.Is(err, errInternal) {
		p.logger.ErrorContext(ctx, "GraphQL resolver failed", "error", err.Error(), "path", gqlErr.Path.String())
	}
	gqlErr.Message = "internal error"
	gqlErr.Extensions = map[string]any{"code": string(apperr.Internal)}
	return gqlErr
}

// badArgument says whether an error's path ends in an argument of the field
// it was raised on, which is where gqlgen reports a value its scalar could
// not decode; it returns the argument's name.
func badArgument(ctx context.Context, path ast.Path) (string, bool) {
	fc := graphql.GetFieldContext(ctx)
	if fc == nil || fc.Field.Field == nil || len(path) == 0 {
		return "", false
	}
	name, ok := path[len(path)-1].(ast.PathName)
	if !ok {
		return "", false
	}
	if fc.Field.Definition != nil && fc.Field.Definition.Arguments.ForName(string(name)) != nil {
		return string(name), true
	}
	return "", false
}
