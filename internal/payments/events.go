package payments

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v76"
	"go.opentelemetry.io/otel/trace"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/ent/predicate"
	"github.com/tally-billing/tally/ent/processedevent"
	"github.com/tally-billing/tally/internal/ledger"
)

// Outcomes of an event, as the webhook reports them.
const (
	OutcomeApplied   = "applied"
	OutcomeDuplicate = "duplicate"
	OutcomeIgnored   = "ignored"
	OutcomeDeferred  = "deferred"
	OutcomeFailed    = "failed"
)

var webhookActor = ledger.Actor{Kind: ledger.ActorStripe, ID: "webhook"}

// DeferredError says an event cannot be applied yet: its payment has not
// reached the state the event needs (a refund before the payment). The
// webhook answers 5xx, so Stripe delivers it again later.
type DeferredError struct{ Reason string }

func (e *DeferredError) Error() string { return "deferred: " + e.Reason }

// decision is what handling an event decided, recorded with it.
type decision struct {
	outcome processedevent.Outcome
	reason  string // why it was not applied, for admins
}

func applied() decision { return decision{outcome: processedevent.OutcomeApplied} }

func ignored(format string, args ...any) decision {
	return decision{outcome: processedevent.OutcomeIgnored, reason: fmt.Sprintf(format, args...)}
}

func failed(format string, args ...any) decision {
	return decision{outcome: processedevent.OutcomeFailed, reason: fmt.Sprintf(format, args...)}
}

// HandleEvent applies a verified Stripe event at most once. The event's
// record (ProcessedEvent) is written in the same database transaction as its
// effect, under the lock of the payment's user, so a redelivery, even a
// concurrent one, finds the record and does nothing. It returns nil for an
// event applied, already seen, ignored or refused as not matching (the
// outcome says which); an error when Stripe should deliver it again.
func (s *Service) HandleEvent(ctx context.Context, ev *stripe.Event, payload []byte) (string, error) {
	return s.handle(ctx, ev, payload, nil)
}

// handle is HandleEvent that also runs also, when given, in the event's
// transaction, unless the event was seen before: an admin's audit record
// then lands in the same transaction as the effect it describes.
func (s *Service) handle(ctx context.Context, ev *stripe.Event, payload []byte, also func(context.Context, *ent.Tx) error) (string, error) {
	if ev == nil || ev.ID == "" || ev.Type == "" {
		return "", errors.New("payments: event without id or type")
	}
	if ev.Data == nil { // decided like an event whose object does not decode
		copied := *ev
		copied.Data = &stripe.EventData{}
		ev = &copied
	}
	received := s.now().UTC()
	if also == nil && s.otherMode(ev) == nil && strings.HasPrefix(string(ev.Type), "checkout.session.") {
		// The common case by far, and what arrives in bursts: concurrent
		// Checkout Session events share a transaction (see applyPurchases),
		// which also finds their payments and records.
		var sess stripe.CheckoutSession
		// A setup-mode session is not a purchase: it saves a card (see
		// matchCardSetup), alone; nor is a subscription-mode one, which
		// starts a subscription (see matchSubscription).
		if err := json.Unmarshal(ev.Data.Raw, &sess); err == nil && sess.Mode != stripe.CheckoutSessionModeSetup &&
			sess.Mode != stripe.CheckoutSessionModeSubscription {
			c := &purchase{ev: ev, payload: payload, sess: &sess, ref: sessionPaymentRef(&sess), received: received,
				parent: trace.SpanContextFromContext(ctx)}
			s.purchases.Do(c)
			return c.outcome, c.err
		}
	}
	return s.handleUnbatched(ctx, ev, payload, received, also)
}

// handleUnbatched decides an event on its own. A redelivery of an event
// already decided (Stripe retries, and sends duplicates) is answered with
// one read, outside any transaction: a decided event's record never
// changes. Deferred ones are tried again. For a new event the read stands
// in for the read under the lock on the first attempt (see applyLocked).
func (s *Service) handleUnbatched(ctx context.Context, ev *stripe.Event, payload []byte, received time.Time,
	also func(context.Context, *ent.Tx) error,
) (string, error) {
	seen, err := eventRecord(ctx, s.db.Ent.ProcessedEvent, ev.ID)
	if err != nil {
		return "", err
	}
	if seen != nil && seen.Outcome != processedevent.OutcomeDeferred {
		return OutcomeDuplicate, nil
	}
	var target matched
	if d := s.otherMode(ev); d != nil {
		// Not even matched to a payment: nothing of the event is used.
		target.mismatch = d
	} else {
		target, err = s.match(ctx, ev)
	}
	var early *DeferredError
	if errors.As(err, &early) {
		s.recordDeferred(ctx, ev, payload, nil, early.Reason, received)
		return OutcomeDeferred, err
	}
	if err != nil {
		return "", err
	}
	var outcome string
	attempts := 0
	err = s.ledger.Within(ctx, func(ctx context.Context, t *ledger.Tx) error {
		attempts++
		var err error
		outcome, err = s.applyLocked(ctx, t, ev, payload, received, target, seen, attempts, also)
		return err
	})
	var deferred *DeferredError
	if errors.As(err, &deferred) {
		s.recordDeferred(ctx, ev, payload, target.payment, deferred.Reason, received)
		return OutcomeDeferred, err
	}
	if err != nil {
		return "", err
	}
	return outcome, nil
}

