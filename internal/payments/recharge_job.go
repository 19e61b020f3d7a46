package payments

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/riverqueue/river"
	"github.com/stripe/stripe-go/v76"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/autorecharge"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/internal/jobs"
	"github.com/tally-billing/tally/internal/ledger"
)

// RechargeQueue is the River queue of recharges: they wait on Stripe, and
// never behind a long check or a slow outbound endpoint.
const RechargeQueue = "recharges"

// rechargeAttempts bounds the job's tries at a Stripe that cannot be
// reached. River's backoff (attempt⁴ seconds) puts the last about 11 hours
// after the first: well inside the 24 hours for which Stripe answers a
// repeated idempotency key with its first answer.
const rechargeAttempts = 11

// rechargeRef is the metadata key of a recharge's intent that names its
// payment.
const rechargeRef = "tally_payment_id"

// RechargeArgs is the job that charges one RECHARGE payment. It is
// idempotent: a payment no longer PENDING is left alone, and every try
// sends Stripe the same idempotency key (tally-recharge-<payment id>), so
// a job run twice (its process died after Stripe answered) charges once.
type RechargeArgs struct {
	PaymentID string `json:"payment_id"`
	// The card charged, as saved when the recharge started: every try
	// sends the same parameters with its idempotency key, whatever card
	// is saved meanwhile (Stripe refuses a key reused with others).
	Customer      string `json:"customer"`
	PaymentMethod string `json:"payment_method"`
}

// Kind names the job in River's table.
func (RechargeArgs) Kind() string { return "recharge" }

// InsertOpts: one job per payment while it waits or runs.
func (RechargeArgs) InsertOpts() river.InsertOpts {
	unique := river.UniqueOpts{ByArgs: true, ByState: jobs.UniqueWhileLive.ByState}
	return river.InsertOpts{Queue: RechargeQueue, MaxAttempts: rechargeAttempts, UniqueOpts: unique}
}

// RechargeQueueConfig is the recharges' queue.
func RechargeQueueConfig(workers int) river.QueueConfig {
	return river.QueueConfig{MaxWorkers: max(workers, 1)}
}

type rechargeWorker struct {
	river.WorkerDefaults[RechargeArgs]
	s *Service
}

// RegisterJobs adds the workers of the payments' jobs.
func (s *Service) RegisterJobs(w *river.Workers) {
	river.AddWorker(w, &rechargeWorker{s: s})
	river.AddWorker(w, &rechargeSweepWorker{s: s})
	river.AddWorker(w, &saveCardWorker{s: s})
}

