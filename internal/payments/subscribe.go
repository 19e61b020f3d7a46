package payments

import (
	"context"
	"errors"
	"fmt"

	"github.com/stripe/stripe-go/v76"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/creditplan"
	"github.com/tally-billing/tally/ent/creditsubscription"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/idempotency"
	"github.com/tally-billing/tally/internal/ledger"
)

// SubscribeRequest asks to subscribe to a plan through Stripe Checkout.
type SubscribeRequest struct {
	PlanID     string
	SuccessURL string
	CancelURL  string
	// IdempotencyKey is the caller's key, scoped to the user.
	IdempotencyKey string
}

// SubscribeResult is a started subscription.
type SubscribeResult struct {
	// Subscription is INCOMPLETE until Stripe reports its first invoice
	// paid.
	Subscription *ent.CreditSubscription
	SessionID    string
	// URL is Stripe's hosted page; empty once the session has completed or
	// expired (a replay of an old request).
	URL      string
	Replayed bool
}

const subscribeOp = "subscribe"

// metaSubscription names Tally's subscription in the Stripe subscription's
// metadata (subscription_data.metadata), which its invoices carry: an
// invoice that arrives before the session's completion still finds it.
const metaSubscription = "tally_subscription_id"

// subscribeRecord is what a subscription checkout's idempotency record
// remembers.
type subscribeRecord struct {
	SubscriptionID string `json:"subscription_id"`
}

// Validate checks a subscription request.
func (r SubscribeRequest) Validate() error {
	if r.PlanID == "" {
		return apperr.Invalid("planId", "planId is required")
	}
	if err := validateReturnURL("successUrl", r.SuccessURL); err != nil {
		return err
	}
	return validateReturnURL("cancelUrl", r.CancelURL)
}

func (r SubscribeRequest) keyedRequest(userID string) (idempotency.Request, error) {
	scope := ledger.Actor{Kind: ledger.ActorUser, ID: userID}.String()
	return idempotency.NewRequest(scope, r.IdempotencyKey, subscribeOp,
		struct{ PlanID, SuccessURL, CancelURL string }{r.PlanID, r.SuccessURL, r.CancelURL})
}

// CreateSubscriptionCheckout starts a subscription to a plan: it makes sure
// the user has a Stripe customer, writes an INCOMPLETE subscription and
// opens a Checkout Session in subscription mode whose client_reference_id,
// and the Stripe subscription's metadata, name it. Credits arrive with each
// paid invoice, from the webhook.
//
// The guarantees are the purchase's (CreateCheckoutSession): the caller's
// key is recorded with the subscription, a retry finishes or replays it,
// the Stripe idempotency key derives from the subscription's id, and when
// Stripe refuses the subscription and the key's record are deleted
// together. A user with an ACTIVE or PAST_DUE subscription is refused
// (CONFLICT): one plan at a time, changed in Stripe's customer portal; an
// earlier checkout still open is expired first (closeOpenCheckouts).
func (s *Service) CreateSubscriptionCheckout(ctx context.Context, userID string, req SubscribeRequest) (*SubscribeResult, error) {
	if s.stripe == nil {
		return nil, errStripeDisabled()
	}
	if err := req.Validate(); err != nil {
		return nil, err
	}
	key, err := req.keyedRequest(userID)
	if err != nil {
		return nil, err
	}
	prior, err := subscribePrior(ctx, s.db.Ent, key)
	if err != nil {
		return nil, err
	}
	if prior == nil {
		u, _, err := loadSubscribe(ctx, s.db.Ent, userID, req.PlanID)
		if err != nil {
			return nil, err
		}
		if _, err := s.ensureStripeCustomer(ctx, u); err != nil {
			return nil, err
		}
		if err := s.closeOpenCheckouts(ctx, userID); err != nil {
			return nil, err
		}
		var sub *ent.CreditSubscription
		if sub, prior, err = s.insertIncomplete(ctx, key, req, userID); err != nil {
			return nil, err
		}
		if prior == nil {
			return s.openSubscriptionSession(ctx, key.Key, req, sub, false)
		}
	}
	if prior.StripeCheckoutSessionID != nil {
		params := &stripe.CheckoutSessionParams{}
		params.Context = ctx
		sess, err := s.stripe.CheckoutSessions.Get(*prior.StripeCheckoutSessionID, params)
		if err != nil {
			return nil, stripeError("reading Checkout Session "+*prior.StripeCheckoutSessionID, err)
		}
		return &SubscribeResult{Subscription: prior, SessionID: sess.ID, URL: sess.URL, Replayed: true}, nil
	}
	return s.openSubscriptionSession(ctx, key.Key, req, prior, true)
}

