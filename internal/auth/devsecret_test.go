package auth_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/config"
)

func TestDevSecretIsKeptBesideTheDatabase(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "tally.db")
	first, path, err := auth.DevSecret(db)
	if err != nil {
		t.Fatal(err)
	}
	if path != db+".jwt-secret" {
		t.Fatalf("secret kept in %s, want beside the database", path)
	}
	if len(first) < 32 {
		t.Fatalf("secret of %d bytes", len(first))
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", st.Mode().Perm())
	}
	for _, url := range []string{db, "sqlite://" + db, "sqlite:" + db, "sqlite://" + db + "?mode=rwc"} {
		again, p, err := auth.DevSecret(url)
		if err != nil || p != path || !bytes.Equal(again, first) {
			t.Fatalf("DevSecret(%q) = %s in %s, %v; want the first secret again", url, again, p, err)
		}
	}
	other, _, err := auth.DevSecret(filepath.Join(dir, "other.db"))
	if err != nil || bytes.Equal(other, first) {
		t.Fatalf("another database should get its own secret (err %v)", err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}

func TestDevSecretFirstCallsAgree(t *testing.T) {
	db := filepath.Join(t.TempDir(), "race.db")
	const n = 16
	secrets := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			secrets[i], _, errs[i] = auth.DevSecret(db)
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
}

func TestDevSecretErrors(t *testing.T) {
	if _, _, err := auth.DevSecret("mysql://x"); err == nil || !strings.Contains(err.Error(), "DATABASE_URL") {
		t.Errorf("bad URL: %v", err)
	}
	if _, _, err := auth.DevSecret(filepath.Join(t.TempDir(), "missing", "t.db")); err == nil {
		t.Error("a secret was made in a directory that does not exist")
	}
	db := filepath.Join(t.TempDir(), "t.db")
	if err := os.WriteFile(db+".jwt-secret", []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := auth.DevSecret(db); err == nil || !strings.Contains(err.Error(), "delete the file") {
		t.Errorf("damaged secret: %v", err)
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

	t.Run("development secret", func(t *testing.T) {
		db := filepath.Join(dir, "dev.db")
		v, err := auth.VerifierFromConfig(load(t, map[string]string{"DATABASE_URL": db}))
		if err != nil {
			t.Fatal(err)
		}
		devSecret, _, err := auth.DevSecret(db)
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
	})

	t.Run("configured secret, issuer and audience", func(t *testing.T) {
		v, err := auth.VerifierFromConfig(load(t, map[string]string{
			"TALLY_ENV": "production", "TALLY_JWT_SECRET": string(secret),
			"TALLY_JWT_ISSUER": "idp", "TALLY_JWT_AUDIENCE": "tally",
		}))
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
			v, err := auth.VerifierFromConfig(load(t, env))
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
			_, err := auth.VerifierFromConfig(load(t, map[string]string{"TALLY_JWT_PUBLIC_KEY": value}))
			if err == nil || !strings.HasPrefix(err.Error(), "TALLY_JWT_PUBLIC_KEY: ") || strings.Contains(err.Error(), "\n") {
				t.Errorf("%q: error %v, want one line naming TALLY_JWT_PUBLIC_KEY", value, err)
			}
		}
	})

	t.Run("production never uses the development secret", func(t *testing.T) {
		db := filepath.Join(dir, "prod.db")
		cfg := load(t, map[string]string{"TALLY_JWT_SECRET": string(secret), "DATABASE_URL": db})
		cfg.Env, cfg.JWTSecret = config.Production, ""
		if _, err := auth.VerifierFromConfig(cfg); err == nil {
			t.Fatal("production without a secret got a verifier")
		}
		if _, err := os.Stat(db + ".jwt-secret"); err == nil {
			t.Fatal("production made a development secret")
		}
	})
}
