package auth_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tally-billing/tally/internal/auth"
)

// serve runs one request through the middleware and reports what the
// handler behind it saw.
func serve(t *testing.T, headers ...string) (rec *httptest.ResponseRecorder, called bool, caller auth.Caller, hasCaller bool) {
	t.Helper()
	h := auth.Middleware(hsVerifier(t, auth.VerifierConfig{}))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		called = true
		caller, hasCaller = auth.FromContext(r.Context())
		w.WriteHeader(http.StatusNoContent)
	}))
	req := httptest.NewRequest(http.MethodPost, "/graphql", strings.NewReader(`{"query":"{ viewer { id } }"}`))
	for _, v := range headers {
		req.Header.Add("Authorization", v)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec, called, caller, hasCaller
}

func TestNoHeaderIsAnonymous(t *testing.T) {
	rec, called, _, hasCaller := serve(t)
	if !called || hasCaller || rec.Code != http.StatusNoContent {
		t.Fatalf("called %v, caller %v, status %d: want the handler to run without a caller", called, hasCaller, rec.Code)
	}
}

func TestValidTokenPutsTheCallerInTheContext(t *testing.T) {
	token := sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"role": "service", "sub": "billing-backend"}))
	for _, header := range []string{"Bearer " + token, "bearer " + token, "  Bearer   " + token + " "} {
		rec, called, caller, hasCaller := serve(t, header)
		if !called || !hasCaller || rec.Code != http.StatusNoContent {
			t.Fatalf("%q: called %v, caller %v, status %d", header, called, hasCaller, rec.Code)
		}
		if caller.Subject != "billing-backend" || caller.Role != auth.RoleService || caller.Email != "" || caller.Expires.IsZero() {
			t.Fatalf("caller %+v", caller)
		}
	}
}

func TestUnusableCredentialsAre401(t *testing.T) {
	good := sign(t, jwt.SigningMethodHS256, secret, claims(nil))
	expired := sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"exp": time.Now().Add(-time.Hour).Unix()}))
	cases := []struct {
		name    string
		headers []string
		msg     string
	}{
		{"expired", []string{"Bearer " + expired}, "token expired"},
		{"bad signature", []string{"Bearer " + good[:len(good)-4] + "AAAA"}, "invalid token signature"},
		{"garbage", []string{"Bearer x.y.z"}, "malformed token"},
		{"Bearer without a token", []string{"Bearer"}, "missing bearer token"},
		{"Bearer and spaces", []string{"Bearer   "}, "missing bearer token"},
		{"empty header", []string{""}, "Authorization must use the Bearer scheme"},
		{"Basic", []string{"Basic YWxpY2U6cHc="}, "Authorization must use the Bearer scheme"},
		{"token without a scheme", []string{good}, "Authorization must use the Bearer scheme"},
		{"two headers", []string{"Bearer " + good, "Bearer " + good}, "more than one Authorization header"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec, called, _, _ := serve(t, c.headers...)
			if called {
				t.Fatal("the handler ran for a refused request")
			}
			if rec.Code != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401", rec.Code)
			}
			if got := rec.Header().Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
				t.Fatalf("WWW-Authenticate %q, want a Bearer challenge", got)
			}
			if got := rec.Header().Get("Content-Type"); got != "application/json" {
				t.Fatalf("content type %q", got)
			}
			var body struct {
				Errors []struct {
					Message    string            `json:"message"`
					Extensions map[string]string `json:"extensions"`
				} `json:"errors"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %q: %v", rec.Body.String(), err)
			}
			if len(body.Errors) != 1 || body.Errors[0].Message != c.msg || body.Errors[0].Extensions["code"] != "UNAUTHENTICATED" {
				t.Fatalf("body %s, want one UNAUTHENTICATED error %q", rec.Body.String(), c.msg)
			}
		})
	}
}

func TestFromContextWithoutCaller(t *testing.T) {
	if c, ok := auth.FromContext(t.Context()); ok || c != (auth.Caller{}) {
		t.Fatalf("empty context gave %+v, %v", c, ok)
	}
	ctx := auth.WithCaller(t.Context(), auth.Caller{Subject: "a", Role: auth.RoleAdmin})
	if c, ok := auth.FromContext(ctx); !ok || c.Subject != "a" || c.Role != auth.RoleAdmin {
		t.Fatalf("got %+v, %v", c, ok)
	}
}
