package payments

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/tally-billing/tally/ent/creditsubscription"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/ledger"
)

// checkoutLifetime is how long Stripe keeps a Checkout Session open (its
// default): an older INCOMPLETE subscription's session has expired.
const checkoutLifetime = 24 * time.Hour

// closeOpenCheckouts expires, in Stripe, the open Checkout Sessions of the
// user's earlier subscriptions that never began, and ends those
// subscriptions: one plan at a time, so that a second tab's checkout
// cannot start a second subscription once the first is paid. A session
// Stripe will not expire has been completed: the user is subscribing
// already (CONFLICT). Two requests at the same instant may still both
// open one; the webhook then grants what each charges.
func (s *Service) closeOpenCheckouts(ctx context.Context, userID string) error {
	open, err := s.db.Ent.CreditSubscription.Query().Where(
		creditsubscription.UserID(userID),
		creditsubscription.StatusEQ(creditsubscription.StatusIncomplete),
		creditsubscription.StripeCheckoutSessionIDNotNil(),
		creditsubscription.StripeSubscriptionIDIsNil(),
		creditsubscription.CreatedAtGT(s.now().Add(-checkoutLifetime)),
	).All(ctx)
	if err != nil {
		return fmt.Errorf("payments: reading the open checkouts of user %s: %w", userID, err)
	}
	for _, sub := range open {
		params := &stripe.CheckoutSessionExpireParams{}
		params.Context = ctx
		params.SetIdempotencyKey("tally-expire-" + sub.ID)
		_, err := s.stripe.CheckoutSessions.Expire(*sub.StripeCheckoutSessionID, params)
		var se *stripe.Error
		if errors.As(err, &se) && se.HTTPStatusCode == http.StatusBadRequest {
			return apperr.New(apperr.Conflict, "an earlier subscription checkout was completed; it starts shortly")
		}
		if err != nil {
			return stripeError("expiring the Checkout Session of subscription "+sub.ID, err)
		}
		err = s.ledger.Within(ctx, func(ctx context.Context, t *ledger.Tx) error {
			if _, err := t.LockUser(ctx, userID); err != nil {
				return err
			}
			current, err := t.Ent().CreditSubscription.Get(ctx, sub.ID)
			if err != nil {
				return fmt.Errorf("payments: reading subscription %s: %w", sub.ID, err)
			}
			_, err = s.observe(ctx, t, current, observation{status: statusPtr(creditsubscription.StatusCanceled)})
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}
