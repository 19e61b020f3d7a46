package server

import (
	"context"
	"time"

	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/config"
	"github.com/tally-billing/tally/internal/playground"
)

// Development tokens from the playground's button: the admin "root", as the
// README's `tally token --sub root --role admin`, for an hour.
const (
	devTokenSubject = "root"
	devTokenTTL     = time.Hour
)

// devToken mints the playground's development token, or is nil (no button,
// no endpoint) outside development or where Tally cannot sign tokens
// (TALLY_JWT_PUBLIC_KEY).
func (s *Server) devToken(ctx context.Context) playground.DevToken {
	if s.cfg.Env != config.Development {
		return nil
	}
	secret, err := auth.SigningSecret(ctx, s.cfg, s.db.Ent)
	if err != nil {
		return nil
	}
	return func() (string, string, string, time.Time, error) {
		exp := time.Now().Add(devTokenTTL)
		token, err := auth.Mint(secret, auth.MintClaims{
			Subject: devTokenSubject, Role: auth.RoleAdmin,
			Issuer: s.cfg.JWTIssuer, Audience: s.cfg.JWTAudience,
		}, devTokenTTL)
		return token, devTokenSubject, string(auth.RoleAdmin), exp, err
	}
}
