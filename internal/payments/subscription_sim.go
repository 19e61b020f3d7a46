package payments

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/creditplan"
	"github.com/tally-billing/tally/ent/creditsubscription"
	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/pulid"
)

// Simulated subscriptions (`tally simulate subscribe|renew|fail-renewal|
// cancel`): the INCOMPLETE subscription createSubscriptionCheckout would
// write, and the events Stripe would send as its periods go by. Periods are
// the subscription's own (the first starts now, each next one where the
// last ended), so a month goes by without waiting for it.

// SimulatedSubscription writes an INCOMPLETE subscription to the plan for
// the user with the external id (created if new), with a Checkout Session
// id, as createSubscriptionCheckout would. A user with a live (ACTIVE or
// PAST_DUE) subscription is refused, as there.
func SimulatedSubscription(ctx context.Context, client *ent.Client, externalUserID, planID string) (*ent.CreditSubscription, error) {
	u, err := SimulatedUser(ctx, client, externalUserID)
	if err != nil {
		return nil, err
	}
	if _, _, err := loadSubscribe(ctx, client, u.ID, planID); err != nil {
		return nil, err
	}
	// Without the user's lock (a developer's tool, one command at a time).
	live, err := client.CreditSubscription.Query().Where(creditsubscription.UserID(u.ID),
		creditsubscription.StatusIn(creditsubscription.StatusActive, creditsubscription.StatusPastDue)).Exist(ctx)
	if err != nil {
		return nil, fmt.Errorf("payments: reading the subscriptions of user %s: %w", u.ID, err)
	}
	if live {
		return nil, apperr.New(apperr.Conflict, "%s already has a subscription; cancel it first", externalUserID)
	}
	sub, err := client.CreditSubscription.Create().
		SetUserID(u.ID).SetPlanID(planID).
		SetStripeCheckoutSessionID("cs_sim_" + pulid.New("x")[2:]).
		Save(ctx)
	if err != nil {
		return nil, fmt.Errorf("payments: writing the simulated subscription: %w", err)
	}
	return sub, nil
}

// SimulatedSubscriptionOf is the subscription with the id, or, without one,
// the user's latest; it must be the user's when both are given. Its plan
// comes with it.
func SimulatedSubscriptionOf(ctx context.Context, client *ent.Client, externalUserID, subscriptionID string) (*ent.CreditSubscription, *ent.CreditPlan, error) {
	q := client.CreditSubscription.Query().WithPlan()
	if subscriptionID != "" {
		q.Where(creditsubscription.ID(subscriptionID))
	}
	if externalUserID != "" {
		q.Where(creditsubscription.HasUserWith(user.ExternalID(externalUserID)))
	}
	sub, err := q.Order(ent.Desc(creditsubscription.FieldCreatedAt), ent.Desc(creditsubscription.FieldID)).First(ctx)
	switch {
	case ent.IsNotFound(err) && subscriptionID != "" && externalUserID != "":
		return nil, nil, apperr.New(apperr.NotFound, "%s has no subscription %q", externalUserID, subscriptionID)
	case ent.IsNotFound(err) && subscriptionID != "":
		return nil, nil, apperr.New(apperr.NotFound, "no subscription %q", subscriptionID)
	case ent.IsNotFound(err):
		return nil, nil, apperr.New(apperr.NotFound, "%s has no subscription (simulate subscribe makes one)", externalUserID)
	case err != nil:
		return nil, nil, fmt.Errorf("payments: reading the simulated subscription: %w", err)
	}
	return sub, sub.Edges.Plan, nil
}

// simulatedStripeID is the Stripe subscription a simulation gives Tally's.
func simulatedStripeID(sub *ent.CreditSubscription) string {
	if sub.StripeSubscriptionID != nil {
		return *sub.StripeSubscriptionID
	}
	return "sub_sim_" + strings.TrimPrefix(sub.ID, "sub_")
}

