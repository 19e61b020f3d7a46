package payments

import (
	"context"
	"fmt"

	"github.com/stripe/stripe-go/v76"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/autorecharge"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/ledger"
)

// The outcomes of a recharge, each applied under the user's lock to the
// payment as read under it, by the job (Stripe's answer) or by the
// webhook (the intent's events), whichever comes first; the second finds
// the payment moved and changes nothing. Every order of one recharge's
// outcomes ends in the same state: a payment paid stays paid whatever
// failure arrives late, and a payment given up is paid after all if its
// intent succeeds (the money was taken).

// rechargePaid grants the pack once and puts auto-recharge back to ACTIVE.
func (s *Service) rechargePaid(ctx context.Context, t *ledger.Tx, p *ent.Payment, pi *stripe.PaymentIntent) (decision, error) {
	if pi.Amount != p.Amount || string(pi.Currency) != p.Currency {
		return failed("payment intent %s charged %d %s, the recharge is %d %s", pi.ID, pi.Amount, pi.Currency, p.Amount, p.Currency), nil
	}
	if p.StripePaymentIntentID != nil && *p.StripePaymentIntentID != pi.ID {
		return failed("payment intent %s is not the recharge's %s", pi.ID, *p.StripePaymentIntentID), nil
	}
	if granted(p.Status) {
		return ignored("recharge already %s; credits granted once", p.Status), nil
	}
	if _, err := t.Grant(ctx, webhookActor, purchaseGrant(p)); err != nil {
		return decision{}, fmt.Errorf("payments: granting recharge %s: %w", p.ID, err)
	}
	update := t.Ent().Payment.UpdateOneID(p.ID).SetStatus(payment.StatusSucceeded).SetStripePaymentIntentID(pi.ID).
		SetPaidAt(t.Now()).ClearRechargeSlot()
	if pi.LatestCharge != nil && pi.LatestCharge.ID != "" {
		update.SetStripeChargeID(pi.LatestCharge.ID)
	}
	if err := update.Exec(ctx); err != nil {
		return decision{}, fmt.Errorf("payments: recording recharge %s paid: %w", p.ID, err)
	}
	a, err := s.settled(ctx, t, p, func(a *ent.AutoRecharge, u *ent.AutoRechargeUpdateOne) {
		u.SetLastRechargeAt(t.Now())
		// A late success of a recharge given up says nothing of another
		// one now in flight (which may be waiting for the customer).
		if a.InFlightPaymentID != nil && *a.InFlightPaymentID != p.ID {
			return
		}
		u.SetConsecutiveFailures(0).ClearRetryAfter().SetLastError("")
		if a.Status == autorecharge.StatusActionRequired || a.Status == autorecharge.StatusFailing {
			u.SetStatus(autorecharge.StatusActive)
		}
	})
	if err != nil {
		return decision{}, err
	}
	f := factsOf(p)
	f.status = payment.StatusSucceeded
	tell(t, EventPaymentSucceeded, f, nil)
	tellRecharge(t, EventRechargeSucceeded, f, a, nil)
	return applied(), nil
}

