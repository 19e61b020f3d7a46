package payments

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/stripe/stripe-go/v76"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/ent/processedevent"
	"github.com/tally-billing/tally/internal/ledger"
)

// granted says whether the payment's credits have been granted: the states
// after a successful payment.
func granted(st payment.Status) bool {
	switch st {
	case payment.StatusSucceeded, payment.StatusPartiallyRefunded, payment.StatusRefunded,
		payment.StatusDisputed, payment.StatusChargedBack:
		return true
	}
	return false
}

// apply decides on one event for its (locked) payment and makes its effect.
// Every order of one payment's events ends in the same state and balance:
// events that need the credits granted first are deferred until they are;
// refunds are cumulative; a second success is a no-op; transitions the state
// machine does not allow are recorded and not applied.
func (s *Service) apply(ctx context.Context, t *ledger.Tx, ev *stripe.Event, p *ent.Payment) (*decision, error) {
	var d decision
	var err error
	switch ev.Type {
	case "checkout.session.completed", "checkout.session.async_payment_succeeded",
		"checkout.session.async_payment_failed", "checkout.session.expired":
		var sess stripe.CheckoutSession
		if err := json.Unmarshal(ev.Data.Raw, &sess); err != nil {
			d = failed("malformed Checkout Session: %v", err)
			break
		}
		d, err = s.applySession(ctx, t, ev, p, &sess)
	case "charge.refunded":
		var ch stripe.Charge
		if err := json.Unmarshal(ev.Data.Raw, &ch); err != nil {
			d = failed("malformed Charge: %v", err)
			break
		}
		d, err = s.applyRefund(ctx, t, p, &ch)
	case "charge.dispute.created", "charge.dispute.closed":
		var dp stripe.Dispute
		if err := json.Unmarshal(ev.Data.Raw, &dp); err != nil {
			d = failed("malformed Dispute: %v", err)
			break
		}
		if ev.Type == "charge.dispute.created" {
			d, err = s.applyDisputeOpened(ctx, t, p, &dp)
		} else {
			d, err = s.applyDisputeClosed(ctx, t, p, &dp)
		}
	case "payment_intent.succeeded", "payment_intent.payment_failed":
		var pi stripe.PaymentIntent
		if err := json.Unmarshal(ev.Data.Raw, &pi); err != nil {
			d = failed("malformed PaymentIntent: %v", err)
			break
		}
		d, err = s.applyIntent(ctx, t, ev.Type, p, &pi)
	default:
		d = ignored("Tally does not handle %s events", ev.Type)
	}
	return &d, err
}

func (s *Service) applySession(ctx context.Context, t *ledger.Tx, ev *stripe.Event, p *ent.Payment, sess *stripe.CheckoutSession) (decision, error) {
	eff := decideSession(ev.Type, p, sess)
	if eff.grant {
		if _, err := t.Grant(ctx, webhookActor, purchaseGrant(p)); err != nil {
			return decision{}, fmt.Errorf("payments: granting payment %s: %w", p.ID, err)
		}
		// Paid: the card it was asked to keep is attached to the customer.
		if job, ok := purchaseCard(p, sess); ok {
			if err := s.queueSaveCard(ctx, t, job); err != nil {
				return decision{}, err
			}
		}
	}
	if !eff.write {
		return eff.d, nil
	}
	return eff.d, s.writeSessions(ctx, t, []sessionWrite{newSessionWrite(p, sess, eff)}, s.now().UTC())
}

// sessionEffect is what a Checkout Session event does to its payment.
type sessionEffect struct {
	d decision
	// write records the session on the payment (its id and payment
	// intent), with status when that is set.
	write  bool
	status payment.Status
	// grant grants the payment's credits (and marks it paid).
	grant bool
}