// SimulatedSubscriptionStart is what Stripe sends once the subscription's
// Checkout is paid: checkout.session.completed (mode subscription, naming a
// new Stripe subscription) and the first invoice.paid, for a period from
// now to one interval later.
func SimulatedSubscriptionStart(sub *ent.CreditSubscription, plan *ent.CreditPlan, now time.Time) ([][]byte, error) {
	if sub.Status != creditsubscription.StatusIncomplete || sub.StripeCheckoutSessionID == nil {
		return nil, apperr.New(apperr.Conflict, "subscription %s is %s, not a Checkout waiting to be paid", sub.ID, sub.Status)
	}
	session, err := simulatedEvent("checkout.session.completed", map[string]any{
		"id": *sub.StripeCheckoutSessionID, "object": "checkout.session", "mode": "subscription",
		"client_reference_id": sub.ID, "subscription": simulatedStripeID(sub), "customer": "cus_sim_" + sub.UserID,
		"payment_status": "paid", "status": "complete", "amount_total": plan.PriceAmount, "currency": plan.Currency,
		"metadata": map[string]string{metaSubscription: sub.ID, "user_id": sub.UserID, "plan_id": plan.ID},
	})
	if err != nil {
		return nil, err
	}
	start := now.UTC().Truncate(time.Second)
	invoice, err := simulatedEvent("invoice.paid", simulatedInvoice(sub, plan, start, "subscription_create", true))
	if err != nil {
		return nil, err
	}
	return [][]byte{session, invoice}, nil
}

// SimulatedRenewal is what Stripe sends when the next period is paid:
// invoice.paid (subscription_cycle) for the period starting where the
// current one ends, and customer.subscription.updated with that period.
func SimulatedRenewal(sub *ent.CreditSubscription, plan *ent.CreditPlan) ([][]byte, error) {
	start, err := nextPeriod(sub)
	if err != nil {
		return nil, err
	}
	invoice, err := simulatedEvent("invoice.paid", simulatedInvoice(sub, plan, start, "subscription_cycle", true))
	if err != nil {
		return nil, err
	}
	updated, err := simulatedEvent("customer.subscription.updated",
		simulatedStripeSubscription(sub, plan, "active", start, periodAfter(start, plan.Interval), false))
	if err != nil {
		return nil, err
	}
	return [][]byte{invoice, updated}, nil
}

// SimulatedRenewalFailure is invoice.payment_failed for the next period's
// invoice (the one SimulatedRenewal pays: a retry that succeeds).
func SimulatedRenewalFailure(sub *ent.CreditSubscription, plan *ent.CreditPlan) ([][]byte, error) {
	start, err := nextPeriod(sub)
	if err != nil {
		return nil, err
	}
	failed, err := simulatedEvent("invoice.payment_failed", simulatedInvoice(sub, plan, start, "subscription_cycle", false))
	if err != nil {
		return nil, err
	}
	return [][]byte{failed}, nil
}

// SimulatedCancel is customer.subscription.deleted (canceled now), or, at
// the period's end, customer.subscription.updated with
// cancel_at_period_end.
func SimulatedCancel(sub *ent.CreditSubscription, plan *ent.CreditPlan, atPeriodEnd bool, now time.Time) ([][]byte, error) {
	if err := begun(sub); err != nil {
		return nil, err
	}
	start, end := now, now
	if sub.CurrentPeriodStart != nil && sub.CurrentPeriodEnd != nil {
		start, end = *sub.CurrentPeriodStart, *sub.CurrentPeriodEnd
	}
	if atPeriodEnd {
		status := "active"
		if sub.Status == creditsubscription.StatusPastDue {
			status = "past_due"
		}
		ev, err := simulatedEvent("customer.subscription.updated", simulatedStripeSubscription(sub, plan, status, start, end, true))
		return [][]byte{ev}, err
	}
	obj := simulatedStripeSubscription(sub, plan, "canceled", start, end, sub.CancelAtPeriodEnd)
	obj["canceled_at"], obj["ended_at"] = now.Unix(), now.Unix()
	ev, err := simulatedEvent("customer.subscription.deleted", obj)
	return [][]byte{ev}, err
}