// rechargeFailed gives up a recharge that was declined (or could not be
// made): FAILED, the next one not before the retry wait, and auto-recharge
// DISABLED after maxFailures in a row. A recharge waiting for the customer
// is theirs to finish and is not failed here.
func (s *Service) rechargeFailed(ctx context.Context, t *ledger.Tx, p *ent.Payment, intentID, reason string) (decision, error) {
	if p.Status != payment.StatusPending {
		return ignored("recharge already %s", p.Status), nil
	}
	update := t.Ent().Payment.UpdateOneID(p.ID).SetStatus(payment.StatusFailed).ClearRechargeSlot()
	if intentID != "" && p.StripePaymentIntentID == nil {
		update.SetStripePaymentIntentID(intentID)
	}
	if err := update.Exec(ctx); err != nil {
		return decision{}, fmt.Errorf("payments: recording recharge %s failed: %w", p.ID, err)
	}
	reason = apperr.Clip(reason, 500)
	a, err := s.settled(ctx, t, p, func(a *ent.AutoRecharge, u *ent.AutoRechargeUpdateOne) {
		failures := a.ConsecutiveFailures + 1
		u.SetConsecutiveFailures(failures).SetLastError(reason)
		if failures >= maxFailures {
			u.SetStatus(autorecharge.StatusDisabled).ClearRetryAfter()
		} else {
			u.SetStatus(autorecharge.StatusFailing).SetRetryAfter(t.Now().Add(s.rechargeRetryAfter))
		}
	})
	if err != nil {
		return decision{}, err
	}
	f := factsOf(p)
	f.status = payment.StatusFailed
	tell(t, EventPaymentFailed, f, nil)
	tellRecharge(t, EventRechargeFailed, f, a, map[string]any{"reason": reason})
	if a != nil && a.Status == autorecharge.StatusDisabled {
		tellRecharge(t, EventRechargeDisabled, f, a, map[string]any{"reason": fmt.Sprintf("%d recharges in a row failed", a.ConsecutiveFailures)})
	}
	return applied(), nil
}

// rechargeNeedsAction pauses auto-recharge until the customer, brought
// back on-session by the application, authenticates the payment: the
// event carries what Stripe.js needs to confirm it (the intent's id and
// client secret). The payment stays in flight, so no other recharge
// starts meanwhile; its payment_intent.succeeded resumes ACTIVE.
func (s *Service) rechargeNeedsAction(ctx context.Context, t *ledger.Tx, p *ent.Payment, pi *stripe.PaymentIntent) (decision, error) {
	if p.Status != payment.StatusPending {
		return ignored("recharge already %s", p.Status), nil
	}
	update := t.Ent().Payment.UpdateOneID(p.ID).SetStatus(payment.StatusAwaitingPayment)
	var intentID, secret string
	if pi != nil {
		intentID, secret = pi.ID, pi.ClientSecret
		if pi.ID != "" && p.StripePaymentIntentID == nil {
			update.SetStripePaymentIntentID(pi.ID)
		}
	}
	if err := update.Exec(ctx); err != nil {
		return decision{}, fmt.Errorf("payments: recording recharge %s waiting for the customer: %w", p.ID, err)
	}
	const problem = "the card's bank asks the customer to authenticate the payment"
	a, err := s.settledKeepingSlot(ctx, t, p, func(_ *ent.AutoRecharge, u *ent.AutoRechargeUpdateOne) {
		u.SetStatus(autorecharge.StatusActionRequired).SetLastError(problem)
	})
	if err != nil {
		return decision{}, err
	}
	f := factsOf(p)
	f.status = payment.StatusAwaitingPayment
	tellRecharge(t, EventRechargeActionRequired, f, a, map[string]any{
		"paymentIntentId": intentID, "clientSecret": secret, "reason": problem,
	})
	return applied(), nil
}

// giveUpAwaiting fails a recharge that waits for the customer, when a new
// card replaces the one it asked them to authenticate.
func (s *Service) giveUpAwaiting(ctx context.Context, t *ledger.Tx, paymentID string) error {
	return s.giveUp(ctx, t, paymentID, payment.StatusAwaitingPayment)
}

// giveUp fails a recharge still in status from, and frees its user's
// in-flight mark: not a failure of the card, so the count of failures is
// left alone and nothing is told. Should its intent succeed after all, it
// is granted like any paid recharge.
func (s *Service) giveUp(ctx context.Context, t *ledger.Tx, paymentID string, from payment.Status) error {
	n, err := t.Ent().Payment.Update().
		Where(payment.ID(paymentID), payment.StatusEQ(from)).
		SetStatus(payment.StatusFailed).ClearRechargeSlot().
		Save(ctx)
	if err != nil {
		return fmt.Errorf("payments: giving up recharge %s: %w", paymentID, err)
	}
	if n == 0 {
		return nil
	}
	_, err = t.Ent().AutoRecharge.Update().
		Where(autorecharge.InFlightPaymentID(paymentID)).
		ClearInFlightPaymentID().
		Save(ctx)
	if err != nil {
		return fmt.Errorf("payments: giving up recharge %s: %w", paymentID, err)
	}
	return nil
}