// applyLocked is one attempt of handleUnbatched's transaction: it locks
// the payment's user, decides the event and records it, and runs also.
// seen is the event's record as read before the transaction.
func (s *Service) applyLocked(ctx context.Context, t *ledger.Tx, ev *stripe.Event, payload []byte, received time.Time,
	target matched, seen *ent.ProcessedEvent, attempts int, also func(context.Context, *ent.Tx) error,
) (string, error) {
	var p *ent.Payment
	switch {
	case target.payment != nil:
		if _, err := t.LockUser(ctx, target.payment.UserID); err != nil {
			return "", err
		}
		// Read again under the lock: another event may have moved it.
		var err error
		if p, err = t.Ent().Payment.Get(ctx, target.payment.ID); err != nil {
			return "", fmt.Errorf("payments: reading payment %s: %w", target.payment.ID, err)
		}
	case target.cardSetup != nil:
		// Ordered with the user's other card changes (SaveCard).
		if _, err := t.LockUser(ctx, target.cardSetup.userID); err != nil {
			return "", err
		}
	case target.subscription != nil:
		// A subscription's events are ordered with each other and with
		// the user's movements (a renewal grants, and closes a period).
		if _, err := t.LockUser(ctx, target.subscription.UserID); err != nil {
			return "", err
		}
		var err error
		if target.subscription, err = t.Ent().CreditSubscription.Get(ctx, target.subscription.ID); err != nil {
			return "", fmt.Errorf("payments: reading subscription %s: %w", target.subscription.ID, err)
		}
	}
	// The first attempt trusts the read made before the transaction,
	// unless the payment moved since (most often a concurrent delivery
	// of this very event, applied while this one waited for the lock).
	// A record written since all the same makes record's insert, or its
	// guarded update of a deferred record, fail and the transaction run
	// again, and that attempt reads the record under the lock.
	prior := seen
	if attempts > 1 || target.subscription != nil || (p != nil && !p.UpdatedAt.Equal(target.payment.UpdatedAt)) {
		var err error
		if prior, err = eventRecord(ctx, t.Ent().ProcessedEvent, ev.ID); err != nil {
			return "", err
		}
	}
	if prior != nil && prior.Outcome != processedevent.OutcomeDeferred {
		return OutcomeDuplicate, nil
	}
	d := target.mismatch
	if d == nil {
		var err error
		switch {
		case target.cardSetup != nil:
			d, err = s.applyCardSetup(ctx, t, target.cardSetup)
		case target.subscription != nil:
			d, p, err = s.applySubscription(ctx, t, ev, target.subscription)
		default:
			d, err = s.apply(ctx, t, ev, p)
		}
		if err != nil {
			return "", err
		}
	}
	if err := s.record(ctx, t.Ent(), prior, ev, payload, p, *d, received); err != nil {
		return "", err
	}
	if also != nil {
		if err := also(ctx, t.Ent()); err != nil {
			return "", err
		}
	}
	return strings.ToLower(string(d.outcome)), nil
}

// otherMode refuses an event of the other Stripe mode than the server's:
// a live event on a test server (or the reverse) comes from an endpoint or
// a key set up for the other mode, or is forged, and applying it would
// grant credits for money that was never charged (or not for the real
// one). Refused, not deferred: no redelivery will make it right.
func (s *Service) otherMode(ev *stripe.Event) *decision {
	if ev.Livemode == s.livemode {
		return nil
	}
	d := failed("event livemode is %t but this server runs in %s mode", ev.Livemode, modeName(s.livemode))
	return &d
}

func modeName(live bool) string {
	if live {
		return "live"
	}
	return "test"
}

// eventRecord reads what deciding an event needs of its record: nil when
// there is none yet.
func eventRecord(ctx context.Context, c *ent.ProcessedEventClient, stripeEventID string) (*ent.ProcessedEvent, error) {
	rec, err := c.Query().Where(processedevent.StripeEventID(stripeEventID)).
		Select(processedevent.FieldID, processedevent.FieldOutcome).
		Only(ctx)
	if ent.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("payments: reading event %s: %w", stripeEventID, err)
	}
	return rec, nil
}