// subscribePrior returns the subscription of an earlier request with the
// key, nil if there is none.
func subscribePrior(ctx context.Context, c *ent.Client, key idempotency.Request) (*ent.CreditSubscription, error) {
	var stored subscribeRecord
	found, err := idempotency.Find(ctx, c, key, &stored)
	if !found || err != nil {
		return nil, err
	}
	sub, err := c.CreditSubscription.Get(ctx, stored.SubscriptionID)
	if ent.IsNotFound(err) {
		return nil, nil // the failed attempt's cleanup committed between the reads
	}
	if err != nil {
		return nil, fmt.Errorf("payments: reading subscription %s of idempotency key %q: %w", stored.SubscriptionID, key.Key.Key, err)
	}
	return sub, nil
}

// loadSubscribe reads the user and the plan and checks that the one may
// subscribe to the other.
func loadSubscribe(ctx context.Context, c *ent.Client, userID, planID string) (*ent.User, *ent.CreditPlan, error) {
	u, err := loadBuyer(ctx, c, userID, "subscriptions are not possible")
	if err != nil {
		return nil, nil, err
	}
	plan, err := c.CreditPlan.Query().Where(creditplan.ID(planID)).Only(ctx)
	if ent.IsNotFound(err) {
		return nil, nil, apperr.New(apperr.NotFound, "no credit plan with id %q", planID)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("payments: reading credit plan %s: %w", planID, err)
	}
	if !plan.Active {
		return nil, nil, apperr.Invalid("planId", "credit plan %q is no longer on sale", planID)
	}
	return u, plan, nil
}

// insertIncomplete writes the INCOMPLETE subscription and the key's record
// in one transaction, under the user's lock (which orders it with the
// user's other subscriptions). When the key has a record by then, it
// returns that request's subscription as prior instead.
func (s *Service) insertIncomplete(ctx context.Context, key idempotency.Request, req SubscribeRequest, userID string,
) (sub, prior *ent.CreditSubscription, err error) {
	err = s.ledger.Within(ctx, func(ctx context.Context, tx *ledger.Tx) error {
		c := tx.Ent().Client()
		if _, err := tx.LockUser(ctx, userID); err != nil {
			return err
		}
		var err error
		if prior, err = subscribePrior(ctx, c, key); prior != nil || err != nil {
			return err
		}
		if _, _, err = loadSubscribe(ctx, c, userID, req.PlanID); err != nil {
			return err
		}
		live, err := c.CreditSubscription.Query().Where(creditsubscription.UserID(userID),
			creditsubscription.StatusIn(creditsubscription.StatusActive, creditsubscription.StatusPastDue)).Exist(ctx)
		if err != nil {
			return fmt.Errorf("payments: reading the subscriptions of user %s: %w", userID, err)
		}
		if live {
			return apperr.New(apperr.Conflict, "the user already has a subscription; cancel it first")
		}
		sub, err = c.CreditSubscription.Create().
			SetUserID(userID).
			SetPlanID(req.PlanID).
			SetLivemode(s.livemode).
			Save(ctx)
		if err != nil {
			return fmt.Errorf("payments: writing the subscription: %w", err)
		}
		return idempotency.Store(ctx, c.IdempotencyKey, tx.Now(), idempotency.Entry{Request: key, Result: subscribeRecord{SubscriptionID: sub.ID}})
	})
	if err != nil {
		return nil, nil, err
	}
	if prior != nil {
		return nil, prior.Unwrap(), nil
	}
	return sub.Unwrap(), nil, nil
}

