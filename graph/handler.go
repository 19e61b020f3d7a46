package graph

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/tally-billing/tally/graph/generated"
	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/users"
)

// Options configure the GraphQL endpoint.
type Options struct {
	Introspection bool
	// Production hides what helps an attacker map the schema: no "Did you
	// mean" suggestions in error messages.
	Production bool
	// ComplexityLimit caps the cost of one operation (see cost.go);
	// DefaultComplexityLimit when zero.
	ComplexityLimit int
	// MaxDepth caps how deeply an operation nests fields.
	MaxDepth int
	// AdminQueryTimeout is how long an admin's query may run before it is
	// stopped and answered TIMEOUT (see timeout.go);
	// DefaultAdminQueryTimeout when zero, none when negative.
	AdminQueryTimeout time.Duration
	// Verifier authenticates WebSocket connections (their token arrives in
	// the connection_init payload, not in a header).
	Verifier *auth.Verifier
	// RateLimit, when set, applies the HTTP rate limit to every operation a
	// WebSocket sends.
	RateLimit RateLimit
	// AllowedOrigins are the browser origins allowed to open a WebSocket;
	// empty allows any (tokens, not cookies, carry identity).
	AllowedOrigins []string
	Logger         *slog.Logger
	// Extensions are added after the limits (tracing): they see only the
	// operations that pass them.
	Extensions []graphql.HandlerExtension
}

// maxCachedQuery bounds the queries kept parsed: an application's queries
// are short, and the cache holds 1000 of them whoever sent them.
const maxCachedQuery = 8 << 10

// NewHandler returns the GraphQL endpoint, with explicit transports: JSON
// POST and GET (see transport.go) and WebSocket for subscriptions. Every
// operation passes, in order: the socket rules, the query guard (before
// parsing), gqlgen's parse and validation, the argument check, the depth
// limit and the complexity limit, before any resolver runs.
func NewHandler(r *Resolver, opts Options) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ComplexityLimit == 0 {
		opts.ComplexityLimit = DefaultComplexityLimit
	}
	if opts.MaxDepth == 0 {
		opts.MaxDepth = 10
	}
	if opts.AdminQueryTimeout == 0 {
		opts.AdminQueryTimeout = DefaultAdminQueryTimeout
	}
	cfg := generated.Config{Resolvers: r, Directives: directives()}
	srv := handler.New(costedSchema{generated.NewExecutableSchema(cfg)})
	srv.AddTransport(transport.Options{})
	srv.AddTransport(httpTransport{})
	srv.AddTransport(websocketTransport(opts.Verifier, opts.AllowedOrigins))
	cache := smallQueries{lru.New[*ast.QueryDocument](1000)}
	srv.SetQueryCache(cache)
	srv.SetParserTokenLimit(DefaultQueryLimits.Tokens)
	srv.SetDisableSuggestion(opts.Production)
	if opts.Introspection {
		srv.Use(extension.Introspection{})
	}
	srv.Use(socketRules{rateLimit: opts.RateLimit})
	srv.Use(queryGuard{known: cache, signedIn: DefaultQueryLimits, anonymous: AnonymousQueryLimits})
	srv.Use(introspectionGate{})
	srv.Use(&argumentCheck{})
	srv.Use(depthLimit{max: opts.MaxDepth})
	srv.Use(&complexityLimit{limit: opts.ComplexityLimit})
	for _, ext := range opts.Extensions {
		srv.Use(ext)
		if _, ok := ext.(graphql.FieldInterceptor); ok {
			srv.Use(gqlgenOnly{})
		}
	}
	// No entgql.Transactioner: the ledger runs its own transactions (with
	// retries); an outer one would hold SQLite's write lock against them.
	srv.AroundResponses(adminDeadline(opts.AdminQueryTimeout))
	srv.AroundOperations(func(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
		return next(withCappedConns(r.withLoaders(users.WithRequestCache(ctx))))
	})
	presenter := errorPresenter{logger: opts.Logger, production: opts.Production}
	srv.SetErrorPresenter(presenter.present)
	srv.SetRecoverFunc(func(ctx context.Context, v any) error {
		opts.Logger.ErrorContext(ctx, "panic in GraphQL resolver", "panic", v, "path", graphql.GetPath(ctx).String())
		return errInternal
	})
	return withSockets(srv)
}

// gqlgenOnly turns the plain writers off (graph/codegen) for every
// operation: a field interceptor sees only the fields gqlgen resolves.
type gqlgenOnly struct{}

func (gqlgenOnly) ExtensionName() string                   { return "gqlgenOnly" }
func (gqlgenOnly) Validate(graphql.ExecutableSchema) error { return nil }

func (gqlgenOnly) MutateOperationContext(_ context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	generated.WithoutPlainWrites(oc)
	return nil
}

// smallQueries keeps parsed documents of short queries only, so that the
// cache's memory stays bounded whatever callers send.
type smallQueries struct{ *lru.LRU[*ast.QueryDocument] }

func (c smallQueries) Add(ctx context.Context, query string, doc *ast.QueryDocument) {
	if len(query) <= maxCachedQuery {
		c.LRU.Add(ctx, query, doc)
	}
}

// originPatterns turns allowed origins (https://app.example.com) into the
// host patterns the WebSocket library matches; none allows any origin,
// since tokens, not cookies, carry identity.
func originPatterns(allowed []string) []string {
	if len(allowed) == 0 {
		return []string{"*"}
	}
	patterns := make([]string, 0, len(allowed))
	for _, a := range allowed {
		if _, host, ok := strings.Cut(a, "://"); ok {
			a = host
		}
		patterns = append(patterns, a)
	}
	return patterns
}
