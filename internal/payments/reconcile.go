package payments

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/ent/processedevent"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/ledger"
)

// HandledEventTypes are the Stripe events Tally applies: the ones to enable
// on the webhook endpoint.
var HandledEventTypes = []string{
	"checkout.session.completed",
	"checkout.session.async_payment_succeeded",
	"checkout.session.async_payment_failed",
	"checkout.session.expired",
	"charge.refunded",
	"charge.dispute.created",
	"charge.dispute.closed",
	"payment_intent.succeeded",
	"payment_intent.payment_failed",
	"invoice.paid",
	"invoice.payment_failed",
	"customer.subscription.updated",
	"customer.subscription.deleted",
}

// ReplayEvent fetches an event from Stripe and processes it as a delivery
// would: idempotent, so replaying an applied event changes nothing.
func (s *Service) ReplayEvent(ctx context.Context, eventID string) (string, error) {
	if s.stripe == nil {
		return "", errStripeDisabled()
	}
	ev, err := s.stripe.Events.Get(eventID, &stripe.EventParams{Params: stripe.Params{Context: ctx}})
	var se *stripe.Error
	if errors.As(err, &se) && se.HTTPStatusCode == 404 {
		return "", apperr.New(apperr.NotFound, "Stripe has no event %q", eventID)
	}
	if err != nil {
		return "", stripeError("fetching event "+eventID, err)
	}
	payload := ev.LastResponse.RawJSON
	if len(payload) == 0 {
		if payload, err = json.Marshal(ev); err != nil {
			return "", fmt.Errorf("payments: encoding event %s: %w", eventID, err)
		}
	}
	return s.HandleEvent(ctx, ev, payload)
}

// ReconcileOptions bound a reconciliation.
type ReconcileOptions struct {
	// Since is how far back Stripe is read (sessions, events and
	// invoices).
	Since time.Duration
	// Apply repairs what is missing; otherwise it only reports.
	Apply bool
	// RechargeGrace is how long a recharge may be in flight before it is
	// reported (DefaultRechargeGrace when 0).
	RechargeGrace time.Duration
	// Progress, when set, is told what is being done on long runs.
	Progress func(format string, args ...any)
}

// reconcileProgressEvery is how often a long invariant check says how far
// it has got.
const reconcileProgressEvery = 2 * time.Second

// ReconcileReport is what a reconciliation found (and, with Apply, did).
type ReconcileReport struct {
	// Ledger is what Check found: the ledger's and the payments' invariants.
	Ledger ledger.Report
	// StripeChecked is false when no Stripe key is configured.
	StripeChecked   bool
	SessionsChecked int
	// PaidNotGranted are payments whose Checkout Session is paid in Stripe
	// but whose credits Tally has not granted.
	PaidNotGranted []string
	EventsChecked  int
	// Unprocessed are handled events Stripe has that Tally has not applied.
	Unprocessed     []string
	InvoicesChecked int
	// UngrantedInvoices are subscription invoices paid in Stripe whose
	// credits Tally has not granted.
	UngrantedInvoices []UngrantedInvoice
	// StaleRecharges are the recharges in flight for longer than
	// RechargeGrace (with a Stripe key, with what Stripe says of them).
	StaleRecharges []StaleRecharge
	RechargeGrace  time.Duration
	Repaired       int
	Failures       []string
}

// Reconcile checks the ledger's and the payments' invariants (Check), then
// compares Stripe with what Tally applied: paid Checkout Sessions whose
// credits are missing, events of the handled types that were never
// applied (or still wait), paid subscription invoices without their
// grant, and recharges in flight for longer than they
// should be, whose intents may have succeeded unannounced.
// With Apply it processes what is missing through the same path as a
// webhook delivery, so a repair is applied at most once however often
// Reconcile runs.
func (s *Service) Reconcile(ctx context.Context, opts ReconcileOptions) (ReconcileReport, error) {
	progress := opts.Progress
	if progress == nil {
		progress = func(string, ...any) {}
	}
	var r ReconcileReport
	progress("checking the ledger and payment invariants")
	var err error
	reported := time.Now()
	r.Ledger, err = s.ledger.CheckWithProgress(ctx, func(p ledger.Progress) {
		if time.Since(reported) < reconcileProgressEvery {
			return
		}
		reported = time.Now()
		progress("checked %d users, %d transactions, %d payments: %d problems so far",
			p.Users, p.Transactions, p.Payments, p.ProblemCount)
	}, s.Invariants()...)
	if err != nil {
		return r, err
	}
	if s.stripe != nil {
		r.StripeChecked = true
		since := s.now().Add(-opts.Since).Unix()
		if err := s.reconcileSessions(ctx, &r, opts.Apply, since, progress); err != nil {
			return r, err
		}
		if err := s.reconcileEvents(ctx, &r, opts.Apply, since, progress); err != nil {
			return r, err
		}
		if err := s.reconcileInvoices(ctx, &r, opts.Apply, since, progress); err != nil {
			return r, err
		}
	}
	return r, s.reconcileRecharges(ctx, &r, opts, progress)
}

