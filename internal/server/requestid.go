package server

import (
	"context"
	"net/http"
	"regexp"

	"github.com/go-chi/chi/v5/middleware"

	"github.com/tally-billing/tally/internal/pulid"
)

// clientRequestID is the shape of a client's X-Request-Id worth logging:
// short, and characters that cannot forge a log line.
var clientRequestID = regexp.MustCompile(`^[A-Za-z0-9._:/-]{1,64}$`)

type clientRequestIDKey struct{}

// requestID gives every request an id of the server's own, unique and
// unforgeable, under chi's context key (so middleware.GetReqID finds it)
// and in the X-Request-Id response header. Audit records and logs keep it.
// A client's own X-Request-Id is only logged beside it, and only when it is
// short and well-formed: taken as the request's id, one id could be reused
// to blur the audit trail, and a long one was echoed back in full.
func requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := pulid.New("req")
		ctx := context.WithValue(r.Context(), middleware.RequestIDKey, id)
		if client := r.Header.Get(middleware.RequestIDHeader); clientRequestID.MatchString(client) {
			ctx = context.WithValue(ctx, clientRequestIDKey{}, client)
		}
		w.Header().Set(middleware.RequestIDHeader, id)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// clientRequestIDOf is the client's well-formed X-Request-Id, if it sent one.
func clientRequestIDOf(ctx context.Context) string {
	id, _ := ctx.Value(clientRequestIDKey{}).(string)
	return id
}
