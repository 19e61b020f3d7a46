// Package auth turns an `Authorization: Bearer <JWT>` header into the
// identity of the caller. It verifies tokens (HS256 with a shared secret, or
// RS256 with the identity provider's public key), puts the Caller in the
// request context, and mints HS256 tokens for development. Deciding what a
// caller may do is left to the GraphQL layer: this package only says who the
// caller is.
package auth

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tally-billing/tally/internal/apperr"
)

// Role is what kind of caller a token speaks for.
type Role string

// The roles a token's `role` claim may name.
const (
	// RoleUser is an end user of the application; a token without a role
	// claim is a user token.
	RoleUser Role = "user"
	// RoleService is the application's backend acting on users' behalf; the
	// token's subject names the service (for example "billing-backend").
	RoleService Role = "service"
	// RoleAdmin is an operator of Tally.
	RoleAdmin Role = "admin"
)

// ParseRole accepts exactly user, service or admin. Matching is
// case-sensitive: a role is a security decision, and "Admin" from a
// misconfigured issuer should be noticed rather than guessed at.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleUser, RoleService, RoleAdmin:
		return r, nil
	}
	return "", fmt.Errorf("unknown role %q (use user, service or admin)", s)
}

// MaxSubjectLen is the longest accepted `sub`, in bytes: the user's external
// id is stored in a column of this size.
const MaxSubjectLen = 255

// maxEmailLen matches the storage of a user's email.
const maxEmailLen = 320

// externalIDProblem says why s cannot be an external id (a token's `sub`, or
// the externalUserId a service or admin names a user by), or "" if it can.
// The one rule for every way an id arrives, so that one string always names
// one account: nothing is trimmed or folded, and what would need it (blank,
// spaces at either end, control characters) is refused rather than stored.
func externalIDProblem(s string) string {
	switch {
	case strings.TrimSpace(s) == "":
		return "is empty"
	case len(s) > MaxSubjectLen:
		return fmt.Sprintf("is longer than %d bytes", MaxSubjectLen)
	case !utf8.ValidString(s):
		return "is not valid UTF-8"
	case strings.ContainsFunc(s, unicode.IsControl):
		return "contains control characters"
	case strings.TrimSpace(s) != s:
		return "starts or ends with white space"
	}
	return ""
}

// CheckExternalID refuses, as INVALID_ARGUMENT naming the field, an
// external id that no token could carry as its subject.
func CheckExternalID(field, s string) error {
	if why := externalIDProblem(s); why != "" {
		return apperr.New(apperr.InvalidArgument, "%s %s", field, why)
	}
	return nil
}

// Caller is the identity carried by a verified token.
type Caller struct {
	// Subject is the token's `sub`: the user's external id, or the name of
	// the service for RoleService.
	Subject string
	Role    Role
	// Email is the token's optional `email` claim, as the issuer stated it.
	Email string
	// Expires is when the token stops being valid (its `exp`); a WebSocket
	// opened with it is closed then.
	Expires time.Time
}

// Key identifies the caller for per-caller limits: the same subject under
// two roles is two callers.
func (c Caller) Key() string { return string(c.Role) + ":" + c.Subject }

type callerKey struct{}

// WithCaller returns ctx carrying c.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// FromContext returns the caller of the request; false means an anonymous
// request (no Authorization header).
func FromContext(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}
