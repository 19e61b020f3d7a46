package graph

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	coderws "github.com/coder/websocket"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/auth"
)

// What a WebSocket carries: subscriptions only, for a caller with a token,
// until the token expires. Queries and mutations go over HTTP, where every
// request passes the same limits; a socket that carried them would be a way
// around the rate limit.
const (
	// CloseTokenExpired closes a socket whose token expired or was refused
	// (the code graphql-ws clients treat as final: no reconnect loop).
	CloseTokenExpired = 4403
	// MaxSubscriptionsPerSocket bounds what one socket keeps running.
	MaxSubscriptionsPerSocket = 10
	// socketInitTimeout bounds how long a socket may stay open before it
	// says who it is.
	socketInitTimeout = 10 * time.Second
	// maxSocketMessage bounds one message from the client.
	maxSocketMessage int64 = 64 << 10
)

// RateLimit says how long the caller with this key must wait before its
// next operation is allowed; zero allows it now (and counts it).
type RateLimit func(key string) time.Duration

// socket is what Tally keeps of one WebSocket connection: the connection,
// to close it with 4403 when its token expires, and its running
// subscriptions.
type socket struct {
	mu            sync.Mutex
	conn          transport.WebsocketConn
	expiry        *time.Timer
	subscriptions int
}

type socketKey struct{}

func socketFrom(ctx context.Context) (*socket, bool) {
	s, ok := ctx.Value(socketKey{}).(*socket)
	return s, ok
}

// withSockets gives every upgrade request a socket record before gqlgen's
// WebSocket transport accepts it.
func withSockets(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			r = r.WithContext(context.WithValue(r.Context(), socketKey{}, &socket{}))
		}
		next.ServeHTTP(w, r)
	})
}

// socketAcceptor records the accepted connection in the request's socket.
type socketAcceptor struct {
	transport.CoderWebsocketImplementation
}

func (a socketAcceptor) Accept(w http.ResponseWriter, r *http.Request, opts transport.WebsocketAcceptOptions) (transport.WebsocketConn, error) {
	conn, err := a.CoderWebsocketImplementation.Accept(w, r, opts)
	if err != nil {
		return nil, err
	}
	if s, ok := socketFrom(r.Context()); ok {
		s.mu.Lock()
		s.conn = conn
		s.mu.Unlock()
	}
	return conn, nil
}

func websocketTransport(v *auth.Verifier, allowedOrigins []string) transport.Websocket {
	limit := maxSocketMessage
	return transport.Websocket{
		KeepAlivePingInterval: 20 * time.Second,
		InitTimeout:           socketInitTimeout,
		PayloadReadLimit:      &limit,
		Implementation: socketAcceptor{transport.CoderWebsocketImplementation{
			AcceptOptions: coderws.AcceptOptions{OriginPatterns: originPatterns(allowedOrigins)},
		}},
		InitFunc: websocketAuth(v),
		CloseFunc: func(ctx context.Context, _ int) {
			if s, ok := socketFrom(ctx); ok {
				s.mu.Lock()
				if s.expiry != nil {
					s.expiry.Stop()
				}
				s.mu.Unlock()
			}
		},
	}
}

// websocketAuth verifies the token a client sends in its connection_init
// payload ({"Authorization": "Bearer …"}) and arranges for the socket to
// close with 4403 when the token expires. A socket without a token could do
// nothing (every subscription needs one), so it is refused at once, as is a
// bad token. The acknowledgement carries no payload: echoing the init
// payload would send the token back.
func websocketAuth(v *auth.Verifier) transport.WebsocketInitFunc {
	return func(ctx context.Context, payload transport.InitPayload) (context.Context, *transport.InitPayload, error) {
		refuse := func(msg string) (context.Context, *transport.InitPayload, error) {
			ctx = transport.WithWebsocketCloseCode(ctx, CloseTokenExpired)
			return transport.AppendCloseReason(ctx, msg), nil, errors.New(msg)
		}
		header := payload.Authorization()
		if header == "" {
			header = payload.GetString("authorization")
		}
		if header == "" || v == nil {
			return refuse(`a bearer token is required: send {"Authorization": "Bearer …"} in connection_init`)
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
		s, ok := socketFrom(ctx)
		if !ok {
			return refuse("not a WebSocket connection")
		}
		ctx, cancel := context.WithCancel(auth.WithCaller(ctx, c))
		s.mu.Lock()
		s.expiry = time.AfterFunc(time.Until(c.Expires), func() {
			// The close frame first, so the client reads 4403 rather than
			// the normal close that cancelling the connection sends.
			s.mu.Lock()
			conn := s.conn
			s.mu.Unlock()
			if conn != nil {
				_ = conn.WriteClose(CloseTokenExpired, "token expired")
			}
			cancel()
		})
		s.mu.Unlock()
		return ctx, nil, nil
	}
}

// socketRules applies to every operation a socket sends the rate limit of
// HTTP requests (one operation, one request) and the rule that a socket
// carries subscriptions only, and bounds its running subscriptions.
type socketRules struct{ rateLimit RateLimit }

var _ interface {
	graphql.HandlerExtension
	graphql.OperationParameterMutator
	graphql.OperationContextMutator
	graphql.OperationInterceptor
} = socketRules{}

func (socketRules) ExtensionName() string                   { return "SocketRules" }
func (socketRules) Validate(graphql.ExecutableSchema) error { return nil }

func (r socketRules) MutateOperationParameters(ctx context.Context, _ *graphql.RawParams) *gqlerror.Error {
	if _, ok := socketFrom(ctx); !ok || r.rateLimit == nil {
		return nil
	}
	c, _ := auth.FromContext(ctx)
	if d := r.rateLimit(c.Key()); d > 0 {
		return &gqlerror.Error{
			Message:    "too many requests; retry later",
			Extensions: map[string]any{"code": string(apperr.RateLimited), "retryAfter": int(math.Ceil(d.Seconds()))},
		}
	}
	return nil
}

func (socketRules) MutateOperationContext(ctx context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	if _, ok := socketFrom(ctx); ok && oc.Operation.Operation != ast.Subscription {
		return &gqlerror.Error{
			Message:    "a WebSocket carries subscriptions only; send queries and mutations over HTTP",
			Extensions: map[string]any{"code": string(apperr.InvalidArgument)},
		}
	}
	return nil
}

func (socketRules) InterceptOperation(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	s, ok := socketFrom(ctx)
	if !ok {
		return next(ctx)
	}
	s.mu.Lock()
	if s.subscriptions >= MaxSubscriptionsPerSocket {
		s.mu.Unlock()
		return graphql.OneShot(&graphql.Response{Errors: gqlerror.List{{
			Message:    "this socket runs as many subscriptions as it may; stop one first",
			Extensions: map[string]any{"code": string(apperr.InvalidArgument), "limit": "subscriptionsPerSocket", "max": MaxSubscriptionsPerSocket},
		}}})
	}
	s.subscriptions++
	s.mu.Unlock()
	responses := next(ctx)
	var once sync.Once
	return func(ctx context.Context) *graphql.Response {
		resp := responses(ctx)
		if resp == nil {
			once.Do(func() {
				s.mu.Lock()
				s.subscriptions--
				s.mu.Unlock()
			})
		}
		return resp
	}
}
