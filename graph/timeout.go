package graph

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/auth"
)

// DefaultAdminQueryTimeout is how long an admin's query may run: well
// under the server's write timeout, so that a query too broad for the
// database is answered TIMEOUT instead of a connection cut at that timeout.
const DefaultAdminQueryTimeout = 10 * time.Second

// adminTimeout is the cause of an admin query's context ending at its
// deadline, which the error presenter turns into TIMEOUT.
type adminTimeout struct{ limit time.Duration }

func (e adminTimeout) Error() string {
	return fmt.Sprintf("graph: the admin query ran past its limit of %s", e.limit)
}

// adminDeadline gives an admin's query operation a deadline: every
// statement its fields run gets the context, and both drivers stop a
// statement whose context ends (PostgreSQL's is cancelled on the server,
// SQLite's interrupted). Other callers' operations are bounded by what they
// can ask (a user's own rows, through their indexes; see cost.go), and
// mutations are not cut halfway, so both run without it.
func adminDeadline(limit time.Duration) graphql.ResponseMiddleware {
	return func(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
		if limit <= 0 || !adminQuery(ctx) {
			return next(ctx)
		}
		ctx, cancel := context.WithTimeoutCause(ctx, limit, adminTimeout{limit: limit})
		defer cancel()
		return next(ctx)
	}
}

func adminQuery(ctx context.Context) bool {
	if !graphql.HasOperationContext(ctx) {
		return false
	}
	op := graphql.GetOperationContext(ctx).Operation
	role, ok := callerRole(ctx)
	return op != nil && op.Operation == ast.Query && ok && role == auth.RoleAdmin
}

// timedOut is the TIMEOUT an error becomes when it ended an admin query at
// its deadline: the driver's error then says only that the statement was
// cancelled or interrupted. An error of the API's own (NOT_FOUND…) keeps
// its code.
func timedOut(ctx context.Context, err error) (*apperr.Error, bool) {
	var limit adminTimeout
	if !errors.As(context.Cause(ctx), &limit) {
		return nil, false
	}
	if e, ok := apperr.As(err); ok && e.Code != apperr.Unavailable {
		return nil, false
	}
	return apperr.New(apperr.Timeout,
		"the query ran past the admin time limit of %s and was stopped: narrow it (a filter on an indexed field, a smaller page, no totalCount) and try again",
		limit.limit), true
}
