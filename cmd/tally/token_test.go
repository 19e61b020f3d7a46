package main

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/config"
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

// serverVerifier is the verifier `tally serve` would build from env in dir.
func serverVerifier(t *testing.T, env map[string]string) *auth.Verifier {
	t.Helper()
	cfg, err := config.Load(func(name string) string { return env[name] })
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.VerifierFromConfig(cfg)
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
			name: "development secret beside the default database",
			args: []string{"--sub", "alice", "--role", "admin", "--email", "a@example.com"},
			serverEnv: func(dir string) map[string]string {
				return map[string]string{"DATABASE_URL": filepath.Join(dir, "tally.db")}
			},
			want: auth.Caller{Subject: "alice", Role: auth.RoleAdmin, Email: "a@example.com"},
		},
		{
			name: "development secret beside --database-url",
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

func TestTokenKeepsTheDevelopmentSecretPrivateAndStable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first := mint(t, dir, nil, "--sub", "alice")
	st, err := os.Stat(filepath.Join(dir, "tally.db.jwt-secret"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("secret file mode %v, want 0600", st.Mode().Perm())
	}
	second := mint(t, dir, nil, "--sub", "alice")
	v := serverVerifier(t, map[string]string{"DATABASE_URL": filepath.Join(dir, "tally.db")})
	for _, token := range []string{first, second} {
		if _, err := v.Verify(token); err != nil {
			t.Fatalf("a token from an earlier run no longer verifies: %v", err)
		}
	}
}

// TestTokenWithPostgresUsesTheWorkingDirectory needs the process's working
// directory (where serve would look too), so it cannot run in parallel.
func TestTokenWithPostgresUsesTheWorkingDirectory(t *testing.T) {
	dir := t.TempDir()
	url := "postgres://u@127.0.0.1:1/db" // never contacted: minting needs no database
	token := mint(t, dir, []string{"DATABASE_URL=" + url}, "--sub", "alice")
	if _, err := os.Stat(filepath.Join(dir, ".tally-dev-jwt-secret")); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	if _, err := serverVerifier(t, map[string]string{"DATABASE_URL": url}).Verify(token); err != nil {
		t.Fatal(err)
	}
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