// Work charges the payment off-session and applies Stripe's answer. An
// answer that says nothing of the outcome (no answer, a 5xx, a 409 of a
// concurrent request with the key) is retried by River, with the same
// idempotency key. After the last try the payment stays PENDING, its
// slot held: whether the card was charged is still unknown, and failing
// it would let another recharge charge the card again. tally reconcile
// finds it and asks Stripe; its payment_intent events settle it too.
func (w *rechargeWorker) Work(ctx context.Context, job *river.Job[RechargeArgs]) error {
	s := w.s
	p, err := s.db.Ent.Payment.Get(ctx, job.Args.PaymentID)
	if ent.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("payments: reading recharge %s: %w", job.Args.PaymentID, err)
	}
	if p.Kind != payment.KindRECHARGE || p.Status != payment.StatusPending {
		return nil
	}
	a, err := s.db.Ent.AutoRecharge.Query().Where(autorecharge.UserID(p.UserID)).Only(ctx)
	if err != nil {
		return fmt.Errorf("payments: reading the auto-recharge of %s: %w", p.UserID, err)
	}
	if s.stripe == nil {
		// Without a Stripe key (development) the recharge waits for its
		// payment_intent events, which `tally simulate recharge` posts.
		return nil
	}
	var pi *stripe.PaymentIntent
	switch {
	case a.Enabled:
		pi, err = s.chargeOffSession(ctx, p, job.Args, job.Attempt > 1)
	case job.Attempt > 1:
		// Turned off, but an earlier try may have charged: its intent,
		// if there is one, decides.
		if pi, err = s.findRechargeIntent(ctx, p, job.Args.Customer); err == nil && pi == nil {
			return s.turnedOff(ctx, p)
		}
	default:
		return s.turnedOff(ctx, p)
	}
	out := classifyCharge(pi, err)
	switch out.kind {
	case chargeUnknown:
		if job.Attempt >= rechargeAttempts {
			s.noteUnknown(ctx, p)
		}
		return fmt.Errorf("payments: charging recharge %s (tried again with the same idempotency key): %w", p.ID, err)
	case chargeProcessing:
		// The payment_intent.succeeded or payment_failed event decides.
		return s.db.Ent.Payment.Update().Where(payment.ID(p.ID), payment.StripePaymentIntentIDIsNil()).
			SetStripePaymentIntentID(pi.ID).Exec(ctx)
	}
	return s.inTx(ctx, p, func(ctx context.Context, t *ledger.Tx, p *ent.Payment) (decision, error) {
		switch out.kind {
		case chargeSucceeded:
			return s.rechargePaid(ctx, t, p, out.intent)
		case chargeActionRequired:
			return s.rechargeNeedsAction(ctx, t, p, out.intent)
		default:
			return s.rechargeFailed(ctx, t, p, out.intentID(), out.reason)
		}
	})
}

// turnedOff gives up a recharge whose auto-recharge was turned off before
// any try charged it: nobody wants it now.
func (s *Service) turnedOff(ctx context.Context, p *ent.Payment) error {
	return s.inTx(ctx, p, func(ctx context.Context, t *ledger.Tx, p *ent.Payment) (decision, error) {
		return decision{}, s.giveUp(ctx, t, p.ID, payment.StatusPending)
	})
}

// noteUnknown tells admins and the user why a recharge stays in flight
// after its last try. Best effort: the payment's state is what matters.
func (s *Service) noteUnknown(ctx context.Context, p *ent.Payment) {
	const problem = "Stripe could not be reached: the recharge waits for Stripe's answer (tally reconcile asks)"
	_ = s.db.Ent.AutoRecharge.Update().
		Where(autorecharge.UserID(p.UserID), autorecharge.InFlightPaymentID(p.ID)).
		SetLastError(problem).Exec(ctx)
}

// inTx applies an outcome to the payment in one transaction, under its
// user's lock, with the payment read again under it.
func (s *Service) inTx(ctx context.Context, p *ent.Payment, apply func(context.Context, *ledger.Tx, *ent.Payment) (decision, error)) error {
	return s.ledger.Within(ctx, func(ctx context.Context, t *ledger.Tx) error {
		if _, err := t.LockUser(ctx, p.UserID); err != nil {
			return err
		}
		locked, err := t.Ent().Payment.Get(ctx, p.ID)
		if err != nil {
			return fmt.Errorf("payments: reading recharge %s: %w", p.ID, err)
		}
		_, err = apply(ctx, t, locked)
		return err
	})
}

// chargeOffSession asks Stripe to charge the saved card. A retry first
// looks for the intent an earlier try made, whose answer was lost: past
// Stripe's 24 hours the idempotency key alone would not find it.
func (s *Service) chargeOffSession(ctx context.Context, p *ent.Payment, card RechargeArgs, retry bool) (*stripe.PaymentIntent, error) {
	if retry {
		if pi, err := s.findRechargeIntent(ctx, p, card.Customer); pi != nil || err != nil {
			return pi, err
		}
	}
	params := &stripe.PaymentIntentParams{
		Amount:        stripe.Int64(p.Amount),
		Currency:      stripe.String(p.Currency),
		Customer:      stripe.String(card.Customer),
		PaymentMethod: stripe.String(card.PaymentMethod),
		OffSession:    stripe.Bool(true),
		Confirm:       stripe.Bool(true),
		Metadata:      map[string]string{rechargeRef: p.ID, "user_id": p.UserID, "package_id": packageID(p)},
	}
	params.Context = ctx
	params.SetIdempotencyKey("tally-recharge-" + p.ID)
	return s.stripe.PaymentIntents.New(params)
}