// decideSession decides a Checkout Session event for its (locked) payment,
// without writing anything: the webhook applies it to one payment
// (applySession) or to a batch of them (applyPurchases).
func decideSession(typ stripe.EventType, p *ent.Payment, sess *stripe.CheckoutSession) sessionEffect {
	// A session that does not match its payment is never applied: it may be
	// forged through a leaked key, or a bug; admins see it.
	if p.StripeCheckoutSessionID != nil && *p.StripeCheckoutSessionID != sess.ID {
		return sessionEffect{d: failed("session %s is not the payment's session %s", sess.ID, *p.StripeCheckoutSessionID)}
	}
	// The amount and currency are what Stripe charged: they must be there
	// and be the payment's, or the event could grant a pack for another
	// price. A missing amount_total decodes as 0 and a missing currency as
	// "", both mismatches. So is a 0 total of a session Stripe marks
	// no_payment_required (a 100% discount): the payment's amount, never 0,
	// is what Tally charges for the pack, and Tally's sessions offer no
	// discounts; a free pack would be a payment of its own kind, not this.
	if sess.AmountTotal != p.Amount {
		return sessionEffect{d: failed("session amount_total %d does not match the payment's %d", sess.AmountTotal, p.Amount)}
	}
	if string(sess.Currency) != p.Currency {
		return sessionEffect{d: failed("session currency %q does not match the payment's %q", sess.Currency, p.Currency)}
	}
	if uid := sess.Metadata["user_id"]; uid != "" && uid != p.UserID {
		return sessionEffect{d: failed("session user %s does not match the payment's user", uid)}
	}
	open := p.Status == payment.StatusPending || p.Status == payment.StatusAwaitingPayment
	paid := typ == "checkout.session.async_payment_succeeded" ||
		(typ == "checkout.session.completed" &&
			(sess.PaymentStatus == stripe.CheckoutSessionPaymentStatusPaid ||
				sess.PaymentStatus == stripe.CheckoutSessionPaymentStatusNoPaymentRequired))
	switch {
	case paid:
		if granted(p.Status) {
			return sessionEffect{d: ignored("payment already %s; credits granted once", p.Status), write: true}
		}
		if !open {
			return sessionEffect{d: ignored("illegal transition %s → SUCCEEDED", p.Status)}
		}
		return sessionEffect{d: applied(), write: true, status: payment.StatusSucceeded, grant: true}
	case typ == "checkout.session.completed": // unpaid: an asynchronous method is on its way
		if p.Status != payment.StatusPending {
			return sessionEffect{d: ignored("payment already %s", p.Status), write: true}
		}
		return sessionEffect{d: applied(), write: true, status: payment.StatusAwaitingPayment}
	case typ == "checkout.session.async_payment_failed":
		if !open {
			return sessionEffect{d: ignored("illegal transition %s → FAILED", p.Status)}
		}
		return sessionEffect{d: applied(), write: true, status: payment.StatusFailed}
	default: // expired
		if !open {
			return sessionEffect{d: ignored("illegal transition %s → EXPIRED", p.Status)}
		}
		return sessionEffect{d: applied(), write: true, status: payment.StatusExpired}
	}
}

// purchaseGrant is the grant of a paid payment's credits; its key makes it
// once per payment.
func purchaseGrant(p *ent.Payment) ledger.GrantRequest {
	return ledger.GrantRequest{
		UserID: p.UserID, Amount: p.Credits, Purchase: true, PaymentID: &p.ID,
		Reason: "purchase", IdempotencyKey: "payment:" + p.ID + ":grant",
	}
}

// refundCredits is how many credits a cumulative refund takes back:
// proportional to the money refunded, rounded down (the buyer keeps a
// fraction of a credit they paid for), and all of them for a full refund.
// Credits and amounts go up to ledger.MaxAmount, so their product needs
// more than 64 bits: ledger.MulDiv keeps it exact. The invariant
// payment_clawback_mismatch (see invariants.go) recomputes the same rule.
func refundCredits(p *ent.Payment, refunded int64) (int64, error) {
	if refunded >= p.Amount {
		return p.Credits, nil
	}
	n, err := ledger.MulDiv(p.Credits, refunded, p.Amount)
	if err != nil {
		return 0, fmt.Errorf("payments: credits of a refund of %d on payment %s: %w", refunded, p.ID, err)
	}
	return n, nil
}