// record writes (or, for an event deferred before, completes) the event's
// record in the transaction of its effect.
func (s *Service) record(ctx context.Context, tx *ent.Tx, prior *ent.ProcessedEvent, ev *stripe.Event, payload []byte,
	p *ent.Payment, d decision, received time.Time,
) error {
	now := s.now().UTC()
	var paymentID *string
	if p != nil {
		paymentID = &p.ID
	}
	if prior != nil {
		// Only a record still deferred is completed: one decided since it
		// was read belongs to another delivery, and the retry reports a
		// duplicate.
		n, err := tx.ProcessedEvent.Update().
			Where(processedevent.ID(prior.ID), processedevent.OutcomeEQ(processedevent.OutcomeDeferred)).
			SetOutcome(d.outcome).
			SetError(d.reason).
			SetNillablePaymentID(paymentID).
			AddAttempts(1).
			SetProcessedAt(now).
			Save(ctx)
		if err != nil {
			return fmt.Errorf("payments: recording event %s: %w", ev.ID, err)
		}
		if n == 0 {
			return fmt.Errorf("payments: event %s decided concurrently: %w", ev.ID, ledger.ErrRetry)
		}
		return nil
	}
	err := recordCreate(tx, ev, payload, paymentID, d, received, now).Exec(ctx)
	if ent.IsConstraintError(err) {
		// The same event, delivered concurrently, was recorded first. Start
		// over: the retry finds that record (or, if it rolled back, none).
		return fmt.Errorf("payments: event %s recorded concurrently: %w", ev.ID, ledger.ErrRetry)
	}
	if err != nil {
		return fmt.Errorf("payments: recording event %s: %w", ev.ID, err)
	}
	return nil
}

// recordCreate is the insert of a decided event's record.
func recordCreate(tx *ent.Tx, ev *stripe.Event, payload []byte, paymentID *string, d decision, received, now time.Time) *ent.ProcessedEventCreate {
	return tx.ProcessedEvent.Create().
		SetStripeEventID(ev.ID).
		SetType(string(ev.Type)).
		SetLivemode(ev.Livemode).
		SetAPIVersion(ev.APIVersion).
		SetOutcome(d.outcome).
		SetError(d.reason).
		SetNillablePaymentID(paymentID).
		SetPayload(payload).
		SetReceivedAt(received).
		SetProcessedAt(now)
}

// recordDeferred notes, outside the rolled-back transaction, that an event
// arrived too early, so that admins see it waiting. Best effort: Stripe's
// redelivery is what makes sure it is applied.
func (s *Service) recordDeferred(ctx context.Context, ev *stripe.Event, payload []byte, p *ent.Payment, reason string, received time.Time) {
	c := s.db.Ent
	prior, err := c.ProcessedEvent.Query().Where(processedevent.StripeEventID(ev.ID)).Only(ctx)
	switch {
	case err == nil && prior.Outcome == processedevent.OutcomeDeferred:
		_ = prior.Update().SetAttempts(prior.Attempts + 1).SetError(reason).Exec(ctx)
	case ent.IsNotFound(err):
		create := c.ProcessedEvent.Create().
			SetStripeEventID(ev.ID).SetType(string(ev.Type)).SetLivemode(ev.Livemode).
			SetAPIVersion(ev.APIVersion).SetOutcome(processedevent.OutcomeDeferred).
			SetError(reason).SetPayload(payload).SetReceivedAt(received)
		if p != nil {
			create.SetPaymentID(p.ID)
		}
		_ = create.Exec(ctx)
	}
}

// matched is the payment an event concerns (or the card setup, for a
// setup-mode Checkout Session), or why none matches.
type matched struct {
	payment      *ent.Payment
	cardSetup    *cardSetup
	subscription *ent.CreditSubscription
	mismatch     *decision
}