// reconcileSessions finds the Checkout Sessions created since (a Unix time)
// that Stripe says are paid but whose payments Tally has not granted, and
// with apply repairs each as the checkout.session.completed that was missed.
func (s *Service) reconcileSessions(ctx context.Context, r *ReconcileReport, apply bool, since int64,
	progress func(format string, args ...any),
) error {
	progress("reading Checkout Sessions created since %s", time.Unix(since, 0).UTC().Format(time.RFC3339))
	sp := &stripe.CheckoutSessionListParams{CreatedRange: &stripe.RangeQueryParams{GreaterThanOrEqual: since}}
	sp.Context = ctx
	sp.Filters.AddFilter("limit", "", "100")
	it := s.stripe.CheckoutSessions.List(sp)
	for it.Next() {
		sess := it.CheckoutSession()
		r.SessionsChecked++
		if r.SessionsChecked%500 == 0 {
			progress("%d sessions checked", r.SessionsChecked)
		}
		if sess.PaymentStatus != stripe.CheckoutSessionPaymentStatusPaid &&
			sess.PaymentStatus != stripe.CheckoutSessionPaymentStatusNoPaymentRequired {
			continue
		}
		p, err := s.db.Ent.Payment.Query().
			Where(payment.Or(payment.ID(sess.ClientReferenceID), payment.StripeCheckoutSessionID(sess.ID))).
			Only(ctx)
		if ent.IsNotFound(err) {
			continue // not a Tally purchase
		}
		if err != nil {
			return fmt.Errorf("payments: matching session %s: %w", sess.ID, err)
		}
		if granted(p.Status) {
			continue
		}
		r.PaidNotGranted = append(r.PaidNotGranted, p.ID)
		if apply {
			s.repair(ctx, r, "reconcile_"+sess.ID, "checkout.session.completed", sess)
		}
	}
	if err := it.Err(); err != nil {
		return stripeError("listing Checkout Sessions", err)
	}
	return nil
}

// reconcileEvents finds the events of the handled types created since (a
// Unix time) that Tally never applied or that still wait, and with apply
// processes each as its delivery would.
func (s *Service) reconcileEvents(ctx context.Context, r *ReconcileReport, apply bool, since int64,
	progress func(format string, args ...any),
) error {
	progress("reading events created since %s", time.Unix(since, 0).UTC().Format(time.RFC3339))
	ep := &stripe.EventListParams{CreatedRange: &stripe.RangeQueryParams{GreaterThanOrEqual: since}}
	ep.Context = ctx
	ep.Types = stripe.StringSlice(HandledEventTypes)
	ep.Filters.AddFilter("limit", "", "100")
	events := s.stripe.Events.List(ep)
	for events.Next() {
		ev := events.Event()
		r.EventsChecked++
		if r.EventsChecked%500 == 0 {
			progress("%d events checked", r.EventsChecked)
		}
		rec, err := s.db.Ent.ProcessedEvent.Query().Where(processedevent.StripeEventID(ev.ID)).Only(ctx)
		if err != nil && !ent.IsNotFound(err) {
			return fmt.Errorf("payments: reading event %s: %w", ev.ID, err)
		}
		if rec != nil && rec.Outcome != processedevent.OutcomeDeferred {
			continue
		}
		r.Unprocessed = append(r.Unprocessed, ev.ID)
		if apply {
			payload, err := json.Marshal(ev)
			if err != nil {
				return fmt.Errorf("payments: encoding event %s: %w", ev.ID, err)
			}
			if _, err := s.HandleEvent(ctx, ev, payload); err != nil {
				r.Failures = append(r.Failures, fmt.Sprintf("%s: %v", ev.ID, err))
			} else {
				r.Repaired++
			}
		}
	}
	if err := events.Err(); err != nil {
		return stripeError("listing events", err)
	}
	return nil
}

// repair processes a Stripe object as the event that should have announced
// it. The event id is derived from the object, so repeated repairs are one.
func (s *Service) repair(ctx context.Context, r *ReconcileReport, id, typ string, object any) {
	ev, payload, err := s.syntheticEvent(id, typ, object)
	if err == nil {
		_, err = s.HandleEvent(ctx, ev, payload)
	}
	if err != nil {
		r.Failures = append(r.Failures, fmt.Sprintf("%s: %v", id, err))
		return
	}
	r.Repaired++
}
