package auth_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/config"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/testdb"
)

func TestDevSecretIsOnePerDatabase(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		first, err := auth.DevSecret(ctx, db.Ent, db.URL)
		if err != nil {
			t.Fatal(err)
		}
		if raw, err := hex.DecodeString(string(first)); err != nil || len(raw) < 32 {
			t.Fatalf("secret %q is not 32 bytes of hex", first)
		}
		// Another process on the same database: the stored secret.
		again, err := auth.DevSecret(ctx, testdb.Open(t, db.URL).Ent, db.URL)
		if err != nil || !bytes.Equal(again, first) {
			t.Fatalf("second call: %v; want the first secret again", err)
		}
		if n := db.Ent.DevSecret.Query().CountX(ctx); n != 1 {
			t.Fatalf("%d secrets stored, want 1", n)
		}
		kind := testdb.SQLite
		if strings.HasPrefix(db.URL, "postgres") {
			kind = testdb.Postgres
		}
		other := testdb.New(t, kind)
		if o, err := auth.DevSecret(ctx, other.Ent, other.URL); err != nil || bytes.Equal(o, first) {
			t.Fatalf("another database should get its own secret (err %v)", err)
		}
	})
}

func TestDevSecretFirstCallsAgree(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		const n = 8
		secrets := make([][]byte, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			// A pool each, as separate processes would have.
			client := testdb.Open(t, db.URL).Ent
			wg.Go(func() {
				<-start
				secrets[i], errs[i] = auth.DevSecret(context.Background(), client, db.URL)
			})
		}
		close(start)
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				t.Fatal(errs[i])
			}
			if !bytes.Equal(secrets[i], secrets[0]) {
				t.Fatalf("call %d got another secret than call 0", i)
			}
		}
	})
}

