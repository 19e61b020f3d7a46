package payments

import (
	"context"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/stripe/stripe-go/v76"
)

// QueuedPurchases is how many Checkout Session events wait for a batch.
func QueuedPurchases(s *Service) int { return s.purchases.Queued(func(*purchase) bool { return true }) }

// PurchaseBatchesRunning is how many purchase batches are running.
func PurchaseBatchesRunning(s *Service) int { return s.purchases.Running() }

// MaxPurchaseBatchesInFlight is how many purchase batches may run at once.
const MaxPurchaseBatchesInFlight = maxPurchaseBatchesInFlight

// RunRecharge runs the recharge job of a payment as River's attempt n.
// The card is the one saved now, as the trigger would have sent it.
func RunRecharge(ctx context.Context, s *Service, paymentID string, attempt int) error {
	args := RechargeArgs{PaymentID: paymentID}
	if p, err := s.db.Ent.Payment.Get(ctx, paymentID); err == nil {
		if a, err := autoRechargeOf(ctx, s.db.Ent, p.UserID); err == nil && a != nil {
			args.Customer, args.PaymentMethod = a.StripeCustomerID, a.StripePaymentMethodID
		}
	}
	w := &rechargeWorker{s: s}
	return w.Work(ctx, &river.Job[RechargeArgs]{JobRow: &rivertype.JobRow{Attempt: attempt}, Args: args})
}

// RechargeAttempts is how often the recharge job tries.
const RechargeAttempts = rechargeAttempts

// WorkSaveCard runs the save_card job once, as River would on its first
// attempt.
func WorkSaveCard(ctx context.Context, s *Service, args SaveCardArgs) error {
	job := &river.Job[SaveCardArgs]{JobRow: &rivertype.JobRow{Attempt: 1, MaxAttempts: saveCardAttempts}, Args: args}
	return (&saveCardWorker{s: s}).Work(ctx, job)
}

// HandleAlone decides an event on its own, as a Checkout Session event
// is when its batch cannot take it.
func HandleAlone(ctx context.Context, s *Service, ev *stripe.Event, payload []byte) (string, error) {
	return s.handleUnbatched(ctx, ev, payload, s.now().UTC(), nil)
}

// SetClock makes the service read the time from now.
func SetClock(s *Service, now func() time.Time) { s.now = now }
