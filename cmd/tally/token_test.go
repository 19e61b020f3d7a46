package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/config"
	"github.com/tally-billing/tally/internal/testdb"
)

// mint runs `tally token args...` and returns the token it printed.
func mint(t *testing.T, dir string, env []string, args ...string) string {
	t.Helper()
	stdout, stderr, code := run(t, dir, env, append([]string{"token"}, args...)...)
	if code != 0 || stderr != "" {
		t.Fatalf("tally token %s: exit %d, stderr:\n%s", strings.Join(args, " "), code, stderr)
	}
	token, rest, _ := strings.Cut(stdout, "\n")
	if rest != "" || strings.Count(token, ".") != 2 {
		t.Fatalf("stdout %q is not one token and a newline", stdout)
	}
	return token
}

// serverVerifier is the verifier `tally serve` would build from env.
func serverVerifier(t *testing.T, env map[string]string) *auth.Verifier {
	t.Helper()
	cfg, err := config.Load(func(name string) string { return env[name] })
	if err != nil {
		t.Fatal(err)
	}
	var client *ent.Client
	if env["DATABASE_URL"] != "" {
		client = testdb.Open(t, cfg.DatabaseURL).Ent
	}
	v, err := auth.VerifierFromConfig(context.Background(), cfg, client)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestTokenVerifiesWithTheServersConfiguration(t *testing.T) {
	t.Parallel()
	secret := "kR7vQ2xN9pLm4tWz8cYb3sHf6jDg1aEu5oVi0qTn"
	cases := []struct {
		name      string
		env       []string
		args      []string
		serverEnv func(dir string) map[string]string
		want      auth.Caller
	}{
		{
			name: "development secret of the default database",
			args: []string{"--sub", "alice", "--role", "admin", "--email", "a@example.com"},
			serverEnv: func(dir string) map[string]string {
				return map[string]string{"DATABASE_URL": filepath.Join(dir, "tally.db")}
			},
			want: auth.Caller{Subject: "alice", Role: auth.RoleAdmin, Email: "a@example.com"},
		},
		{
			name: "development secret of --database-url",
			args: []string{"--sub", "billing-backend", "--role", "service", "--database-url", "sqlite://other.db"},
			serverEnv: func(dir string) map[string]string {
				return map[string]string{"DATABASE_URL": filepath.Join(dir, "other.db")}
			},
			want: auth.Caller{Subject: "billing-backend", Role: auth.RoleService},
		},
		{
			name: "configured secret, issuer and audience in production",
			env:  []string{"TALLY_JWT_SECRET=" + secret, "TALLY_JWT_ISSUER=idp", "TALLY_JWT_AUDIENCE=tally"},
			args: []string{"--sub", "bob", "--env", "production"},
			serverEnv: func(string) map[string]string {
				return map[string]string{"TALLY_ENV": "production", "TALLY_JWT_SECRET": secret, "TALLY_JWT_ISSUER": "idp", "TALLY_JWT_AUDIENCE": "tally"}
			},
			want: auth.Caller{Subject: "bob", Role: auth.RoleUser},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			token := mint(t, dir, c.env, c.args...)
			got, err := serverVerifier(t, c.serverEnv(dir)).Verify(token)
			if err != nil {
				t.Fatalf("the server refuses the token: %v", err)
			}
			if got.Expires.IsZero() {
				t.Fatalf("caller %+v has no expiry", got)
			}
			if got.Expires = (time.Time{}); got != c.want {
				t.Fatalf("caller %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestTokenKeepsTheDevelopmentSecretInTheDatabase(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first := mint(t, dir, nil, "--sub", "alice")
	second := mint(t, dir, nil, "--sub", "alice")
	v := serverVerifier(t, map[string]string{"DATABASE_URL": filepath.Join(dir, "tally.db")})
	for _, token := range []string{first, second} {
		if _, err := v.Verify(token); err != nil {
			t.Fatalf("a token from an earlier run no longer verifies: %v", err)
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), "secret") {
			t.Fatalf("a secret file was written: %s", e.Name())
		}
	}
}

// TestTokenFromAnotherDirectory mints a token where the server does not
// run, as a new user would, and uses it against the real server: with the
// same DATABASE_URL it works; minted for another database it is refused
// with a hint in development, and without one in production.
func TestTokenFromAnotherDirectory(t *testing.T) {
	for _, kind := range testdb.Kinds() {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			serverDir, elsewhere := t.TempDir(), t.TempDir()
			url := filepath.Join(serverDir, "tally.db")
			if kind == testdb.Postgres {
				url = testdb.NewEmpty(t, kind).URL
			}
			addr := freeAddr(t)
			env := []string{"DATABASE_URL=" + url}
			srv := tally(t, serverDir, env, "serve", "--addr", addr)
			if err := srv.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
			base := "http://" + addr
			waitReady(t, base)

			token := mint(t, elsewhere, env, "--sub", "alice")
			if code, body := viewer(t, base, token); code != 200 || !strings.Contains(body, `"creditsBalance":0`) {
				t.Fatalf("token minted elsewhere with the same DATABASE_URL: %d %s", code, body)
			}
			// Minted for the default database of another directory.
			foreign := mint(t, elsewhere, nil, "--sub", "alice")
			if code, body := viewer(t, base, foreign); code != 401 || !strings.Contains(body, auth.DevSignatureHint) {
				t.Fatalf("token of another database: %d %s", code, body)
			}
		})
	}
}

func TestTokenSignatureRefusalInProductionHasNoHint(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	addr := freeAddr(t)
	srv := tally(t, dir, []string{"TALLY_ENV=production", "TALLY_JWT_SECRET=kR7vQ2xN9pLm4tWz8cYb3sHf6jDg1aEu5oVi0qTn"}, "serve", "--addr", addr)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	base := "http://" + addr
	waitReady(t, base)
	token := mint(t, t.TempDir(), nil, "--sub", "alice")
	code, body := viewer(t, base, token)
	if code != 401 || !strings.Contains(body, `"invalid token signature"`) || strings.Contains(body, "development") {
		t.Fatalf("production refusal: %d %s", code, body)
	}
}

// viewer asks the server for the token's viewer.
func viewer(t *testing.T, base, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/graphql", strings.NewReader(`{"query":"{ viewer { creditsBalance } }"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestTokenLifetime(t *testing.T) {
	t.Parallel()
	payload := func(token string) (iat, exp int64) {
		raw, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[1])
		if err != nil {
			t.Fatal(err)
		}
		var c struct{ Iat, Exp int64 }
		if err := json.Unmarshal(raw, &c); err != nil {
			t.Fatal(err)
		}
		return c.Iat, c.Exp
	}
	dir := t.TempDir()
	for args, want := range map[string]int64{"": 3600, "--ttl 2h": 7200, "--ttl 720h": 30 * 24 * 3600} {
		iat, exp := payload(mint(t, dir, nil, append([]string{"--sub", "a"}, strings.Fields(args)...)...))
		if exp-iat != want {
			t.Errorf("%q: lifetime %ds, want %ds", args, exp-iat, want)
		}
	}
}

func TestTokenCommandLineMistakes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		env  []string
		args []string
		code int
		want string
	}{
		{"unknown role", nil, []string{"--sub", "a", "--role", "root"}, 2, "--role"},
		{"role in another case", nil, []string{"--sub", "a", "--role", "Admin"}, 2, "--role"},
		{"zero ttl", nil, []string{"--sub", "a", "--ttl", "0s"}, 2, "--ttl"},
		{"negative ttl", nil, []string{"--sub", "a", "--ttl", "-1h"}, 2, "--ttl"},
		{"ttl over 30 days", nil, []string{"--sub", "a", "--ttl", "721h"}, 2, "--ttl"},
		{"ttl not a duration", nil, []string{"--sub", "a", "--ttl", "30d"}, 2, "--ttl"},
		{"no sub", nil, []string{"--role", "admin"}, 2, "--sub"},
		{"long sub", nil, []string{"--sub", strings.Repeat("x", 256)}, 2, "--sub"},
		{"an argument", nil, []string{"--sub", "a", "extra"}, 2, "no arguments"},
		{"unknown flag", nil, []string{"--sub", "a", "--nope"}, 2, "unknown flag"},
		{"only a public key", []string{"TALLY_JWT_PUBLIC_KEY=/etc/idp.pem"}, []string{"--sub", "a"}, 1, "private key"},
		{"production with only a public key", []string{"TALLY_ENV=production", "TALLY_JWT_PUBLIC_KEY=/etc/idp.pem"}, []string{"--sub", "a"}, 1, "private key"},
		{"production without a secret", nil, []string{"--sub", "a", "--env", "production"}, 1, "TALLY_JWT_SECRET"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			stdout, stderr, code := run(t, dir, c.env, append([]string{"token"}, c.args...)...)
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if code != c.code || stdout != "" || len(lines) != 1 || !strings.HasPrefix(lines[0], "tally: ") || !strings.Contains(lines[0], c.want) {
				t.Fatalf("exit %d (want %d), stdout %q, stderr:\n%s\nwant one line mentioning %q", code, c.code, stdout, stderr, c.want)
			}
			// A refusal must not leave a development secret behind either.
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Fatalf("files left in the working directory: %v", entries)
			}
		})
	}
}
