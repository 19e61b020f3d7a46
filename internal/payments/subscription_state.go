package payments

import (
	"context"
	"fmt"
	"time"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/creditsubscription"
	"github.com/tally-billing/tally/internal/ledger"
)

// observation is what one event (or Tally's own call to Stripe) says of a
// subscription. Nil fields say nothing.
type observation struct {
	// mark orders observations (see eventMark): the status follows the
	// latest of those that carry one, and the cancellation and plan the
	// latest of the subscription's own objects. A late delivery of an
	// older event changes neither, so every order ends the same.
	mark                 string
	status               *creditsubscription.Status
	periodStart          *time.Time
	periodEnd            *time.Time
	cancelAtPeriodEnd    *bool
	canceledAt           *time.Time
	planID               string
	stripeSubscriptionID string
	sessionID            string
}

// observe applies an observation to a (locked) subscription and tells the
// application of a move to PAST_DUE or CANCELED (of one that had begun). CANCELED is final: a
// subscription Stripe has ended never comes back. The period only moves
// forward.
func (s *Service) observe(ctx context.Context, t *ledger.Tx, sub *ent.CreditSubscription, o observation) (*ent.CreditSubscription, error) {
	upd := t.Ent().CreditSubscription.UpdateOneID(sub.ID)
	after := *sub
	if o.stripeSubscriptionID != "" && sub.StripeSubscriptionID == nil {
		upd.SetStripeSubscriptionID(o.stripeSubscriptionID)
	}
	if o.sessionID != "" && sub.StripeCheckoutSessionID == nil {
		upd.SetStripeCheckoutSessionID(o.sessionID)
	}
	if o.status != nil && sub.Status != creditsubscription.StatusCanceled {
		switch {
		case *o.status == creditsubscription.StatusCanceled:
			after.Status = creditsubscription.StatusCanceled
			upd.SetStatus(after.Status).SetCanceledAt(orNow(o.canceledAt, t.Now()))
		case o.mark > sub.StatusMark:
			after.Status = *o.status
			upd.SetStatus(after.Status).SetStatusMark(o.mark)
		}
	}
	if o.periodEnd != nil && (sub.CurrentPeriodEnd == nil || o.periodEnd.After(*sub.CurrentPeriodEnd)) {
		after.CurrentPeriodStart, after.CurrentPeriodEnd = o.periodStart, o.periodEnd
		upd.SetNillableCurrentPeriodStart(o.periodStart).SetCurrentPeriodEnd(*o.periodEnd)
	}
	if o.cancelAtPeriodEnd != nil && o.mark > sub.CancelMark {
		upd.SetCancelAtPeriodEnd(*o.cancelAtPeriodEnd).SetCancelMark(o.mark)
		if o.planID != "" {
			upd.SetPlanID(o.planID)
		}
	}
	saved, err := upd.Save(ctx)
	if err != nil {
		return nil, fmt.Errorf("payments: updating subscription %s: %w", sub.ID, err)
	}
	if after.Status != sub.Status {
		switch after.Status {
		case creditsubscription.StatusPastDue:
			tellSubscription(t, EventSubscriptionPastDue, saved, nil)
		case creditsubscription.StatusCanceled:
			// A Checkout abandoned never began: nothing to tell.
			if sub.Status != creditsubscription.StatusIncomplete {
				tellSubscription(t, EventSubscriptionCanceled, saved, nil)
			}
		}
	}
	return saved, nil
}

func orNow(at *time.Time, now time.Time) time.Time {
	if at != nil {
		return *at
	}
	return now
}

// tellSubscription writes a subscription event in the transaction that
// moved it.
func tellSubscription(t *ledger.Tx, typ string, sub *ent.CreditSubscription, extra map[string]any) {
	data := map[string]any{"subscription": map[string]any{
		"id": sub.ID, "status": sub.Status, "planId": sub.PlanID,
		"currentPeriodStart": sub.CurrentPeriodStart, "currentPeriodEnd": sub.CurrentPeriodEnd,
		"cancelAtPeriodEnd": sub.CancelAtPeriodEnd,
	}}
	for k, v := range extra {
		data[k] = v
	}
	t.Emit(ledger.Event{Type: typ, User: &ent.User{ID: sub.UserID}, Data: data})
}
