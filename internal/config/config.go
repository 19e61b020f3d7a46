// Package config reads Tally's configuration from environment variables and
// checks every value at start, so that a mistake is one readable line at
// start-up rather than a surprise under traffic.
package config

import (
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/tally-billing/tally/internal/database"
)

// Environments.
const (
	Development = "development"
	Production  = "production"
)

// DevWebhookSecret signs and verifies Stripe webhooks in development when no
// secret is configured. It is public, so production refuses it.
const DevWebhookSecret = "whsec_tally_development_only_do_not_use_in_production"

// DefaultStripeAPIVersion is the event API version accepted when
// STRIPE_WEBHOOK_API_VERSIONS is not set: the one stripe-go v76 decodes.
const DefaultStripeAPIVersion = "2023-10-16"

// maxWebhookTolerance caps STRIPE_WEBHOOK_TOLERANCE. Stripe signs every
// retry afresh, so the window only has to absorb clock skew and transit; a
// longer one only lengthens how long a captured delivery can be replayed.
const maxWebhookTolerance = time.Hour

// stripeAPIVersion is Stripe's version format: a release date, with a
// release name after a dot since 2024 (2024-09-30.acacia).
var stripeAPIVersion = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}(\.[a-z]+)?$`)

// minSecretLen is the shortest HS256 secret accepted in production (256 bits).
const minSecretLen = 32

// minWebhookKeyLen is the shortest signing key accepted after whsec_ in
// production (Stripe's are 32 characters).
const minWebhookKeyLen = 24

// Config is the whole configuration of a Tally process.
type Config struct {
	Env         string
	Addr        string
	DatabaseURL string
	// DBMaxConns caps the database pool (0: the dialect's default).
	DBMaxConns int
	LogLevel   slog.Level
	LogFormat  string // json or text

	JWTSecret    string
	JWTPublicKey string
	JWTIssuer    string
	JWTAudience  string

	StripeSecretKey      string
	StripeWebhookSecrets []string
	StripeAPIBase        string
	// StripeWebhookAPIVersions are the event API versions the webhook
	// processes; an event rendered in any other version is refused.
	StripeWebhookAPIVersions []string
	// StripeWebhookTolerance is how far a webhook signature's timestamp may
	// be from now, in the past or the future.
	StripeWebhookTolerance time.Duration
	// RechargeRetryAfter is how long auto-recharge waits after a declined
	// recharge before it tries again.
	RechargeRetryAfter time.Duration

	// Playground and Introspection default to on in development only.
	Playground    bool
	Introspection bool
	// SeedDemoData writes the demo credit packs and plans once (development
	// default).
	SeedDemoData bool

	ShutdownTimeout time.Duration
	// SweepInterval is how often expired lots and reservations are swept.
	SweepInterval time.Duration
	// Workers is how many background jobs this process runs at once (the
	// ledger's checks); 0 makes a web-only replica that runs none.
	Workers int
	// CheckInterval is how often the incremental ledger check runs.
	CheckInterval time.Duration
	// AdminQueryTimeout is how long an admin's GraphQL query may run before
	// it is stopped and answered TIMEOUT: at most MaxAdminQueryTimeout,
	// below the server's write timeout, which would cut the connection
	// instead.
	AdminQueryTimeout time.Duration

	// RateLimit is the sustained requests per second allowed to one caller
	// (token subject, or client address when anonymous); 0 disables it.
	// RateBurst is how many may come at once.
	RateLimit float64
	RateBurst int
	// CORSOrigins are the browser origins allowed to call the API.
	CORSOrigins []string

	// MetricsAddr, when set, serves /metrics on a listener of its own (an
	// address the internet does not reach) instead of the API's.
	MetricsAddr string
	// MetricsToken, when set, is the bearer token /metrics requires.
	MetricsToken string

	Outbound Outbound
}

// MetricsOnAPI says whether /metrics is served on the API's address: in
// development, or behind a token. Production without either setting serves
// no metrics there: they name routes, rates and the runtime's state.
func (c Config) MetricsOnAPI() bool {
	return c.MetricsAddr == "" && (c.Env == Development || c.MetricsToken != "")
}

// MaxAdminQueryTimeout leaves an admin query stopped at its limit the time
// to answer TIMEOUT within the server's write timeout of 60 s.
const MaxAdminQueryTimeout = 50 * time.Second

// Source is where settings come from: os.Getenv in production, a map in tests.
type Source func(name string) string

// Load reads the configuration. An invalid value is an error naming the
// variable and what it accepts; every problem found is reported at once.
func Load(env Source) (Config, error) {
	r := reader{env: env}
	c := Config{
		Env:         r.oneOf("TALLY_ENV", Development, Development, Production),
		Addr:        r.addr("TALLY_ADDR", "127.0.0.1:8080"),
		DatabaseURL: r.str("DATABASE_URL", "tally.db"),
		DBMaxConns:  r.intRange("TALLY_DB_MAX_CONNS", 0, 0, 1000),
		LogLevel:    r.level("TALLY_LOG_LEVEL", slog.LevelInfo),
		LogFormat:   r.oneOf("TALLY_LOG_FORMAT", "json", "json", "text"),

		JWTSecret:    r.str("TALLY_JWT_SECRET", ""),
		JWTPublicKey: r.str("TALLY_JWT_PUBLIC_KEY", ""),
		JWTIssuer:    r.str("TALLY_JWT_ISSUER", ""),
		JWTAudience:  r.str("TALLY_JWT_AUDIENCE", ""),

		StripeSecretKey:      r.str("STRIPE_SECRET_KEY", ""),
		StripeWebhookSecrets: r.list("STRIPE_WEBHOOK_SECRET"),
		StripeAPIBase:        r.str("STRIPE_API_BASE", ""),

		StripeWebhookAPIVersions: r.list("STRIPE_WEBHOOK_API_VERSIONS"),
		StripeWebhookTolerance:   r.duration("STRIPE_WEBHOOK_TOLERANCE", 300*time.Second),
		RechargeRetryAfter:       r.duration("TALLY_RECHARGE_RETRY_AFTER", time.Hour),

		ShutdownTimeout:   r.duration("TALLY_SHUTDOWN_TIMEOUT", 20*time.Second),
		SweepInterval:     r.duration("TALLY_SWEEP_INTERVAL", time.Minute),
		Workers:           r.intRange("TALLY_WORKERS", 2*runtime.NumCPU(), 0, 1000),
		CheckInterval:     r.duration("TALLY_CHECK_INTERVAL", time.Minute),
		AdminQueryTimeout: r.duration("TALLY_ADMIN_QUERY_TIMEOUT", 10*time.Second),
		RateLimit:         float64(r.intRange("TALLY_RATE_LIMIT", 100, 0, 1_000_000)),
		RateBurst:         r.intRange("TALLY_RATE_BURST", 200, 1, 1_000_000),
		CORSOrigins:       r.list("TALLY_CORS_ORIGINS"),
		MetricsToken:      r.str("TALLY_METRICS_TOKEN", ""),
	}
	if r.str("TALLY_METRICS_ADDR", "") != "" {
		c.MetricsAddr = r.addr("TALLY_METRICS_ADDR", "")
	}
	dev := c.Env == Development
	if c.AdminQueryTimeout > MaxAdminQueryTimeout {
		r.fail("TALLY_ADMIN_QUERY_TIMEOUT", fmt.Sprintf("at most %s, below the server's write timeout", MaxAdminQueryTimeout))
	}
	c.Playground = r.boolean("TALLY_PLAYGROUND", dev)
	c.Introspection = r.boolean("TALLY_INTROSPECTION", dev)
	c.SeedDemoData = r.boolean("TALLY_SEED_DEMO_DATA", dev)
	c.loadOutbound(&r, dev)

	for _, o := range c.CORSOrigins {
		if o != "*" && !strings.HasPrefix(o, "http://") && !strings.HasPrefix(o, "https://") {
			r.fail("TALLY_CORS_ORIGINS", fmt.Sprintf("%q is not an origin such as https://app.example.com", o))
			break
		}
	}
	if _, err := database.Parse(c.DatabaseURL); err != nil {
		r.fail("DATABASE_URL", err.Error())
	}
	if c.JWTSecret != "" && c.JWTPublicKey != "" {
		r.fail("TALLY_JWT_SECRET and TALLY_JWT_PUBLIC_KEY", "set one, not both")
	}
	c.checkStripe(&r)
	if c.Env == Production {
		c.checkProductionSecrets(&r)
	} else if len(c.StripeWebhookSecrets) == 0 {
		c.StripeWebhookSecrets = []string{DevWebhookSecret}
	}
	if len(r.problems) > 0 {
		return Config{}, &Error{Problems: r.problems}
	}
	return c, nil
}

// checkStripe validates the Stripe settings and fills in the default API
// version.
func (c *Config) checkStripe(r *reader) {
	if c.StripeAPIBase != "" && !strings.HasPrefix(c.StripeAPIBase, "http://") && !strings.HasPrefix(c.StripeAPIBase, "https://") {
		r.fail("STRIPE_API_BASE", "must be an http:// or https:// URL")
	}
	for _, s := range c.StripeWebhookSecrets {
		if !strings.HasPrefix(s, "whsec_") || len(s) == len("whsec_") {
			r.fail("STRIPE_WEBHOOK_SECRET", "each secret must start with whsec_ and have the signing key after it")
			break
		}
	}
	if len(c.StripeWebhookAPIVersions) == 0 {
		c.StripeWebhookAPIVersions = []string{DefaultStripeAPIVersion}
	}
	for _, v := range c.StripeWebhookAPIVersions {
		if !validAPIVersion(v) {
			r.fail("STRIPE_WEBHOOK_API_VERSIONS", fmt.Sprintf("%q is not a Stripe API version such as %s", v, DefaultStripeAPIVersion))
			break
		}
	}
	if c.StripeWebhookTolerance > maxWebhookTolerance {
		r.fail("STRIPE_WEBHOOK_TOLERANCE", fmt.Sprintf("at most %s: a longer window only lengthens replays", maxWebhookTolerance))
	}
}

// checkProductionSecrets refuses to run production on missing or
// development secrets: a guessable token secret would let anyone mint admin
// tokens, and a public webhook secret would let anyone post payments.
func (c *Config) checkProductionSecrets(r *reader) {
	switch {
	case c.JWTSecret == "" && c.JWTPublicKey == "":
		r.fail("TALLY_JWT_SECRET", "production needs TALLY_JWT_SECRET (at least 32 bytes) or TALLY_JWT_PUBLIC_KEY")
	case c.JWTSecret != "":
		if why := weakSecret(c.JWTSecret, minSecretLen); why != "" {
			r.fail("TALLY_JWT_SECRET", why+" (generate one with: openssl rand -base64 32)")
		}
	}
	if c.StripeSecretKey != "" && len(c.StripeWebhookSecrets) == 0 {
		r.fail("STRIPE_WEBHOOK_SECRET", "production with STRIPE_SECRET_KEY needs the webhook signing secret")
	}
	for _, s := range c.StripeWebhookSecrets {
		if s == DevWebhookSecret {
			r.fail("STRIPE_WEBHOOK_SECRET", "the development secret is public and refused in production")
		} else if why := weakSecret(strings.TrimPrefix(s, "whsec_"), minWebhookKeyLen); why != "" {
			r.fail("STRIPE_WEBHOOK_SECRET", why+" after whsec_ (copy the endpoint's signing secret from Stripe)")
		}
	}
	if c.MetricsToken != "" {
		if why := weakSecret(c.MetricsToken, minSecretLen); why != "" {
			r.fail("TALLY_METRICS_TOKEN", why)
		}
	}
}

// validAPIVersion checks the shape and the date, so that a typo such as
// 2023-16-10 is caught at start rather than refusing every event.
func validAPIVersion(v string) bool {
	if !stripeAPIVersion.MatchString(v) {
		return false
	}
	_, err := time.Parse(time.DateOnly, v[:len(time.DateOnly)])
	return err == nil
}

// Error lists every invalid setting found, so that a caller that read a
// setting from elsewhere (a command-line flag) can name it as the user did.
type Error struct{ Problems []Problem }

// Problem is one invalid setting: the variable's name and what is wrong.
type Problem struct{ Name, Why string }

func (e *Error) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.Name + ": " + p.Why
	}
	return "invalid configuration: " + strings.Join(parts, "; ")
}

type reader struct {
	env      Source
	problems []Problem
}

// fail records a problem. Control characters in it (a newline quoted from
// a value, as pgx quotes a URL it cannot parse) are escaped, so that every
// problem stays on the one line the operator reads.
func (r *reader) fail(name, why string) {
	why = strings.Map(func(c rune) rune {
		if unicode.IsControl(c) {
			return '?'
		}
		return c
	}, why)
	r.problems = append(r.problems, Problem{Name: name, Why: why})
}

func (r *reader) str(name, def string) string {
	if v := strings.TrimSpace(r.env(name)); v != "" {
		return v
	}
	return def
}

func (r *reader) list(name string) []string {
	var out []string
	for _, part := range strings.Split(r.env(name), ",") {
		if p := strings.TrimSpace(part); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func (r *reader) oneOf(name, def string, allowed ...string) string {
	v := strings.ToLower(r.str(name, def))
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	r.fail(name, fmt.Sprintf("unknown value %q (use %s)", v, strings.Join(allowed, " or ")))
	return def
}

func (r *reader) addr(name, def string) string {
	v := r.str(name, def)
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		r.fail(name, fmt.Sprintf("%q is not host:port (for example 127.0.0.1:8080 or :8080)", v))
		return def
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		r.fail(name, fmt.Sprintf("port %q is not a number from 0 to 65535", port))
		return def
	}
	return v
}

func (r *reader) intRange(name string, def, lo, hi int) int {
	raw := r.str(name, "")
	if raw == "" {
		return def
	}
	v, err := strconv.Atoi(raw)
	if err != nil || v < lo || v > hi {
		r.fail(name, fmt.Sprintf("%q is not a whole number from %d to %d", raw, lo, hi))
		return def
	}
	return v
}

func (r *reader) boolean(name string, def bool) bool {
	raw := r.str(name, "")
	if raw == "" {
		return def
	}
	v, err := strconv.ParseBool(raw)
	if err != nil {
		r.fail(name, fmt.Sprintf("%q is not true or false", raw))
		return def
	}
	return v
}

func (r *reader) duration(name string, def time.Duration) time.Duration {
	raw := r.str(name, "")
	if raw == "" {
		return def
	}
	v, err := time.ParseDuration(raw)
	if err != nil || v <= 0 {
		r.fail(name, fmt.Sprintf("%q is not a positive duration such as 20s or 1m", raw))
		return def
	}
	return v
}

func (r *reader) level(name string, def slog.Level) slog.Level {
	raw := r.str(name, "")
	if raw == "" {
		return def
	}
	// Exactly the four names: slog would also take offsets ("error+100"
	// silences every line, and one past int64 wraps to debug).
	levels := map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError}
	l, ok := levels[strings.ToLower(raw)]
	if !ok {
		r.fail(name, fmt.Sprintf("unknown level %q (use debug, info, warn or error)", raw))
		return def
	}
	return l
}