func (s *Service) applyRefund(ctx context.Context, t *ledger.Tx, p *ent.Payment, ch *stripe.Charge) (decision, error) {
	// amount_refunded is in the charge's currency: one that is missing or
	// another than the payment's cannot be compared with its amount. No
	// redelivery changes that, so it is refused now rather than deferred.
	if string(ch.Currency) != p.Currency {
		return failed("charge currency %q does not match the payment's %q", ch.Currency, p.Currency), nil
	}
	// Stripe never refunds more than the charge, so a larger total is not
	// Stripe's (a forged or mistaken event): applying it, even capped, would
	// report as applied a refund that cannot have happened.
	if ch.AmountRefunded > p.Amount {
		return failed("refund total %d exceeds the payment's amount %d", ch.AmountRefunded, p.Amount), nil
	}
	// The charge id is recorded on the payment and unique among payments:
	// a charge without one, or another charge than the one recorded, is not
	// the payment's (a payment intent succeeds through one charge), and
	// storing it would collide with another payment's forever.
	if ch.ID == "" {
		return failed("the charge has no id"), nil
	}
	if p.StripeChargeID != nil && *p.StripeChargeID != ch.ID && !strings.HasPrefix(*p.StripeChargeID, unknownChargePrefix) {
		return failed("charge %s is not the payment's charge %s", ch.ID, *p.StripeChargeID), nil
	}
	if !granted(p.Status) {
		return decision{}, &DeferredError{Reason: fmt.Sprintf("payment %s is %s: a refund waits for the payment", p.ID, p.Status)}
	}
	update := t.Ent().Payment.Update().Where(payment.ID(p.ID)).SetStripeChargeID(ch.ID)
	// amount_refunded is cumulative; deliveries may come out of order, so
	// only a larger total means anything new.
	if ch.AmountRefunded <= p.AmountRefunded {
		return ignored("refund total %d already applied (%d)", ch.AmountRefunded, p.AmountRefunded), update.Exec(ctx)
	}
	refunded := ch.AmountRefunded
	byRefunds, byDisputes, err := t.ClawedBack(ctx, p.ID)
	if err != nil {
		return decision{}, err
	}
	share, err := refundCredits(p, refunded)
	if err != nil {
		return decision{}, err
	}
	credits := min(share-byRefunds, p.Credits-byRefunds-byDisputes)
	if credits > 0 {
		_, err := t.Clawback(ctx, webhookActor, ledger.ClawbackRequest{
			PaymentID: p.ID, Amount: credits, Reason: fmt.Sprintf("refund of %d %s", refunded, p.Currency),
			IdempotencyKey: fmt.Sprintf("payment:%s:refunded:%d", p.ID, refunded),
		})
		if err != nil {
			return decision{}, fmt.Errorf("payments: clawing back refund of %s: %w", p.ID, err)
		}
	}
	after := payment.StatusPartiallyRefunded
	if refunded >= p.Amount {
		after = payment.StatusRefunded
	}
	update.SetAmountRefunded(refunded)
	f := factsOf(p)
	f.amountRefunded = refunded
	switch p.Status {
	case payment.StatusDisputed:
		// The dispute decides the status; a won dispute returns here.
		update.SetStatusBeforeDispute(string(after))
	case payment.StatusChargedBack:
	default:
		update.SetStatus(after)
		f.status = after
	}
	tell(t, EventPaymentRefunded, f, map[string]any{"creditsClawedBack": max(credits, 0)})
	return applied(), update.Exec(ctx)
}

// disputeClosed says whether a dispute of the payment was closed already,
// so that a late "created" does not reopen it.
func disputeClosed(ctx context.Context, tx *ent.Tx, paymentID string) (bool, error) {
	n, err := tx.ProcessedEvent.Query().Where(
		processedevent.PaymentID(paymentID),
		processedevent.Type("charge.dispute.closed"),
		processedevent.OutcomeNEQ(processedevent.OutcomeDeferred),
	).Count(ctx)
	return n > 0, err
}