// begun refuses a subscription Stripe would send nothing more about.
func begun(sub *ent.CreditSubscription) error {
	switch {
	case sub.Status == creditsubscription.StatusCanceled:
		return apperr.New(apperr.Conflict, "subscription %s is CANCELED: Stripe sends nothing more about it", sub.ID)
	case sub.StripeSubscriptionID == nil || sub.CurrentPeriodEnd == nil:
		return apperr.New(apperr.Conflict, "subscription %s has not begun (%s): simulate subscribe pays its first invoice", sub.ID, sub.Status)
	}
	return nil
}

// nextPeriod is where the subscription's next period starts. Stripe bills
// no next period of a subscription cancelling at its period's end.
func nextPeriod(sub *ent.CreditSubscription) (time.Time, error) {
	if err := begun(sub); err != nil {
		return time.Time{}, err
	}
	if sub.CancelAtPeriodEnd {
		return time.Time{}, apperr.New(apperr.Conflict,
			"subscription %s cancels at the end of its period: Stripe bills no next period (simulate cancel ends it)", sub.ID)
	}
	return sub.CurrentPeriodEnd.UTC(), nil
}

// periodAfter is the end of a period of the interval starting at start.
func periodAfter(start time.Time, interval creditplan.Interval) time.Time {
	if interval == creditplan.IntervalYear {
		return start.AddDate(1, 0, 0)
	}
	return start.AddDate(0, 1, 0)
}

// simulatedInvoice is the subscription's invoice for the period from
// start, paid for the plan's price or failed. Its id names the period, so
// a renewal after a failure pays the invoice that failed, as Stripe's
// retry does.
func simulatedInvoice(sub *ent.CreditSubscription, plan *ent.CreditPlan, start time.Time, reason string, paid bool) map[string]any {
	id := fmt.Sprintf("in_sim_%s_%d", strings.TrimPrefix(sub.ID, "sub_"), start.Unix())
	amountPaid, status := int64(0), "open"
	if paid {
		amountPaid, status = plan.PriceAmount, "paid"
	}
	line := map[string]any{
		"id": "il_" + id, "object": "line_item", "type": "subscription", "amount": plan.PriceAmount,
		"currency": plan.Currency, "proration": false,
		"period": map[string]int64{"start": start.Unix(), "end": periodAfter(start, plan.Interval).Unix()},
	}
	if plan.StripePriceID != "" {
		line["price"] = map[string]any{"id": plan.StripePriceID, "object": "price"}
	}
	return map[string]any{
		"id": id, "object": "invoice", "status": status, "paid": paid, "billing_reason": reason,
		"subscription": simulatedStripeID(sub), "customer": "cus_sim_" + sub.UserID,
		"amount_due": plan.PriceAmount, "amount_paid": amountPaid, "currency": plan.Currency,
		"payment_intent": "pi_sim_" + id, "charge": "ch_sim_" + id,
		"subscription_details": map[string]any{"metadata": map[string]string{metaSubscription: sub.ID, "user_id": sub.UserID}},
		"lines":                map[string]any{"object": "list", "data": []any{line}},
	}
}

// simulatedStripeSubscription is the Stripe subscription as its events
// carry it.
func simulatedStripeSubscription(sub *ent.CreditSubscription, plan *ent.CreditPlan, status string, start, end time.Time, cancelAtPeriodEnd bool) map[string]any {
	obj := map[string]any{
		"id": simulatedStripeID(sub), "object": "subscription", "status": status, "customer": "cus_sim_" + sub.UserID,
		"current_period_start": start.Unix(), "current_period_end": end.Unix(), "cancel_at_period_end": cancelAtPeriodEnd,
		"metadata": map[string]string{metaSubscription: sub.ID, "user_id": sub.UserID},
	}
	if plan.StripePriceID != "" {
		obj["items"] = map[string]any{"object": "list", "data": []any{map[string]any{
			"id": "si_sim_" + strings.TrimPrefix(sub.ID, "sub_"), "object": "subscription_item",
			"price": map[string]any{"id": plan.StripePriceID, "object": "price"},
		}}}
	}
	return obj
}
