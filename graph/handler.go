package graph

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/graph/generated"
)

// Options configure the GraphQL endpoint.
type Options struct {
	Introspection bool
	// ComplexityLimit caps the cost of one operation (0: a default).
	ComplexityLimit int
	Logger          *slog.Logger
}

// NewHandler returns the GraphQL endpoint, with explicit transports: JSON
// POST, and GET for queries only.
func NewHandler(client *ent.Client, opts Options) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ComplexityLimit == 0 {
		opts.ComplexityLimit = 1000
	}
	srv := handler.New(generated.NewExecutableSchema(generated.Config{
		Resolvers: &Resolver{Client: client},
	}))
	srv.AddTransport(transport.Options{})
	srv.AddTransport(transport.GET{})
	srv.AddTransport(transport.POST{})
	srv.SetQueryCache(lru.New[*ast.QueryDocument](1000))
	if opts.Introspection {
		srv.Use(extension.Introspection{})
	}
	srv.Use(extension.FixedComplexityLimit(opts.ComplexityLimit))
	presenter := errorPresenter{logger: opts.Logger}
	srv.SetErrorPresenter(presenter.present)
	srv.SetRecoverFunc(func(ctx context.Context, v any) error {
		opts.Logger.ErrorContext(ctx, "panic in GraphQL resolver", "panic", v, "path", graphql.GetPath(ctx).String())
		return errInternal
	})
	return srv
}