func (s *Service) applyDisputeOpened(ctx context.Context, t *ledger.Tx, p *ent.Payment, dp *stripe.Dispute) (decision, error) {
	if !granted(p.Status) {
		return decision{}, &DeferredError{Reason: fmt.Sprintf("payment %s is %s: a dispute waits for the payment", p.ID, p.Status)}
	}
	closed, err := disputeClosed(ctx, t.Ent(), p.ID)
	if err != nil {
		return decision{}, err
	}
	if closed || p.Status == payment.StatusDisputed || p.Status == payment.StatusChargedBack {
		return ignored("payment is %s; dispute %s not opened again", p.Status, dp.ID), nil
	}
	_, err = t.HoldPayment(ctx, webhookActor, ledger.PaymentRequest{
		PaymentID: p.ID, Reason: "dispute " + dp.ID + " opened", IdempotencyKey: "dispute:" + dp.ID + ":hold",
	})
	if err != nil {
		return decision{}, fmt.Errorf("payments: holding credits of %s: %w", p.ID, err)
	}
	f := factsOf(p)
	f.status = payment.StatusDisputed
	tell(t, EventPaymentDisputed, f, map[string]any{"disputeId": dp.ID})
	return applied(), t.Ent().Payment.Update().Where(payment.ID(p.ID)).
		SetStatusBeforeDispute(string(p.Status)).
		SetStatus(payment.StatusDisputed).
		Exec(ctx)
}

func (s *Service) applyDisputeClosed(ctx context.Context, t *ledger.Tx, p *ent.Payment, dp *stripe.Dispute) (decision, error) {
	if !granted(p.Status) {
		return decision{}, &DeferredError{Reason: fmt.Sprintf("payment %s is %s: a dispute waits for the payment", p.ID, p.Status)}
	}
	if p.Status == payment.StatusChargedBack {
		return ignored("payment already charged back"), nil
	}
	if dp.Status == stripe.DisputeStatusLost {
		byRefunds, _, err := t.ClawedBack(ctx, p.ID)
		if err != nil {
			return decision{}, err
		}
		if rest := p.Credits - byRefunds; rest > 0 {
			_, err := t.Clawback(ctx, webhookActor, ledger.ClawbackRequest{
				PaymentID: p.ID, Amount: rest, Dispute: true, Reason: "dispute " + dp.ID + " lost",
				IdempotencyKey: "dispute:" + dp.ID + ":lost",
			})
			if err != nil {
				return decision{}, fmt.Errorf("payments: clawing back lost dispute of %s: %w", p.ID, err)
			}
		}
		f := factsOf(p)
		f.status = payment.StatusChargedBack
		tell(t, EventPaymentDisputeClosed, f, map[string]any{"disputeId": dp.ID, "disputeStatus": dp.Status})
		return applied(), t.Ent().Payment.Update().Where(payment.ID(p.ID)).SetStatus(payment.StatusChargedBack).Exec(ctx)
	}
	// Won (or an inquiry closed with a warning): the held credits return.
	if p.Status != payment.StatusDisputed {
		return ignored("no dispute is open on the payment; nothing to release"), nil
	}
	if _, err := t.ReleasePayment(ctx, webhookActor, ledger.PaymentRequest{
		PaymentID: p.ID, Reason: "dispute " + dp.ID + " " + string(dp.Status), IdempotencyKey: "dispute:" + dp.ID + ":release",
	}); err != nil {
		return decision{}, fmt.Errorf("payments: releasing credits of %s: %w", p.ID, err)
	}
	if err := s.reclosePeriod(ctx, t, p); err != nil {
		return decision{}, err
	}
	before := payment.StatusSucceeded
	if p.StatusBeforeDispute != nil {
		before = payment.Status(*p.StatusBeforeDispute)
	}
	f := factsOf(p)
	f.status = before
	tell(t, EventPaymentDisputeClosed, f, map[string]any{"disputeId": dp.ID, "disputeStatus": dp.Status})
	return applied(), t.Ent().Payment.Update().Where(payment.ID(p.ID)).SetStatus(before).ClearStatusBeforeDispute().Exec(ctx)
}
