package graph

import (
	"context"
	"strings"

	"github.com/99designs/gqlgen/graphql"

	"github.com/tally-billing/tally/graph/generated"
	"github.com/tally-billing/tally/graph/model"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/auth"
)

// directives are the schema's authorization directives (public fields have
// none; everything else is guarded here, before its resolver runs) and @page.
func directives() generated.DirectiveRoot {
	return generated.DirectiveRoot{
		HasRole: hasRole,
		Admin: func(ctx context.Context, obj any, next graphql.Resolver) (any, error) {
			return hasRole(ctx, obj, next, []model.Role{model.RoleAdmin})
		},
		Page: pageArgs,
	}
}

func hasRole(ctx context.Context, _ any, next graphql.Resolver, roles []model.Role) (any, error) {
	c, ok := auth.FromContext(ctx)
	if !ok {
		return nil, apperr.New(apperr.Unauthenticated, "a bearer token is required")
	}
	for _, r := range roles {
		if strings.EqualFold(string(r), string(c.Role)) {
			return next(ctx)
		}
	}
	names := make([]string, len(roles))
	for i, r := range roles {
		names[i] = strings.ToLower(string(r))
	}
	return nil, apperr.New(apperr.Forbidden, "this needs a %s token", strings.Join(names, " or "))
}