// TestDevSecretAdoptsTheFileOfEarlierReleases keeps tokens minted before
// the secret moved into the database working.
func TestDevSecretAdoptsTheFileOfEarlierReleases(t *testing.T) {
	ctx := context.Background()
	db := testdb.New(t, testdb.SQLite)
	path := strings.TrimPrefix(db.URL, "sqlite://") + ".jwt-secret"
	legacy := strings.Repeat("ab", 32)
	if err := os.WriteFile(path, []byte(legacy+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := auth.DevSecret(ctx, db.Ent, db.URL)
	if err != nil || string(got) != legacy {
		t.Fatalf("got %q, %v; want the file's secret", got, err)
	}
	// A damaged file is not adopted: a new secret is made instead.
	other := testdb.New(t, testdb.SQLite)
	opath := strings.TrimPrefix(other.URL, "sqlite://") + ".jwt-secret"
	if err := os.WriteFile(opath, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := auth.DevSecret(ctx, other.Ent, other.URL); err != nil || len(got) != 64 {
		t.Fatalf("damaged file: %q, %v", got, err)
	}
}

func TestVerifierFromConfig(t *testing.T) {
	dir := t.TempDir()
	load := func(t *testing.T, env map[string]string) config.Config {
		t.Helper()
		cfg, err := config.Load(func(name string) string { return env[name] })
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}

	ctx := context.Background()
	t.Run("development secret", func(t *testing.T) {
		testdb.Each(t, func(t *testing.T, db *database.DB) {
			v, err := auth.VerifierFromConfig(ctx, load(t, map[string]string{"DATABASE_URL": db.URL}), db.Ent)
			if err != nil {
				t.Fatal(err)
			}
			devSecret, err := auth.DevSecret(ctx, db.Ent, db.URL)
			if err != nil {
				t.Fatal(err)
			}
			token, err := auth.Mint(devSecret, auth.MintClaims{Subject: "alice"}, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := v.Verify(token); err != nil {
				t.Fatal(err)
			}
			// Minted for another database: the refusal says what to do.
			other, _ := auth.Mint(secret, auth.MintClaims{Subject: "alice"}, time.Hour)
			refused(t, func() error { _, err := v.Verify(other); return err }(), auth.DevSignatureHint)
		})
	})

	t.Run("no hint with a configured secret", func(t *testing.T) {
		db := testdb.New(t, testdb.SQLite)
		for _, env := range []string{config.Development, config.Production} {
			v, err := auth.VerifierFromConfig(ctx, load(t, map[string]string{
				"TALLY_ENV": env, "TALLY_JWT_SECRET": string(secret), "DATABASE_URL": db.URL,
			}), db.Ent)
			if err != nil {
				t.Fatal(err)
			}
			devSecret, err := auth.DevSecret(ctx, db.Ent, db.URL)
			if err != nil {
				t.Fatal(err)
			}
			token, _ := auth.Mint(devSecret, auth.MintClaims{Subject: "a"}, time.Hour)
			_, err = v.Verify(token)
			refused(t, err, "invalid token signature")
			if strings.Contains(err.Error(), "development") {
				t.Fatalf("%s: the refusal hints at the development secret: %v", env, err)
			}
		}
	})

	t.Run("configured secret, issuer and audience", func(t *testing.T) {
		v, err := auth.VerifierFromConfig(ctx, load(t, map[string]string{
			"TALLY_ENV": "production", "TALLY_JWT_SECRET": string(secret),
			"TALLY_JWT_ISSUER": "idp", "TALLY_JWT_AUDIENCE": "tally",
		}), nil)
		if err != nil {
			t.Fatal(err)
		}
		token, _ := auth.Mint(secret, auth.MintClaims{Subject: "a", Issuer: "idp", Audience: "tally"}, time.Hour)
		if _, err := v.Verify(token); err != nil {
			t.Fatal(err)
		}
		token, _ = auth.Mint(secret, auth.MintClaims{Subject: "a"}, time.Hour)
		refused(t, func() error { _, err := v.Verify(token); return err }(), "token issuer not accepted")
	})

	pub := publicPEM(t, rsaKey())
	keyFile := filepath.Join(dir, "public.pem")
	if err := os.WriteFile(keyFile, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	token := sign(t, jwt.SigningMethodRS256, rsaKey(), claims(nil))
	for name, value := range map[string]string{
		"public key as PEM text":        string(pub),
		"public key as escaped PEM":     strings.ReplaceAll(string(pub), "\n", `\n`),
		"public key as a path":          keyFile,
		"public key in production mode": keyFile,
	} {
		t.Run(name, func(t *testing.T) {
			env := map[string]string{"TALLY_JWT_PUBLIC_KEY": value}
			if strings.Contains(name, "production") {
				env["TALLY_ENV"] = "production"
			}
			v, err := auth.VerifierFromConfig(ctx, load(t, env), nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := v.Verify(token); err != nil {
				t.Fatal(err)
			}
		})
	}

	t.Run("unreadable public key", func(t *testing.T) {
		for _, value := range []string{filepath.Join(dir, "nope.pem"), "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----"} {
			_, err := auth.VerifierFromConfig(ctx, load(t, map[string]string{"TALLY_JWT_PUBLIC_KEY": value}), nil)
			if err == nil || !strings.HasPrefix(err.Error(), "TALLY_JWT_PUBLIC_KEY: ") || strings.Contains(err.Error(), "\n") {
				t.Errorf("%q: error %v, want one line naming TALLY_JWT_PUBLIC_KEY", value, err)
			}
		}
	})

	t.Run("production never uses the development secret", func(t *testing.T) {
		db := testdb.New(t, testdb.SQLite)
		cfg := load(t, map[string]string{"TALLY_JWT_SECRET": string(secret), "DATABASE_URL": db.URL})
		cfg.Env, cfg.JWTSecret = config.Production, ""
		if _, err := auth.VerifierFromConfig(ctx, cfg, db.Ent); err == nil {
			t.Fatal("production without a secret got a verifier")
		}
		if n := db.Ent.DevSecret.Query().CountX(ctx); n != 0 {
			t.Fatal("production made a development secret")
		}
	})
}
