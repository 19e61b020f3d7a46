package graph

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"entgo.io/contrib/entgql"
	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	coderws "github.com/coder/websocket"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/graph/generated"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/users"
)

// Options configure the GraphQL endpoint.
type Options struct {
	Introspection bool
	// ComplexityLimit caps the cost of one operation: every field costs 1,
	// and a connection multiplies what is below it by its page size.
	ComplexityLimit int
	// MaxDepth caps how deeply an operation nests fields.
	MaxDepth int
	// Verifier authenticates WebSocket connections (their token arrives in
	// the connection_init payload, not in a header).
	Verifier *auth.Verifier
	// AllowedOrigins are the browser origins allowed to open a WebSocket;
	// empty allows any (tokens, not cookies, carry identity).
	AllowedOrigins []string
	Logger         *slog.Logger
}

// NewHandler returns the GraphQL endpoint, with explicit transports: JSON
// POST, GET for queries only, and WebSocket for subscriptions.
func NewHandler(r *Resolver, opts Options) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ComplexityLimit == 0 {
		opts.ComplexityLimit = 5000
	}
	if opts.MaxDepth == 0 {
		opts.MaxDepth = 10
	}
	cfg := generated.Config{Resolvers: r, Directives: directives()}
	setComplexity(&cfg.Complexity)
	srv := handler.New(generated.NewExecutableSchema(cfg))
	srv.AddTransport(transport.Options{})
	srv.AddTransport(transport.GET{})
	srv.AddTransport(transport.POST{})
	srv.AddTransport(transport.Websocket{
		KeepAlivePingInterval: 20 * time.Second,
		Implementation: transport.CoderWebsocketImplementation{
			AcceptOptions: coderws.AcceptOptions{OriginPatterns: originPatterns(opts.AllowedOrigins)},
		},
		InitFunc: websocketAuth(opts.Verifier),
	})
	srv.SetQueryCache(lru.New[*ast.QueryDocument](1000))
	if opts.Introspection {
		srv.Use(extension.Introspection{})
	}
	srv.Use(depthLimit{max: opts.MaxDepth})
	srv.Use(extension.FixedComplexityLimit(opts.ComplexityLimit))
	// No entgql.Transactioner: the ledger runs its own transactions (with
	// retries); an outer one would hold SQLite's write lock against them.
	srv.AroundFields(pageArgs)
	srv.AroundOperations(func(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
		return next(users.WithRequestCache(ctx))
	})
	presenter := errorPresenter{logger: opts.Logger}
	srv.SetErrorPresenter(presenter.present)
	srv.SetRecoverFunc(func(ctx context.Context, v any) error {
		opts.Logger.ErrorContext(ctx, "panic in GraphQL resolver", "panic", v, "path", graphql.GetPath(ctx).String())
		return errInternal
	})
	return srv
}

// websocketAuth verifies the token a WebSocket client sends in its
// connection_init payload ({"Authorization": "Bearer …"}); no token makes
// an anonymous connection, which the directives then refuse. A bad token
// closes the connection with 4403, so that clients stop instead of
// reconnecting as they would after a normal close. The acknowledgement
// carries no payload: echoing the init payload would send the token back.
func websocketAuth(v *auth.Verifier) transport.WebsocketInitFunc {
	return func(ctx context.Context, payload transport.InitPayload) (context.Context, *transport.InitPayload, error) {
		header := payload.Authorization()
		if header == "" {
			header = payload.GetString("authorization")
		}
		if header == "" || v == nil {
			return ctx, nil, nil
		}
		refuse := func(msg string) (context.Context, *transport.InitPayload, error) {
			ctx = transport.WithWebsocketCloseCode(ctx, 4403)
			return transport.AppendCloseReason(ctx, msg), nil, errors.New(msg)
		}
		token, ok := strings.CutPrefix(header, "Bearer ")
		if !ok {
			return refuse("the Authorization value must be a Bearer token")
		}
		c, err := v.Verify(strings.TrimSpace(token))
		if err != nil {
			if e, ok := apperr.As(err); ok {
				return refuse(e.Message)
			}
			return refuse("invalid token")
		}
		return auth.WithCaller(ctx, c), nil, nil
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

// setComplexity makes every connection cost its page size times what is
// below it, and nodes(ids) the number of ids: aliases and wide lists are
// counted, so one request cannot ask for millions of rows.
func setComplexity(c *generated.ComplexityRoot) {
	conn := func(child int, first, last *int) int { return 1 + child*pageSize(first, last) }
	c.Query.Users = func(child int, _ *entgql.Cursor[string], first *int, _ *entgql.Cursor[string], last *int, _ *ent.UserOrder, _ *ent.UserWhereInput) int {
		return conn(child, first, last)
	}
	c.Query.Payments = func(child int, _ *entgql.Cursor[string], first *int, _ *entgql.Cursor[string], last *int, _ *ent.PaymentOrder, _ *ent.PaymentWhereInput) int {
		return conn(child, first, last)
	}
	c.Query.CreditTransactions = func(child int, _ *entgql.Cursor[string], first *int, _ *entgql.Cursor[string], last *int, _ *ent.CreditTransactionOrder, _ *ent.CreditTransactionWhereInput) int {
		return conn(child, first, last)
	}
	c.Query.AdminActions = func(child int, _ *entgql.Cursor[string], first *int, _ *entgql.Cursor[string], last *int, _ *ent.AdminActionOrder, _ *ent.AdminActionWhereInput) int {
		return conn(child, first, last)
	}
	c.Query.ProcessedEvents = func(child int, _ *entgql.Cursor[string], first *int, _ *entgql.Cursor[string], last *int, _ *ent.ProcessedEventOrder, _ *ent.ProcessedEventWhereInput) int {
		return conn(child, first, last)
	}
	c.Query.Nodes = func(child int, ids []string) int { return 1 + child*max(len(ids), 1) }
	c.User.Transactions = func(child int, _ *entgql.Cursor[string], first *int, _ *entgql.Cursor[string], last *int, _ *ent.CreditTransactionWhereInput) int {
		return conn(child, first, last)
	}
	c.User.Payments = func(child int, _ *entgql.Cursor[string], first *int, _ *entgql.Cursor[string], last *int, _ *ent.PaymentWhereInput) int {
		return conn(child, first, last)
	}
	c.User.Lots = func(child int, _ *entgql.Cursor[string], first *int, _ *entgql.Cursor[string], last *int, _ *ent.CreditLotOrder, _ *ent.CreditLotWhereInput) int {
		return conn(child, first, last)
	}
	c.User.Reservations = func(child int, _ *entgql.Cursor[string], first *int, _ *entgql.Cursor[string], last *int, _ *ent.CreditReservationOrder, _ *ent.CreditReservationWhereInput) int {
		return conn(child, first, last)
	}
	c.Payment.Transactions = func(child int, _ *entgql.Cursor[string], first *int, _ *entgql.Cursor[string], last *int, _ *ent.CreditTransactionOrder, _ *ent.CreditTransactionWhereInput) int {
		return conn(child, first, last)
	}
}
