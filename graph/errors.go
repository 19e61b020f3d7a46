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
	"github.com/tally-billing/tally/internal/database"
)

var errInternal = errors.New("internal error")

// errorPresenter is the one place where errors become GraphQL errors: an
// apperr.Error keeps its message and code; anything else is logged and shown
// only as INTERNAL, so no internal detail reaches a client.
//
// UNAVAILABLE carries extensions.retryable: the database could not be
// reached, or the outcome of a commit is unknown; the client retries with
// the same idempotency key, which replays what did commit. A read that
// failed to reach the database is classified here, the one place every
// error passes; transactions are classified by the ledger, which knows
// whether COMMIT was sent.
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
	if e, ok := timedOut(ctx, err); ok {
		p.logger.WarnContext(ctx, "GraphQL: an admin query timed out", "error", err.Error(), "path", gqlErr.Path.String())
		err = e
	}
	err = database.Classify(err)
	if e, ok := apperr.As(err); ok {
		if e.Code == apperr.Unavailable {
			// A warning: the operator has a dependency to look at, not a
			// bug. The resolver's error (gqlErr may be the same value,
			// whose message is replaced below) says whether the outcome is
			// unknown.
			cause := err
			if errors.As(err, &validation) && validation.Err != nil {
				cause = validation.Err
			}
			p.logger.WarnContext(ctx, "GraphQL: unavailable, the client may retry", "error", cause.Error(), "path", gqlErr.Path.String())
		}
		gqlErr.Message = e.Message
		gqlErr.Extensions = map[string]any{"code": string(e.Code)}
		if e.Field != "" {
			gqlErr.Extensions["field"] = fieldPath(ctx, e.Field)
		}
		if e.Code == apperr.Unavailable {
			gqlErr.Extensions["retryable"] = true
		}
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
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		// The client went away or stopped the subscription: not a fault of
		// the server's, and what it asked may or may not have happened (a
		// spend runs with its batch), hence retryable. Nobody is usually
		// left to read it.
		p.logger.DebugContext(ctx, "GraphQL: the client cancelled", "error", err.Error(), "path", gqlErr.Path.String())
		gqlErr.Message = "the request was cancelled"
		gqlErr.Extensions = map[string]any{"code": string(apperr.Unavailable), "retryable": true}
		return gqlErr
	}
	if !errors.Is(err, errInternal) {
		p.logger.ErrorContext(ctx, "GraphQL resolver failed", "error", err.Error(), "path", gqlErr.Path.String())
	}
	gqlErr.Message = "internal error"
	gqlErr.Extensions = map[string]any{"code": string(apperr.Internal)}
	return gqlErr
}

// fieldPath is where a request's field sits in the operation: a mutation's
// request is its input argument ("input.amount"), like the paths the
// argument check names; an argument of the field itself is named alone.
func fieldPath(ctx context.Context, field string) string {
	fc := graphql.GetFieldContext(ctx)
	if fc == nil || fc.Field.Definition == nil || fc.Field.Definition.Arguments.ForName(field) != nil ||
		fc.Field.Definition.Arguments.ForName("input") == nil {
		return field
	}
	return "input." + field
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