// settled updates the user's auto-recharge after an outcome of p, freeing
// the in-flight mark if p holds it, and keeps users.recharge_below in step.
func (s *Service) settled(ctx context.Context, t *ledger.Tx, p *ent.Payment, change func(*ent.AutoRecharge, *ent.AutoRechargeUpdateOne)) (*ent.AutoRecharge, error) {
	return s.updateAutoRecharge(ctx, t, p, true, change)
}

func (s *Service) settledKeepingSlot(ctx context.Context, t *ledger.Tx, p *ent.Payment, change func(*ent.AutoRecharge, *ent.AutoRechargeUpdateOne)) (*ent.AutoRecharge, error) {
	return s.updateAutoRecharge(ctx, t, p, false, change)
}

func (s *Service) updateAutoRecharge(ctx context.Context, t *ledger.Tx, p *ent.Payment, free bool,
	change func(*ent.AutoRecharge, *ent.AutoRechargeUpdateOne),
) (*ent.AutoRecharge, error) {
	u, err := t.LockUser(ctx, p.UserID)
	if err != nil {
		return nil, err
	}
	a, err := autoRechargeOf(ctx, t.Ent().Client(), p.UserID)
	if err != nil || a == nil {
		return nil, err
	}
	update := a.Update()
	if free && a.InFlightPaymentID != nil && *a.InFlightPaymentID == p.ID {
		update.ClearInFlightPaymentID()
	}
	change(a, update)
	if a, err = update.Save(ctx); err != nil {
		return nil, fmt.Errorf("payments: updating the auto-recharge of %s: %w", p.UserID, err)
	}
	return a, syncRechargeBelow(ctx, t, u, a)
}

// tellRecharge writes an auto-recharge event.
func tellRecharge(t *ledger.Tx, typ string, f paymentFacts, a *ent.AutoRecharge, extra map[string]any) {
	data := map[string]any{}
	if a != nil {
		data["autoRecharge"] = map[string]any{
			"status": a.Status, "thresholdCredits": a.ThresholdCredits, "consecutiveFailures": a.ConsecutiveFailures,
		}
	}
	for k, v := range extra {
		data[k] = v
	}
	tell(t, typ, f, data)
}

// applyIntent decides a recharge's payment_intent event for its (locked)
// payment.
func (s *Service) applyIntent(ctx context.Context, t *ledger.Tx, typ stripe.EventType, p *ent.Payment, pi *stripe.PaymentIntent) (decision, error) {
	if uid := pi.Metadata["user_id"]; uid != "" && uid != p.UserID {
		return failed("payment intent user %s does not match the recharge's user", uid), nil
	}
	if typ == "payment_intent.succeeded" {
		return s.rechargePaid(ctx, t, p, pi)
	}
	if p.StripePaymentIntentID != nil && *p.StripePaymentIntentID != pi.ID {
		return failed("payment intent %s is not the recharge's %s", pi.ID, *p.StripePaymentIntentID), nil
	}
	if pi.LastPaymentError != nil && pi.LastPaymentError.Code == stripe.ErrorCodeAuthenticationRequired ||
		pi.Status == stripe.PaymentIntentStatusRequiresAction {
		return s.rechargeNeedsAction(ctx, t, p, pi)
	}
	reason := "the card was declined"
	if pi.LastPaymentError != nil && pi.LastPaymentError.Msg != "" {
		reason += ": " + pi.LastPaymentError.Msg
	}
	return s.rechargeFailed(ctx, t, p, pi.ID, reason)
}
