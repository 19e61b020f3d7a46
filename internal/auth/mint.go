package auth

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MintClaims is what a minted token says.
type MintClaims struct {
	Subject string
	// Role defaults to RoleUser.
	Role Role
	// Email, Issuer and Audience are left out of the token when empty.
	Email    string
	Issuer   string
	Audience string
}

// Mint signs an HS256 token valid from now for ttl. It is meant for
// development and tests: in production, tokens come from the application's
// identity provider. It refuses claims that Verify would refuse, so that a
// minted token is never one the server rejects for its content.
func Mint(secret []byte, c MintClaims, ttl time.Duration) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("auth: no secret to sign the token with")
	}
	if why := externalIDProblem(c.Subject); why != "" {
		return "", fmt.Errorf("auth: the subject %s", why)
	}
	role := c.Role
	if role == "" {
		role = RoleUser
	}
	if _, err := ParseRole(string(role)); err != nil {
		return "", fmt.Errorf("auth: %w", err)
	}
	if why := emailProblem(c.Email); why != "" {
		return "", fmt.Errorf("auth: the email %s", why)
	}
	if ttl <= 0 {
		return "", fmt.Errorf("auth: the lifetime must be positive, not %s", ttl)
	}
	now := time.Now()
	r := string(role)
	claims := claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   c.Subject,
			Issuer:    c.Issuer,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
		Email: c.Email,
		Role:  &r,
	}
	if c.Audience != "" {
		claims.Audience = jwt.ClaimStrings{c.Audience}
	}
	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("auth: signing the token: %w", err)
	}
	return token, nil
}