// match finds the event's payment: a Checkout Session through its
// client_reference_id (the payment id), charges and disputes through the
// payment intent or the charge.
func (s *Service) match(ctx context.Context, ev *stripe.Event) (matched, error) {
	q := s.db.Ent.Payment.Query()
	switch {
	case strings.HasPrefix(string(ev.Type), "checkout.session."):
		var sess stripe.CheckoutSession
		if err := json.Unmarshal(ev.Data.Raw, &sess); err != nil {
			d := failed("malformed Checkout Session: %v", err)
			return matched{mismatch: &d}, nil
		}
		if sess.Mode == stripe.CheckoutSessionModeSetup {
			return s.matchCardSetup(ctx, ev, &sess)
		}
		if sess.Mode == stripe.CheckoutSessionModeSubscription {
			return s.matchSubscription(ctx, ev)
		}
		q = q.Where(payment.Or(payment.ID(sessionPaymentRef(&sess)), payment.StripeCheckoutSessionID(sess.ID)))
	case ev.Type == "charge.refunded":
		var ch stripe.Charge
		if err := json.Unmarshal(ev.Data.Raw, &ch); err != nil {
			d := failed("malformed Charge: %v", err)
			return matched{mismatch: &d}, nil
		}
		if !namesPayment(ch.PaymentIntent, ch.ID) {
			return matched{mismatch: namesNothing()}, nil
		}
		q = q.Where(byIntentOrCharge(ch.PaymentIntent, ch.ID))
	case strings.HasPrefix(string(ev.Type), "charge.dispute."):
		var dp stripe.Dispute
		if err := json.Unmarshal(ev.Data.Raw, &dp); err != nil {
			d := failed("malformed Dispute: %v", err)
			return matched{mismatch: &d}, nil
		}
		chargeID := ""
		if dp.Charge != nil {
			chargeID = dp.Charge.ID
		}
		if !namesPayment(dp.PaymentIntent, chargeID) {
			return matched{mismatch: namesNothing()}, nil
		}
		q = q.Where(byIntentOrCharge(dp.PaymentIntent, chargeID))
	case ev.Type == "payment_intent.succeeded" || ev.Type == "payment_intent.payment_failed":
		var pi stripe.PaymentIntent
		if err := json.Unmarshal(ev.Data.Raw, &pi); err != nil {
			d := failed("malformed PaymentIntent: %v", err)
			return matched{mismatch: &d}, nil
		}
		// Only recharges are decided by their intent; a Checkout
		// purchase's intent is its session's, whose events decide it.
		ref := pi.Metadata[rechargeRef]
		if ref == "" {
			d := ignored("not a recharge: a Checkout purchase is decided by its session's events")
			return matched{mismatch: &d}, nil
		}
		q = q.Where(payment.ID(ref), payment.KindEQ(payment.KindRECHARGE))
	case ev.Type == "invoice.paid" || ev.Type == "invoice.payment_failed" ||
		ev.Type == "customer.subscription.updated" || ev.Type == "customer.subscription.deleted":
		return s.matchSubscription(ctx, ev)
	default:
		d := ignored("Tally does not handle %s events", ev.Type)
		return matched{mismatch: &d}, nil
	}
	ps, err := q.Limit(2).All(ctx)
	if err != nil {
		return matched{}, fmt.Errorf("payments: matching event %s: %w", ev.ID, err)
	}
	return onePayment(ev, ps)
}

// onePayment is the match of an event to the payments found for it.
func onePayment(ev *stripe.Event, ps []*ent.Payment) (matched, error) {
	switch len(ps) {
	case 0:
		if !strings.HasPrefix(string(ev.Type), "checkout.session.") && !strings.HasPrefix(string(ev.Type), "payment_intent.") {
			// A charge or dispute is matched through the payment intent,
			// which Tally learns when the session completes: an early one
			// waits for it. (A Checkout Session, and a recharge's intent,
			// name their payment themselves, written before Stripe heard
			// of them, so an unknown one is not Tally's.)
			return matched{}, &DeferredError{Reason: "no payment matches this event yet"}
		}
		d := failed("no payment matches this event")
		return matched{mismatch: &d}, nil
	case 1:
		return matched{payment: ps[0]}, nil
	default:
		d := failed("the event matches more than one payment")
		return matched{mismatch: &d}, nil
	}
}

// sessionPaymentRef is the payment id a Checkout Session names: Tally
// creates sessions with client_reference_id set to it (the metadata's
// payment_id is the fallback for sessions made by hand).
func sessionPaymentRef(sess *stripe.CheckoutSession) string {
	if sess.ClientReferenceID != "" {
		return sess.ClientReferenceID
	}
	return sess.Metadata["payment_id"]
}

// namesNothing refuses a charge or dispute that names neither a payment
// intent nor a charge: no payment can ever match it, so waiting (deferring,
// a 5xx) would only have Stripe deliver it for three days.
func namesNothing() *decision {
	d := failed("the event names no payment intent and no charge")
	return &d
}

func namesPayment(pi *stripe.PaymentIntent, chargeID string) bool {
	return (pi != nil && pi.ID != "") || chargeID != ""
}

// byIntentOrCharge matches a payment by its payment intent or its charge;
// with neither known it matches nothing.
func byIntentOrCharge(pi *stripe.PaymentIntent, chargeID string) predicate.Payment {
	var ors []predicate.Payment
	if pi != nil && pi.ID != "" {
		ors = append(ors, payment.StripePaymentIntentID(pi.ID))
	}
	if chargeID != "" {
		ors = append(ors, payment.StripeChargeID(chargeID))
	}
	if len(ors) == 0 {
		return payment.ID("")
	}
	return payment.Or(ors...)
}
