package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/config"
	"github.com/tally-billing/tally/internal/migrator"
)

// maxTokenTTL keeps hand-minted tokens from turning into permanent keys.
const maxTokenTTL = 30 * 24 * time.Hour

func newTokenCommand() *cobra.Command {
	var (
		sub, role, email string
		ttl              time.Duration
	)
	cmd := &cobra.Command{
		Use:   "token --sub SUBJECT [--role user|service|admin] [--email EMAIL] [--ttl DURATION]",
		Short: "Print a signed bearer token (HS256) for development and tests",
		Long: "Print a signed bearer token (HS256) on stdout. It is signed with TALLY_JWT_SECRET, or in\n" +
			"development without one with the secret that `tally serve` uses, kept in the database itself\n" +
			"(so run it with the server's DATABASE_URL; it applies pending migrations as serve does).\n" +
			"RS256 tokens (TALLY_JWT_PUBLIC_KEY) come from your identity provider, not from Tally.",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("token takes no arguments, got %q", args[0])}
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&sub, "sub", "", "the subject: the user's external id, or the service's name (required)")
	fs.StringVar(&role, "role", string(auth.RoleUser), "user, service or admin")
	fs.StringVar(&email, "email", "", "the email claim (optional)")
	fs.DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid, at most 720h (30 days)")
	addSettingFlags(fs, "database-url", "env")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		// The command line is checked before the configuration, so that a
		// typo is reported as such even where the configuration is wrong.
		r, err := auth.ParseRole(role)
		if err != nil {
			return usageError{fmt.Errorf("--role: %w", err)}
		}
		switch {
		case sub == "":
			return usageError{errors.New("--sub is required (the user's external id, or the service's name)")}
		case len(sub) > auth.MaxSubjectLen:
			return usageError{fmt.Errorf("--sub is longer than %d bytes", auth.MaxSubjectLen)}
		case ttl <= 0 || ttl > maxTokenTTL:
			return usageError{fmt.Errorf("--ttl must be positive and at most 720h (30 days), not %s", ttl)}
		}
		cfg, err := loadConfig(cmd.Flags())
		if err != nil {
			return err
		}
		token, err := mintToken(cmd.Context(), cfg, auth.MintClaims{Subject: sub, Role: r, Email: email}, ttl)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(cmd.OutOrStdout(), token)
		return err
	}
	return cmd
}

// mintToken signs a token the server configured by cfg accepts: the issuer
// and audience are cfg's, whatever claims says. A claim Mint refuses is a
// usage error.
func mintToken(ctx context.Context, cfg config.Config, claims auth.MintClaims, ttl time.Duration) (string, error) {
	secret, err := signingSecret(ctx, cfg)
	if err != nil {
		return "", err
	}
	// The server checks these when they are configured, so a token minted
	// without them would be refused.
	claims.Issuer, claims.Audience = cfg.JWTIssuer, cfg.JWTAudience
	token, err := auth.Mint(secret, claims, ttl)
	if err != nil {
		return "", usageError{err}
	}
	return token, nil
}

// signingSecret is the HS256 key the server verifies with. In development
// without TALLY_JWT_SECRET that is the database's own secret, so the database
// is prepared as serve would (migrations applied) and the token works
// wherever this runs.
func signingSecret(ctx context.Context, cfg config.Config) ([]byte, error) {
	if cfg.Env != config.Development || cfg.JWTSecret != "" || cfg.JWTPublicKey != "" {
		return auth.SigningSecret(ctx, cfg, nil)
	}
	db, err := openDatabase(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	m, err := migrator.New(db)
	if err != nil {
		return nil, err
	}
	if _, err := m.Up(ctx); err != nil {
		return nil, err
	}
	return auth.SigningSecret(ctx, cfg, db.Ent)
}