// findRechargeIntent is the customer's intent for p made by an earlier
// try, nil if there is none.
func (s *Service) findRechargeIntent(ctx context.Context, p *ent.Payment, customer string) (*stripe.PaymentIntent, error) {
	params := &stripe.PaymentIntentListParams{
		Customer:     stripe.String(customer),
		CreatedRange: &stripe.RangeQueryParams{GreaterThanOrEqual: p.CreatedAt.Add(-5 * time.Minute).Unix()},
	}
	params.Context = ctx
	params.Limit = stripe.Int64(100)
	it := s.stripe.PaymentIntents.List(params)
	for it.Next() {
		if pi := it.PaymentIntent(); pi.Metadata[rechargeRef] == p.ID {
			return pi, nil
		}
	}
	return nil, it.Err()
}

// chargeKind is what an off-session charge came to.
type chargeKind int

const (
	chargeUnknown chargeKind = iota // no answer that says: try again
	chargeSucceeded
	chargeProcessing // the intent's events will say
	chargeActionRequired
	chargeDeclined
)

type chargeOutcome struct {
	kind   chargeKind
	intent *stripe.PaymentIntent
	reason string
}

func (o chargeOutcome) intentID() string {
	if o.intent == nil {
		return ""
	}
	return o.intent.ID
}

// classifyCharge reads Stripe's answer to the off-session charge.
func classifyCharge(pi *stripe.PaymentIntent, err error) chargeOutcome {
	if err == nil {
		switch pi.Status {
		case stripe.PaymentIntentStatusSucceeded:
			return chargeOutcome{kind: chargeSucceeded, intent: pi}
		case stripe.PaymentIntentStatusProcessing:
			return chargeOutcome{kind: chargeProcessing, intent: pi}
		case stripe.PaymentIntentStatusRequiresAction, stripe.PaymentIntentStatusRequiresConfirmation:
			return chargeOutcome{kind: chargeActionRequired, intent: pi}
		}
		reason := fmt.Sprintf("the card was not charged (payment intent %s)", pi.Status)
		if pi.LastPaymentError != nil && pi.LastPaymentError.Msg != "" {
			reason = "the card was declined: " + pi.LastPaymentError.Msg
		}
		return chargeOutcome{kind: chargeDeclined, intent: pi, reason: reason}
	}
	var se *stripe.Error
	if !errors.As(err, &se) {
		return chargeOutcome{kind: chargeUnknown}
	}
	switch {
	case se.Type == stripe.ErrorTypeCard && se.Code == stripe.ErrorCodeAuthenticationRequired:
		return chargeOutcome{kind: chargeActionRequired, intent: se.PaymentIntent}
	case se.Type == stripe.ErrorTypeCard:
		reason := "the card was declined"
		if se.Msg != "" {
			reason += ": " + se.Msg
		}
		return chargeOutcome{kind: chargeDeclined, intent: se.PaymentIntent, reason: reason}
	case se.HTTPStatusCode >= 500, se.HTTPStatusCode == 0, se.HTTPStatusCode == http.StatusConflict,
		se.Type == stripe.ErrorTypeIdempotency,
		se.HTTPStatusCode == http.StatusTooManyRequests, se.Code == stripe.ErrorCodeLockTimeout,
		se.HTTPStatusCode == http.StatusUnauthorized, se.HTTPStatusCode == http.StatusForbidden:
		return chargeOutcome{kind: chargeUnknown}
	}
	// Refused as a request (a detached card, a deleted customer): no
	// retry of the same request will do better.
	return chargeOutcome{kind: chargeDeclined, intent: se.PaymentIntent, reason: "Stripe refused the charge: " + se.Msg}
}
