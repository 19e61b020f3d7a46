package payments

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/autorecharge"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/ent/processedevent"
)

// DefaultRechargeGrace is how long a recharge may be in flight before
// reconcile reports it: its job settles it within seconds, or within
// minutes while Stripe cannot be reached.
const DefaultRechargeGrace = 15 * time.Minute

// rechargePage is how many in-flight recharges are read at a time.
const rechargePage = 500

// StaleRecharge is a recharge in flight (PENDING or AWAITING_PAYMENT) for
// longer than the grace, with what Stripe says of its PaymentIntent.
type StaleRecharge struct {
	PaymentID string
	Status    payment.Status
	CreatedAt time.Time
	// Intent is its PaymentIntent found in Stripe and IntentStatus that
	// intent's status; both empty when Stripe has none or was not asked.
	Intent, IntentStatus string
	// Mismatch says why the intent found by the recharge's intent id is
	// not the recharge's (its metadata names another payment).
	Mismatch string
	// Paid says the intent succeeded while Tally has not granted the pack.
	Paid bool
	// Repaired says --apply granted it, as payment_intent.succeeded would.
	Repaired bool
}

// Stuck says the recharge waits for nothing that will come by itself: it
// is PENDING, which its job settles, and Stripe does not say it was paid;
// or its intent is not its own. (An AWAITING_PAYMENT recharge waits for
// its customer, possibly for days.)
func (r StaleRecharge) Stuck() bool {
	return r.Mismatch != "" || (r.Status == payment.StatusPending && !r.Paid)
}

// reconcileRecharges reports the recharges in flight for longer than the
// grace and, with a Stripe key, looks their intents up: by the intent id
// when the payment has one, else among the customer's intents made since
// the payment (metadata tally_payment_id). With apply, a succeeded intent
// is processed as its payment_intent.succeeded would have been. Runs after
// the events are reconciled, so that a missed event repaired there is not
// repaired again here.
func (s *Service) reconcileRecharges(ctx context.Context, r *ReconcileReport, opts ReconcileOptions,
	progress func(format string, args ...any),
) error {
	grace := opts.RechargeGrace
	if grace <= 0 {
		grace = DefaultRechargeGrace
	}
	r.RechargeGrace = grace
	cutoff := s.now().Add(-grace)
	progress("reading recharges in flight since before %s", cutoff.UTC().Format(time.RFC3339))
	after := ""
	for {
		ps, err := s.db.Ent.Payment.Query().
			Where(payment.KindEQ(payment.KindRECHARGE),
				payment.StatusIn(payment.StatusPending, payment.StatusAwaitingPayment),
				payment.CreatedAtLT(cutoff), payment.IDGT(after)).
			Order(ent.Asc(payment.FieldID)).Limit(rechargePage).All(ctx)
		if err != nil {
			return fmt.Errorf("payments: reading the recharges in flight: %w", err)
		}
		for _, p := range ps {
			stale := StaleRecharge{PaymentID: p.ID, Status: p.Status, CreatedAt: p.CreatedAt}
			if s.stripe != nil {
				if err := s.reconcileRecharge(ctx, r, p, &stale, opts.Apply); err != nil {
					return err
				}
			}
			r.StaleRecharges = append(r.StaleRecharges, stale)
		}
		if len(ps) < rechargePage {
			return nil
		}
		after = ps[len(ps)-1].ID
	}
}

// reconcileRecharge looks one stale recharge's intent up and, with apply,
// grants a paid one.
func (s *Service) reconcileRecharge(ctx context.Context, r *ReconcileReport, p *ent.Payment, stale *StaleRecharge, apply bool) error {
	pi, err := s.rechargeIntentOf(ctx, p)
	if err != nil {
		return err
	}
	if pi == nil {
		return nil
	}
	stale.Intent, stale.IntentStatus = pi.ID, string(pi.Status)
	if pi.Metadata[rechargeRef] != p.ID {
		stale.Mismatch = fmt.Sprintf("its payment intent %s names payment %q in its metadata", pi.ID, pi.Metadata[rechargeRef])
		return nil
	}
	if pi.Status != stripe.PaymentIntentStatusSucceeded {
		return nil
	}
	stale.Paid = true
	if !apply {
		return nil
	}
	stale.Repaired = s.repairRecharge(ctx, r, p, pi)
	return nil
}

// rechargeIntentOf is the recharge's intent in Stripe, nil when there is
// none (yet).
func (s *Service) rechargeIntentOf(ctx context.Context, p *ent.Payment) (*stripe.PaymentIntent, error) {
	if p.StripePaymentIntentID != nil {
		params := &stripe.PaymentIntentParams{}
		params.Context = ctx
		pi, err := s.stripe.PaymentIntents.Get(*p.StripePaymentIntentID, params)
		var se *stripe.Error
		if errors.As(err, &se) && se.HTTPStatusCode == 404 {
			return nil, nil
		}
		if err != nil {
			return nil, stripeError("fetching payment intent "+*p.StripePaymentIntentID, err)
		}
		return pi, nil
	}
	a, err := s.db.Ent.AutoRecharge.Query().Where(autorecharge.UserID(p.UserID)).Only(ctx)
	if ent.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("payments: reading the auto-recharge of %s: %w", p.UserID, err)
	}
	if a.StripeCustomerID == "" {
		return nil, nil
	}
	pi, err := s.findRechargeIntent(ctx, p, a.StripeCustomerID)
	if err != nil {
		return nil, stripeError("listing the payment intents of "+a.StripeCustomerID, err)
	}
	return pi, nil
}

// repairRecharge processes a succeeded intent as the
// payment_intent.succeeded that was missed (an id derived from the intent:
// repeated repairs are one event) and says whether the pack is now
// granted. Whatever the webhook's path refused (an amount that is not the
// recharge's, say) is a failure with its reason.
func (s *Service) repairRecharge(ctx context.Context, r *ReconcileReport, p *ent.Payment, pi *stripe.PaymentIntent) bool {
	id := "reconcile_" + pi.ID
	ev, payload, err := s.syntheticEvent(id, "payment_intent.succeeded", pi)
	if err == nil {
		_, err = s.HandleEvent(ctx, ev, payload)
	}
	if err == nil {
		var now *ent.Payment
		if now, err = s.db.Ent.Payment.Get(ctx, p.ID); err == nil && !granted(now.Status) {
			err = fmt.Errorf("recharge %s is still %s%s", p.ID, now.Status, s.refusal(ctx, id))
		}
	}
	if err != nil {
		r.Failures = append(r.Failures, fmt.Sprintf("%s: %v", id, err))
		return false
	}
	r.Repaired++
	return true
}

// refusal is why the webhook's path did not apply the event, as recorded.
func (s *Service) refusal(ctx context.Context, eventID string) string {
	rec, err := s.db.Ent.ProcessedEvent.Query().Where(processedevent.StripeEventID(eventID)).Only(ctx)
	if err != nil || rec.Error == "" {
		return ""
	}
	return fmt.Sprintf(" (event %s: %s)", rec.Outcome, rec.Error)
}
