package auth

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/devsecret"
	"github.com/tally-billing/tally/internal/config"
	"github.com/tally-billing/tally/internal/database"
)

// devSecretName is the development HS256 secret's row in dev_secrets.
const devSecretName = "jwt_hs256"

// legacyDevSecretFile is where releases before the dev_secrets table kept
// the secret when the database is not a file (PostgreSQL): the working
// directory.
const legacyDevSecretFile = ".tally-dev-jwt-secret"

// devSecretBytes is the entropy of a development secret (256 bits, as
// production requires of TALLY_JWT_SECRET).
const devSecretBytes = 32

// DevSecret returns the development HS256 secret of the database: one per
// database, kept in the database itself (dev_secrets), so that `tally serve`
// and `tally token` agree with no configuration whatever directory each runs
// in. The first call makes it; concurrent first calls agree on the one row
// that was inserted. A secret an earlier release kept in a file (beside the
// SQLite file, or in the working directory for PostgreSQL) is adopted, so
// tokens minted with it keep working. The secret is hex text, so it can be
// copied into TALLY_JWT_SECRET unchanged. Development only: the caller
// checks the environment.
func DevSecret(ctx context.Context, client *ent.Client, databaseURL string) ([]byte, error) {
	secret, err := storedDevSecret(ctx, client)
	if err == nil || !ent.IsNotFound(err) {
		return secret, err
	}
	value := legacyDevSecret(databaseURL)
	if value == "" {
		raw := make([]byte, devSecretBytes)
		_, _ = rand.Read(raw) // never fails (crypto/rand aborts the program instead)
		value = hex.EncodeToString(raw)
	}
	err = client.DevSecret.Create().SetName(devSecretName).SetValue(value).
		OnConflictColumns(devsecret.FieldName).DoNothing().Exec(ctx)
	// DoNothing reports a conflict as "no rows" on some dialects: the row
	// is there, written by another process, which is all that is needed.
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("storing the development token secret: %w", err)
	}
	return storedDevSecret(ctx, client)
}

func storedDevSecret(ctx context.Context, client *ent.Client) ([]byte, error) {
	row, err := client.DevSecret.Query().Where(devsecret.Name(devSecretName)).Only(ctx)
	if ent.IsNotFound(err) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("reading the development token secret: %w", err)
	}
	return []byte(row.Value), nil
}

// legacyDevSecret is the secret an earlier release kept in a file for
// databaseURL, or "" when there is none usable.
func legacyDevSecret(databaseURL string) string {
	loc, err := database.Parse(databaseURL)
	if err != nil {
		return ""
	}
	path := legacyDevSecretFile
	if loc.Path != "" {
		path = loc.Path + ".jwt-secret"
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	text := strings.TrimSpace(string(data))
	if raw, err := hex.DecodeString(text); err != nil || len(raw) < devSecretBytes || len(text) > 256 {
		return ""
	}
	return text
}

// VerifierFromConfig returns the Verifier that cfg asks for: RS256 with
// TALLY_JWT_PUBLIC_KEY, HS256 with TALLY_JWT_SECRET, or, in development with
// neither, HS256 with the development secret of client's database (see
// DevSecret).
//
// TALLY_JWT_PUBLIC_KEY holds either the PEM text itself (recognized by its
// "-----BEGIN" line; "\n" escapes are accepted for one-line environments) or
// the path of a PEM file.
func VerifierFromConfig(ctx context.Context, cfg config.Config, client *ent.Client) (*Verifier, error) {
	vc := VerifierConfig{Issuer: cfg.JWTIssuer, Audience: cfg.JWTAudience}
	switch {
	case cfg.JWTPublicKey != "":
		pemData, err := publicKeyPEM(cfg.JWTPublicKey)
		if err != nil {
			return nil, err
		}
		vc.PublicKeyPEM = pemData
	case cfg.JWTSecret != "":
		vc.Secret = []byte(cfg.JWTSecret)
	case cfg.Env == config.Development && client == nil:
		return nil, errors.New("the development token secret is kept in the database, and none was given")
	case cfg.Env == config.Development:
		secret, err := DevSecret(ctx, client, cfg.DatabaseURL)
		if err != nil {
			return nil, err
		}
		vc.Secret = secret
		vc.DevelopmentSecret = true
	default:
		// config.Load refuses this already; kept so that a Config built by
		// hand cannot run production without a real key.
		return nil, errors.New("TALLY_JWT_SECRET or TALLY_JWT_PUBLIC_KEY is required in production")
	}
	v, err := NewVerifier(vc)
	if err != nil && vc.PublicKeyPEM != nil {
		return nil, fmt.Errorf("TALLY_JWT_PUBLIC_KEY: %w", err)
	}
	return v, err
}

func publicKeyPEM(value string) ([]byte, error) {
	if strings.Contains(value, "-----BEGIN") {
		if !strings.Contains(value, "\n") {
			value = strings.ReplaceAll(value, `\n`, "\n")
		}
		return []byte(value), nil
	}
	data, err := os.ReadFile(value)
	if err != nil {
		return nil, fmt.Errorf("TALLY_JWT_PUBLIC_KEY: not PEM text, and not a readable PEM file: %w", err)
	}
	return data, nil
}

// SigningSecret is the HS256 key the server verifies with, mirroring
// VerifierFromConfig, for minting tokens it accepts (`tally token`, the
// playground's development token). In development without TALLY_JWT_SECRET
// it is the development secret of client's database.
func SigningSecret(ctx context.Context, cfg config.Config, client *ent.Client) ([]byte, error) {
	switch {
	case cfg.JWTPublicKey != "":
		return nil, errors.New("cannot mint: TALLY_JWT_PUBLIC_KEY is set, and RS256 tokens need the private key, which Tally never holds; get tokens from your identity provider")
	case cfg.JWTSecret != "":
		return []byte(cfg.JWTSecret), nil
	case cfg.Env != config.Development:
		return nil, errors.New("cannot mint: production signs only with TALLY_JWT_SECRET, which is not set")
	case client == nil:
		return nil, errors.New("the development token secret is kept in the database, and none was given")
	}
	return DevSecret(ctx, client, cfg.DatabaseURL)
}