// openSubscriptionSession creates the Checkout Session of an INCOMPLETE
// subscription and stores its id, or undoes the subscription if Stripe
// says no.
func (s *Service) openSubscriptionSession(ctx context.Context, key idempotency.Key, req SubscribeRequest,
	sub *ent.CreditSubscription, replayed bool,
) (*SubscribeResult, error) {
	u, err := s.db.Ent.User.Get(ctx, sub.UserID)
	if err != nil {
		return nil, fmt.Errorf("payments: reading user %s of subscription %s: %w", sub.UserID, sub.ID, err)
	}
	plan, err := s.db.Ent.CreditPlan.Get(ctx, sub.PlanID)
	if err != nil {
		return nil, fmt.Errorf("payments: reading plan %s of subscription %s: %w", sub.PlanID, sub.ID, err)
	}
	customerID, err := s.ensureStripeCustomer(ctx, u)
	if err != nil {
		return nil, err
	}
	metadata := map[string]string{metaSubscription: sub.ID, "user_id": sub.UserID, "plan_id": sub.PlanID}
	params := &stripe.CheckoutSessionParams{
		Mode:              stripe.String(string(stripe.CheckoutSessionModeSubscription)),
		ClientReferenceID: stripe.String(sub.ID),
		Customer:          stripe.String(customerID),
		SuccessURL:        stripe.String(req.SuccessURL),
		CancelURL:         stripe.String(req.CancelURL),
		LineItems:         []*stripe.CheckoutSessionLineItemParams{planLineItem(plan)},
		Metadata:          metadata,
		SubscriptionData:  &stripe.CheckoutSessionSubscriptionDataParams{Metadata: metadata},
	}
	params.Context = ctx
	params.SetIdempotencyKey("tally-subscribe-" + sub.ID)
	sess, err := s.stripe.CheckoutSessions.New(params)
	if err != nil {
		serr := stripeError("creating the Checkout Session of subscription "+sub.ID, err)
		if !stripeInFlight(err) {
			if cerr := s.abandonSubscription(ctx, key, sub.ID); cerr != nil {
				return nil, errors.Join(serr, cerr)
			}
		}
		return nil, serr
	}
	storeCtx := context.WithoutCancel(ctx)
	err = s.db.Ent.CreditSubscription.Update().
		Where(creditsubscription.ID(sub.ID), creditsubscription.StripeCheckoutSessionIDIsNil()).
		SetStripeCheckoutSessionID(sess.ID).
		Exec(storeCtx)
	if err != nil {
		return nil, fmt.Errorf("payments: storing Checkout Session %s on subscription %s: %w", sess.ID, sub.ID, err)
	}
	stored, err := s.db.Ent.CreditSubscription.Get(storeCtx, sub.ID)
	if ent.IsNotFound(err) {
		return nil, apperr.New(apperr.Conflict, "the subscription was abandoned by a concurrent attempt; try again")
	}
	if err != nil {
		return nil, fmt.Errorf("payments: reading subscription %s: %w", sub.ID, err)
	}
	if stored.StripeCheckoutSessionID == nil || *stored.StripeCheckoutSessionID != sess.ID {
		return nil, fmt.Errorf("payments: subscription %s has Checkout Session %v, Stripe answered %s", sub.ID, stored.StripeCheckoutSessionID, sess.ID)
	}
	return &SubscribeResult{Subscription: stored, SessionID: sess.ID, URL: sess.URL, Replayed: replayed}, nil
}

// planLineItem is the plan's Stripe price, or, for a plan without one, a
// recurring price made from the plan.
func planLineItem(plan *ent.CreditPlan) *stripe.CheckoutSessionLineItemParams {
	item := &stripe.CheckoutSessionLineItemParams{Quantity: stripe.Int64(1)}
	if plan.StripePriceID != "" {
		item.Price = stripe.String(plan.StripePriceID)
		return item
	}
	interval := "month"
	if plan.Interval == creditplan.IntervalYear {
		interval = "year"
	}
	item.PriceData = &stripe.CheckoutSessionLineItemPriceDataParams{
		Currency:    stripe.String(plan.Currency),
		UnitAmount:  stripe.Int64(plan.PriceAmount),
		ProductData: &stripe.CheckoutSessionLineItemPriceDataProductDataParams{Name: stripe.String(plan.Name)},
		Recurring:   &stripe.CheckoutSessionLineItemPriceDataRecurringParams{Interval: stripe.String(interval)},
	}
	return item
}

// abandonSubscription deletes an INCOMPLETE subscription that got no
// session, with its key's record.
func (s *Service) abandonSubscription(ctx context.Context, key idempotency.Key, subID string) error {
	return s.abandonAttempt(ctx, key, "subscription "+subID, func(ctx context.Context, tx *ent.Tx) (int, error) {
		return tx.CreditSubscription.Delete().
			Where(creditsubscription.ID(subID), creditsubscription.StripeCheckoutSessionIDIsNil(),
				creditsubscription.StatusEQ(creditsubscription.StatusIncomplete)).
			Exec(ctx)
	})
}
