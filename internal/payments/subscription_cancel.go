package payments

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/stripe/stripe-go/v76"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/creditsubscription"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/idempotency"
	"github.com/tally-billing/tally/internal/ledger"
)

// CancelRequest asks to cancel a subscription, now or at the end of the
// period paid for.
type CancelRequest struct {
	SubscriptionID string
	AtPeriodEnd    bool
	IdempotencyKey string
}

// CancelResult is a cancelled subscription.
type CancelResult struct {
	Subscription *ent.CreditSubscription
	Replayed     bool
}

const cancelOp = "cancel_subscription"

// CancelSubscription cancels a subscription in Stripe and records what
// Stripe answered: no invoice comes after it, so no credits are granted
// after it; those granted stay until they expire. Now ends it at once; at
// period end lets the period paid for run (and is undone by the customer
// portal, whose event Tally follows). ownerID is the caller's user id for
// a user, whose only subscriptions exist for them; "" for an admin. also,
// when set, runs in the transaction that records the cancellation.
//
// Stripe's own idempotency key derives from the subscription, the caller's
// key and the request, so a retried request is one cancellation in
// Stripe; a request on a subscription already cancelled (or cancelling at
// period end, for that request) asks Stripe nothing.
func (s *Service) CancelSubscription(ctx context.Context, ownerID string, req CancelRequest,
	also func(ctx context.Context, tx *ent.Tx, sub *ent.CreditSubscription) error,
) (*CancelResult, error) {
	if s.stripe == nil {
		return nil, errStripeDisabled()
	}
	if req.SubscriptionID == "" {
		return nil, apperr.Invalid("subscriptionId", "subscriptionId is required")
	}
	sub, err := s.db.Ent.CreditSubscription.Get(ctx, req.SubscriptionID)
	if ent.IsNotFound(err) || (err == nil && ownerID != "" && sub.UserID != ownerID) {
		return nil, apperr.New(apperr.NotFound, "no subscription with id %q", req.SubscriptionID)
	}
	if err != nil {
		return nil, fmt.Errorf("payments: reading subscription %s: %w", req.SubscriptionID, err)
	}
	scope := ledger.Actor{Kind: ledger.ActorUser, ID: sub.UserID}.String()
	key, err := idempotency.NewRequest(scope, req.IdempotencyKey, cancelOp, req)
	if err != nil {
		return nil, err
	}
	if found, err := idempotency.Find(ctx, s.db.Ent, key, &struct{}{}); err != nil {
		return nil, err
	} else if found {
		return &CancelResult{Subscription: sub, Replayed: true}, nil
	}
	switch {
	case sub.Status == creditsubscription.StatusCanceled,
		req.AtPeriodEnd && sub.CancelAtPeriodEnd:
		return s.recordCancel(ctx, key, sub, observation{}, also)
	case sub.StripeSubscriptionID == nil:
		return nil, apperr.New(apperr.Conflict, "the subscription has not begun: its Checkout is not complete, and expires by itself")
	}
	obj, err := s.cancelInStripe(ctx, sub, key, req.AtPeriodEnd)
	if err != nil {
		return nil, err
	}
	// Stripe's answer is as new as anything it has sent: it wins ties of
	// the same second ("~" sorts after event ids).
	st := stripeStatus(obj.Status)
	o := observation{mark: fmt.Sprintf("%012d/~", s.now().Unix()), status: &st, cancelAtPeriodEnd: &obj.CancelAtPeriodEnd}
	if obj.CanceledAt > 0 {
		o.canceledAt = unixPtr(obj.CanceledAt)
	}
	return s.recordCancel(ctx, key, sub, o, also)
}

// cancelInStripe asks Stripe to cancel now or at the period's end.
func (s *Service) cancelInStripe(ctx context.Context, sub *ent.CreditSubscription, key idempotency.Request, atPeriodEnd bool) (*stripe.Subscription, error) {
	sum := sha256.Sum256([]byte(key.Key.Key + "\x00" + key.Fingerprint))
	stripeKey := "tally-cancel-" + sub.ID + "-" + hex.EncodeToString(sum[:16])
	if atPeriodEnd {
		params := &stripe.SubscriptionParams{CancelAtPeriodEnd: stripe.Bool(true)}
		params.Context = ctx
		params.SetIdempotencyKey(stripeKey)
		obj, err := s.stripe.Subscriptions.Update(*sub.StripeSubscriptionID, params)
		if err != nil {
			return nil, stripeError("cancelling subscription "+sub.ID+" at period end", err)
		}
		return obj, nil
	}
	params := &stripe.SubscriptionCancelParams{}
	params.Context = ctx
	params.SetIdempotencyKey(stripeKey)
	obj, err := s.stripe.Subscriptions.Cancel(*sub.StripeSubscriptionID, params)
	if err != nil {
		return nil, stripeError("cancelling subscription "+sub.ID, err)
	}
	return obj, nil
}

// recordCancel applies Stripe's answer and stores the key, under the
// user's lock, in one transaction with also.
func (s *Service) recordCancel(ctx context.Context, key idempotency.Request, sub *ent.CreditSubscription, o observation,
	also func(ctx context.Context, tx *ent.Tx, sub *ent.CreditSubscription) error,
) (*CancelResult, error) {
	var saved *ent.CreditSubscription
	replayed := false
	err := s.ledger.Within(ctx, func(ctx context.Context, t *ledger.Tx) error {
		if _, err := t.LockUser(ctx, sub.UserID); err != nil {
			return err
		}
		var err error
		if replayed, err = idempotency.Find(ctx, t.Ent().Client(), key, &struct{}{}); err != nil || replayed {
			saved, err = t.Ent().CreditSubscription.Get(ctx, sub.ID)
			return err
		}
		if saved, err = t.Ent().CreditSubscription.Get(ctx, sub.ID); err != nil {
			return fmt.Errorf("payments: reading subscription %s: %w", sub.ID, err)
		}
		if o.mark != "" {
			if saved, err = s.observe(ctx, t, saved, o); err != nil {
				return err
			}
		}
		if also != nil {
			if err := also(ctx, t.Ent(), saved); err != nil {
				return err
			}
		}
		return idempotency.Store(ctx, t.Ent().IdempotencyKey, t.Now(), idempotency.Entry{Request: key, Result: struct{}{}})
	})
	if err != nil {
		return nil, err
	}
	return &CancelResult{Subscription: saved.Unwrap(), Replayed: replayed}, nil
}
