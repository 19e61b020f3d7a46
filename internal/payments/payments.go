// Package payments is the Stripe side of Tally: Checkout purchases, the
// handling of Stripe events (the payment state machine), refunds, disputes
// and reconciliation. Credits move only through internal/ledger, in the same
// database transaction as the payment's state and the event's record.
package payments

import (
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/internal/batch"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
)

// APIVersion is the Stripe API version Tally is written against.
const APIVersion = stripe.APIVersion // "2023-10-16" for stripe-go v76

// Config configures the Stripe side.
type Config struct {
	// SecretKey is the Stripe API key; empty disables purchases, refunds and
	// replays (webhooks still work).
	SecretKey string
	// APIBase overrides Stripe's API URL (stripe-mock in tests).
	APIBase string
	// Livemode says whether the server works on Stripe's live data (set it
	// to LiveKey(SecretKey)). Events of the other mode are never applied,
	// and payments and customers are recorded in this mode.
	Livemode bool
	// RechargeRetryAfter is how long auto-recharge waits after a declined
	// recharge before it tries again (DefaultRechargeRetryAfter when 0).
	RechargeRetryAfter time.Duration
	// Jobs inserts the jobs that payments cause (recharges, saved cards)
	// in the transaction of their cause; nil writes none.
	Jobs JobInserter
	// Logger receives what the payments' jobs give up (nil: discarded).
	Logger *slog.Logger
}

// DefaultRechargeRetryAfter is the wait after a declined recharge.
const DefaultRechargeRetryAfter = time.Hour

// LiveKey says whether a Stripe API key acts on live data: a live secret
// or restricted key. No key, or a test key, is test mode.
func LiveKey(secretKey string) bool {
	return strings.HasPrefix(secretKey, "sk_live_") || strings.HasPrefix(secretKey, "rk_live_")
}

// Service runs the Stripe side.
type Service struct {
	db     *database.DB
	ledger *ledger.Service
	stripe *client.API // nil without a secret key
	// livemode is the server's mode (Config.Livemode).
	livemode bool
	now      func() time.Time
	// purchases coalesces concurrent Checkout Session events.
	purchases *batch.Batcher[*purchase]
	// rechargeRetryAfter is Config.RechargeRetryAfter.
	rechargeRetryAfter time.Duration
	jobs               JobInserter
	logger             *slog.Logger
}

// ErrStripeDisabled is returned by operations that call Stripe when no
// secret key is configured.
var ErrStripeDisabled = errors.New("payments: Stripe is not configured (set STRIPE_SECRET_KEY)")

// New returns the payments service.
func New(db *database.DB, l *ledger.Service, cfg Config) *Service {
	s := &Service{db: db, ledger: l, livemode: cfg.Livemode, now: time.Now, rechargeRetryAfter: cfg.RechargeRetryAfter,
		jobs: cfg.Jobs, logger: cfg.Logger}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	if s.rechargeRetryAfter <= 0 {
		s.rechargeRetryAfter = DefaultRechargeRetryAfter
	}
	s.purchases = newPurchaseBatcher(s)
	if cfg.SecretKey != "" {
		s.stripe = newStripeClient(cfg)
	}
	return s
}

// packageID is the pack a payment bought: empty for a subscription's
// invoice, which has none.
func packageID(p *ent.Payment) string {
	if p.PackageID == nil {
		return ""
	}
	return *p.PackageID
}
