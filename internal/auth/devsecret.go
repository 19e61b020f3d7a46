package auth

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/tally-billing/tally/internal/config"
	"github.com/tally-billing/tally/internal/database"
)

// devSecretFile holds the development secret when the database is not a
// file (PostgreSQL), in the working directory.
const devSecretFile = ".tally-dev-jwt-secret"

// devSecretBytes is the entropy of a development secret (256 bits, as
// production requires of TALLY_JWT_SECRET).
const devSecretBytes = 32

// DevSecret returns the development HS256 secret for databaseURL and the file
// that keeps it: beside the SQLite file ("tally.db" → "tally.db.jwt-secret"),
// or ".tally-dev-jwt-secret" in the working directory for PostgreSQL. The
// first call makes a random secret; every later call, from any process,
// reads the same one, which is how `tally serve` and `tally token` agree with
// no configuration. The secret is the file's hex text, so it can be copied
// into TALLY_JWT_SECRET unchanged.
func DevSecret(databaseURL string) (secret []byte, path string, err error) {
	loc, err := database.Parse(databaseURL)
	if err != nil {
		return nil, "", fmt.Errorf("DATABASE_URL: %w", err)
	}
	path = devSecretFile
	if loc.Path != "" {
		path = loc.Path + ".jwt-secret"
	}
	secret, err = readDevSecret(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err = createDevSecret(path); err == nil {
			secret, err = readDevSecret(path)
		}
	}
	if err != nil {
		return nil, path, err
	}
	return secret, path, nil
}

func readDevSecret(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("reading the development token secret: %w", err)
	}
	text := strings.TrimSpace(string(data))
	if raw, err := hex.DecodeString(text); err != nil || len(raw) < devSecretBytes {
		return nil, fmt.Errorf("the development token secret in %s is damaged; delete the file to make a new one", path)
	}
	return []byte(text), nil
}

// createDevSecret writes a new secret to path unless a file is already
// there. The secret is written completely to a temporary file first and then
// hard-linked into place, which fails rather than overwrites when another
// process got there first: so no reader ever sees a partial file, and every
// process ends up reading the one secret that won.
func createDevSecret(path string) error {
	raw := make([]byte, devSecretBytes)
	_, _ = rand.Read(raw) // never fails (crypto/rand aborts the program instead)
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("creating the development token secret %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	// CreateTemp already uses 0600; said again because the secret signs
	// admin tokens and must stay private to the developer's account.
	err = tmp.Chmod(0o600)
	if err == nil {
		_, err = tmp.WriteString(hex.EncodeToString(raw) + "\n")
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing the development token secret %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("creating the development token secret %s: %w", path, err)
	}
	return nil
}

// VerifierFromConfig returns the Verifier that cfg asks for: RS256 with
// TALLY_JWT_PUBLIC_KEY, HS256 with TALLY_JWT_SECRET, or, in development with
// neither, HS256 with the development secret (see DevSecret).
//
// TALLY_JWT_PUBLIC_KEY holds either the PEM text itself (recognized by its
// "-----BEGIN" line; "\n" escapes are accepted for one-line environments) or
// the path of a PEM file.
func VerifierFromConfig(cfg config.Config) (*Verifier, error) {
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
	case cfg.Env == config.Development:
		secret, _, err := DevSecret(cfg.DatabaseURL)
		if err != nil {
			return nil, err
		}
		vc.Secret = secret
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
// playground's development token).
func SigningSecret(cfg config.Config) ([]byte, error) {
	switch {
	case cfg.JWTPublicKey != "":
		return nil, errors.New("cannot mint: TALLY_JWT_PUBLIC_KEY is set, and RS256 tokens need the private key, which Tally never holds; get tokens from your identity provider")
	case cfg.JWTSecret != "":
		return []byte(cfg.JWTSecret), nil
	case cfg.Env != config.Development:
		return nil, errors.New("cannot mint: production signs only with TALLY_JWT_SECRET, which is not set")
	}
	secret, _, err := DevSecret(cfg.DatabaseURL)
	return secret, err
}
