package config

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"
)

func env(kv map[string]string) Source {
	return func(name string) string { return kv[name] }
}

func TestDefaultsAreTheEmbeddedDevelopmentSetup(t *testing.T) {
	c, err := Load(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Env != Development || c.Addr != "127.0.0.1:8080" || c.DatabaseURL != "tally.db" {
		t.Fatalf("unexpected defaults: env=%q addr=%q db=%q", c.Env, c.Addr, c.DatabaseURL)
	}
	if !c.Playground || !c.Introspection || !c.SeedDemoData {
		t.Fatal("development should enable the playground, introspection and demo data")
	}
	if len(c.StripeWebhookSecrets) != 1 || c.StripeWebhookSecrets[0] != DevWebhookSecret {
		t.Fatalf("development webhook secrets = %v", c.StripeWebhookSecrets)
	}
	if c.LogLevel != slog.LevelInfo || c.ShutdownTimeout != 20*time.Second {
		t.Fatalf("log level %v, shutdown timeout %v", c.LogLevel, c.ShutdownTimeout)
	}
}

func TestValuesAreRead(t *testing.T) {
	c, err := Load(env(map[string]string{
		"TALLY_ADDR":             ":9090",
		"DATABASE_URL":           "postgres://u:p@db:5432/tally",
		"TALLY_LOG_LEVEL":        "debug",
		"TALLY_DB_MAX_CONNS":     "32",
		"STRIPE_WEBHOOK_SECRET":  "whsec_new, whsec_old",
		"TALLY_PLAYGROUND":       "false",
		"TALLY_SHUTDOWN_TIMEOUT": "5s",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != ":9090" || c.DBMaxConns != 32 || c.LogLevel != slog.LevelDebug || c.Playground || c.ShutdownTimeout != 5*time.Second {
		t.Fatalf("values not read: %+v", c)
	}
	if strings.Join(c.StripeWebhookSecrets, ",") != "whsec_new,whsec_old" {
		t.Fatalf("webhook secrets for rotation = %v", c.StripeWebhookSecrets)
	}
}

func TestInvalidValuesNameTheVariable(t *testing.T) {
	cases := map[string]map[string]string{
		"TALLY_ENV":              {"TALLY_ENV": "staging"},
		"TALLY_ADDR":             {"TALLY_ADDR": "localhost"},
		"DATABASE_URL":           {"DATABASE_URL": "mysql://x"},
		"TALLY_LOG_LEVEL":        {"TALLY_LOG_LEVEL": "loud"},
		"TALLY_LOG_FORMAT":       {"TALLY_LOG_FORMAT": "xml"},
		"TALLY_DB_MAX_CONNS":     {"TALLY_DB_MAX_CONNS": "-1"},
		"TALLY_PLAYGROUND":       {"TALLY_PLAYGROUND": "maybe"},
		"TALLY_SHUTDOWN_TIMEOUT": {"TALLY_SHUTDOWN_TIMEOUT": "0s"},
		"STRIPE_API_BASE":        {"STRIPE_API_BASE": "localhost:12111"},
		"STRIPE_WEBHOOK_SECRET":  {"STRIPE_WEBHOOK_SECRET": "secret"},
		"TALLY_JWT_PUBLIC_KEY":   {"TALLY_JWT_SECRET": "s", "TALLY_JWT_PUBLIC_KEY": "k"},

		"STRIPE_WEBHOOK_API_VERSIONS": {"STRIPE_WEBHOOK_API_VERSIONS": "2023-10-16,latest"},
		"STRIPE_WEBHOOK_TOLERANCE":    {"STRIPE_WEBHOOK_TOLERANCE": "2h"},
	}
	for name, kv := range cases {
		_, err := Load(env(kv))
		if err == nil {
			t.Errorf("%s: %v was accepted", name, kv)
			continue
		}
		if !strings.Contains(err.Error(), name) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error %q should be one line naming the variable", name, err)
		}
	}
}

func TestEveryProblemIsReportedAtOnce(t *testing.T) {
	_, err := Load(env(map[string]string{"TALLY_ADDR": "x", "TALLY_LOG_LEVEL": "loud"}))
	if err == nil || !strings.Contains(err.Error(), "TALLY_ADDR") || !strings.Contains(err.Error(), "TALLY_LOG_LEVEL") {
		t.Fatalf("want both problems in one error, got %v", err)
	}
}

func TestProductionRefusesMissingOrDevelopmentSecrets(t *testing.T) {
	strong := "kR7vQ2xN9pLm4tWz8cYb3sHf6jDg1aEu" // 32 random-looking bytes
	webhook := "whsec_7Hq2Lr9XvN4mTz6Pk1Wc8Yb3Fs5Dj0Ga"
	refused := map[string]map[string]string{
		"no token secret":            {"TALLY_ENV": "production"},
		"a short token secret":       {"TALLY_ENV": "production", "TALLY_JWT_SECRET": "short"},
		"32 zeros":                   {"TALLY_ENV": "production", "TALLY_JWT_SECRET": strings.Repeat("0", 32)},
		"a word repeated to length":  {"TALLY_ENV": "production", "TALLY_JWT_SECRET": strings.Repeat("password", 4)},
		"no webhook secret":          {"TALLY_ENV": "production", "TALLY_JWT_SECRET": strong, "STRIPE_SECRET_KEY": "sk_live_x"},
		"the development secret":     {"TALLY_ENV": "production", "TALLY_JWT_SECRET": strong, "STRIPE_WEBHOOK_SECRET": DevWebhookSecret},
		"an empty webhook secret":    {"TALLY_ENV": "production", "TALLY_JWT_SECRET": strong, "STRIPE_WEBHOOK_SECRET": "whsec_"},
		"a guessable webhook secret": {"TALLY_ENV": "production", "TALLY_JWT_SECRET": strong, "STRIPE_WEBHOOK_SECRET": "whsec_" + strings.Repeat("a", 32)},
		"a weak metrics token":       {"TALLY_ENV": "production", "TALLY_JWT_SECRET": strong, "TALLY_METRICS_TOKEN": "metrics"},
	}
	for name, kv := range refused {
		if _, err := Load(env(kv)); err == nil {
			t.Errorf("production started with %s: %v", name, kv)
		}
	}
	// An empty key after whsec_ is refused in development too: it would make
	// every signature checkable by anyone.
	if _, err := Load(env(map[string]string{"STRIPE_WEBHOOK_SECRET": "whsec_"})); err == nil {
		t.Error("development started with an empty webhook signing key")
	}
	c, err := Load(env(map[string]string{
		"TALLY_ENV": "production", "TALLY_JWT_SECRET": strong,
		"STRIPE_SECRET_KEY": "sk_live_x", "STRIPE_WEBHOOK_SECRET": webhook,
	}))
	if err != nil {
		t.Fatalf("production with real secrets: %v", err)
	}
	if c.Playground || c.Introspection || c.SeedDemoData {
		t.Fatal("production must not enable the playground, introspection or demo data by default")
	}
}

func TestStripeWebhookPolicyDefaults(t *testing.T) {
	c, err := Load(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.StripeWebhookAPIVersions, ",") != "2023-10-16" || c.StripeWebhookTolerance != 300*time.Second {
		t.Fatalf("webhook API versions %v, tolerance %v", c.StripeWebhookAPIVersions, c.StripeWebhookTolerance)
	}
	// Upgrading stripe-go changes the shape it decodes; the default must
	// move with it, deliberately.
	if DefaultStripeAPIVersion != stripe.APIVersion {
		t.Fatalf("DefaultStripeAPIVersion %s, but stripe-go decodes %s", DefaultStripeAPIVersion, stripe.APIVersion)
	}
}

func TestStripeWebhookPolicyIsRead(t *testing.T) {
	c, err := Load(env(map[string]string{
		"STRIPE_WEBHOOK_API_VERSIONS": " 2023-10-16, 2024-09-30.acacia ,",
		"STRIPE_WEBHOOK_TOLERANCE":    "2m",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.StripeWebhookAPIVersions, ",") != "2023-10-16,2024-09-30.acacia" || c.StripeWebhookTolerance != 2*time.Minute {
		t.Fatalf("webhook API versions %v, tolerance %v", c.StripeWebhookAPIVersions, c.StripeWebhookTolerance)
	}
}

func TestStripeWebhookPolicyRefusesNonsense(t *testing.T) {
	refused := map[string][]string{
		"STRIPE_WEBHOOK_API_VERSIONS": {"latest", "2023-16-10", "2023-10-16.", "2023-10-16,v2", "2023-02-30"},
		"STRIPE_WEBHOOK_TOLERANCE":    {"300", "0s", "-5m", "61m"},
	}
	for name, values := range refused {
		for _, v := range values {
			_, err := Load(env(map[string]string{name: v}))
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Errorf("%s=%q: got %v, want an error naming the variable", name, v, err)
			}
		}
	}
	if _, err := Load(env(map[string]string{"STRIPE_WEBHOOK_TOLERANCE": "1h"})); err != nil {
		t.Errorf("a tolerance of exactly the cap: %v", err)
	}
}

// TestProblemsAreOneLineAndLevelsAreNames: found by FuzzLoad, a URL with a
// newline made a two-line error, and "error+100" was taken as a log level
// that silenced every line.
func TestProblemsAreOneLineAndLevelsAreNames(t *testing.T) {
	_, err := Load(env(map[string]string{"DATABASE_URL": "postgres://u:p@h:1\n2/db"}))
	if err == nil || strings.Contains(err.Error(), "\n") {
		t.Fatalf("a URL with a newline: %q", err)
	}
	for _, level := range []string{"error+100", "info-9223372036854775808", "DEBUG-4", "verbose"} {
		if _, err := Load(env(map[string]string{"TALLY_LOG_LEVEL": level})); err == nil {
			t.Errorf("log level %q was accepted", level)
		}
	}
	if c, err := Load(env(map[string]string{"TALLY_LOG_LEVEL": "WARN"})); err != nil || c.LogLevel != slog.LevelWarn {
		t.Fatalf("WARN: %v, %v", c.LogLevel, err)
	}
}
