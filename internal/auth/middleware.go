package auth

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/tally-billing/tally/internal/apperr"
)

// Middleware puts the caller of a valid bearer token in the request context.
// A request without an Authorization header goes on anonymously, so public
// fields keep working; a header that is present but unusable is answered
// 401 at once rather than downgraded to anonymous, because a client that
// sent credentials expects them to be used and should learn they were not.
func Middleware(v *Verifier) func(http.Handler) http.Handler {
	if v == nil {
		panic("auth.Middleware: nil Verifier")
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			values := r.Header.Values("Authorization")
			if len(values) == 0 {
				next.ServeHTTP(w, r)
				return
			}
			if len(values) > 1 {
				refuse(w, `Bearer error="invalid_request"`, "more than one Authorization header")
				return
			}
			token, ok := bearerToken(values[0])
			if !ok {
				refuse(w, "Bearer", "Authorization must use the Bearer scheme")
				return
			}
			caller, err := v.Verify(token)
			if err != nil {
				msg := "invalid token"
				if e, ok := apperr.As(err); ok {
					msg = e.Message
				}
				refuse(w, `Bearer error="invalid_token"`, msg)
				return
			}
			next.ServeHTTP(w, r.WithContext(WithCaller(r.Context(), caller)))
		})
	}
}

// bearerToken returns the token of a Bearer credential; the scheme name is
// case-insensitive (RFC 9110). "Bearer" with nothing after it is a Bearer
// credential with an empty token, which Verify refuses by name.
func bearerToken(header string) (string, bool) {
	scheme, token, _ := strings.Cut(strings.TrimSpace(header), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimSpace(token), true
}

// refuse answers like a GraphQL server would, so that clients handle a bad
// token with the same code path as any other UNAUTHENTICATED error.
func refuse(w http.ResponseWriter, challenge, msg string) {
	type extensions struct {
		Code apperr.Code `json:"code"`
	}
	type gqlError struct {
		Message    string     `json:"message"`
		Extensions extensions `json:"extensions"`
	}
	body, _ := json.Marshal(struct {
		Errors []gqlError `json:"errors"`
	}{[]gqlError{{Message: msg, Extensions: extensions{Code: apperr.Unauthenticated}}}})
	h := w.Header()
	h.Set("WWW-Authenticate", challenge)
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = w.Write(append(body, '\n'))
}
