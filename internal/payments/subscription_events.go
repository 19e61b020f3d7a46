package payments

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/creditsubscription"
	"github.com/tally-billing/tally/ent/predicate"
	"github.com/tally-billing/tally/internal/ledger"
)

// Outbound event types of subscriptions.
const (
	EventSubscriptionActivated = "subscription.activated"
	EventSubscriptionRenewed   = "subscription.renewed"
	EventSubscriptionPastDue   = "subscription.past_due"
	EventSubscriptionCanceled  = "subscription.canceled"
)

// subscriptionRefs is what an event says of its subscription: Tally's id
// (client_reference_id, or the metadata Tally gave the Stripe subscription,
// which its invoices carry) and Stripe's.
func subscriptionRefs(ev *stripe.Event) (ref, stripeID string, d *decision) {
	malformed := func(what string, err error) (string, string, *decision) {
		dd := failed("malformed %s: %v", what, err)
		return "", "", &dd
	}
	switch {
	case strings.HasPrefix(string(ev.Type), "checkout.session."):
		var sess stripe.CheckoutSession
		if err := json.Unmarshal(ev.Data.Raw, &sess); err != nil {
			return malformed("Checkout Session", err)
		}
		ref = sess.ClientReferenceID
		if ref == "" {
			ref = sess.Metadata[metaSubscription]
		}
		if sess.Subscription != nil {
			stripeID = sess.Subscription.ID
		}
	case strings.HasPrefix(string(ev.Type), "invoice."):
		var inv stripe.Invoice
		if err := json.Unmarshal(ev.Data.Raw, &inv); err != nil {
			return malformed("Invoice", err)
		}
		if inv.SubscriptionDetails != nil {
			ref = inv.SubscriptionDetails.Metadata[metaSubscription]
		}
		if inv.Subscription != nil {
			stripeID = inv.Subscription.ID
		}
	default:
		var sub stripe.Subscription
		if err := json.Unmarshal(ev.Data.Raw, &sub); err != nil {
			return malformed("Subscription", err)
		}
		ref, stripeID = sub.Metadata[metaSubscription], sub.ID
	}
	return ref, stripeID, nil
}

// matchSubscription finds the subscription an event concerns. One that
// names none of Tally's is not Tally's (an invoice for something else, a
// subscription made by hand in Stripe) and is ignored; one whose Tally id
// is unknown is refused.
func (s *Service) matchSubscription(ctx context.Context, ev *stripe.Event) (matched, error) {
	ref, stripeID, d := subscriptionRefs(ev)
	if d != nil {
		return matched{mismatch: d}, nil
	}
	var ors []predicate.CreditSubscription
	if ref != "" {
		ors = append(ors, creditsubscription.ID(ref))
	}
	if stripeID != "" {
		ors = append(ors, creditsubscription.StripeSubscriptionID(stripeID))
	}
	if len(ors) == 0 {
		dd := ignored("the event names no subscription")
		return matched{mismatch: &dd}, nil
	}
	subs, err := s.db.Ent.CreditSubscription.Query().Where(creditsubscription.Or(ors...)).Limit(2).All(ctx)
	if err != nil {
		return matched{}, fmt.Errorf("payments: matching event %s to a subscription: %w", ev.ID, err)
	}
	switch {
	case len(subs) == 1:
		return matched{subscription: subs[0]}, nil
	case len(subs) > 1:
		dd := failed("the event matches more than one subscription")
		return matched{mismatch: &dd}, nil
	case ref != "":
		dd := failed("no subscription matches this event")
		return matched{mismatch: &dd}, nil
	default:
		dd := ignored("not a Tally subscription")
		return matched{mismatch: &dd}, nil
	}
}

// applySubscription decides an event for its (locked) subscription. It
// returns the payment the event made or concerns, if any, for its record.
func (s *Service) applySubscription(ctx context.Context, t *ledger.Tx, ev *stripe.Event, sub *ent.CreditSubscription) (*decision, *ent.Payment, error) {
	var d decision
	var p *ent.Payment
	var err error
	switch {
	case strings.HasPrefix(string(ev.Type), "checkout.session."):
		var sess stripe.CheckoutSession
		if uerr := json.Unmarshal(ev.Data.Raw, &sess); uerr != nil {
			d = failed("malformed Checkout Session: %v", uerr)
			break
		}
		d, err = s.applySubscriptionSession(ctx, t, ev, sub, &sess)
	case ev.Type == "invoice.paid" || ev.Type == "invoice.payment_failed":
		var inv stripe.Invoice
		if uerr := json.Unmarshal(ev.Data.Raw, &inv); uerr != nil {
			d = failed("malformed Invoice: %v", uerr)
			break
		}
		if inv.Subscription != nil && sub.StripeSubscriptionID != nil && inv.Subscription.ID != *sub.StripeSubscriptionID {
			d = failed("invoice of Stripe subscription %s, not the subscription's %s", inv.Subscription.ID, *sub.StripeSubscriptionID)
			break
		}
		if ev.Type == "invoice.paid" {
			d, p, err = s.applyInvoicePaid(ctx, t, ev, sub, &inv)
		} else {
			d, p, err = s.applyInvoiceFailed(ctx, t, ev, sub, &inv)
		}
	case ev.Type == "customer.subscription.updated" || ev.Type == "customer.subscription.deleted":
		var obj stripe.Subscription
		if uerr := json.Unmarshal(ev.Data.Raw, &obj); uerr != nil {
			d = failed("malformed Subscription: %v", uerr)
			break
		}
		d, err = s.applySubscriptionObject(ctx, t, ev, sub, &obj)
	default:
		d = ignored("Tally does not handle %s events", ev.Type)
	}
	return &d, p, err
}

// applySubscriptionSession links the subscription to the Stripe one its
// Checkout made; an expired session ends a subscription that never began.
// Credits come with the invoice (invoice.paid), not the session.
func (s *Service) applySubscriptionSession(ctx context.Context, t *ledger.Tx, ev *stripe.Event, sub *ent.CreditSubscription, sess *stripe.CheckoutSession) (decision, error) {
	if sub.StripeCheckoutSessionID != nil && *sub.StripeCheckoutSessionID != sess.ID {
		return failed("session %s is not the subscription's session %s", sess.ID, *sub.StripeCheckoutSessionID), nil
	}
	if uid := sess.Metadata["user_id"]; uid != "" && uid != sub.UserID {
		return failed("session user %s does not match the subscription's user", uid), nil
	}
	o := observation{mark: eventMark(ev)}
	switch ev.Type {
	case "checkout.session.completed":
		if sess.Subscription == nil || sess.Subscription.ID == "" {
			return failed("the completed session names no Stripe subscription"), nil
		}
		if sub.StripeSubscriptionID != nil && *sub.StripeSubscriptionID != sess.Subscription.ID {
			return failed("session subscription %s is not the subscription's %s", sess.Subscription.ID, *sub.StripeSubscriptionID), nil
		}
		o.stripeSubscriptionID = sess.Subscription.ID
		if sess.PaymentStatus == stripe.CheckoutSessionPaymentStatusPaid {
			o.status = statusPtr(creditsubscription.StatusActive)
		}
	case "checkout.session.expired":
		if sub.Status != creditsubscription.StatusIncomplete || sub.StripeSubscriptionID != nil {
			return ignored("subscription already %s", sub.Status), nil
		}
		o.status = statusPtr(creditsubscription.StatusCanceled)
	default:
		return ignored("Tally does not act on %s for a subscription", ev.Type), nil
	}
	o.sessionID = sess.ID
	_, err := s.observe(ctx, t, sub, o)
	return applied(), err
}

// applySubscriptionObject keeps status, period, plan and cancellation in
// step with Stripe's subscription.
func (s *Service) applySubscriptionObject(ctx context.Context, t *ledger.Tx, ev *stripe.Event, sub *ent.CreditSubscription, obj *stripe.Subscription) (decision, error) {
	if sub.StripeSubscriptionID != nil && *sub.StripeSubscriptionID != obj.ID {
		return failed("Stripe subscription %s is not the subscription's %s", obj.ID, *sub.StripeSubscriptionID), nil
	}
	st := stripeStatus(obj.Status)
	if ev.Type == "customer.subscription.deleted" {
		st = creditsubscription.StatusCanceled
	}
	o := observation{mark: eventMark(ev), status: &st, stripeSubscriptionID: obj.ID, cancelAtPeriodEnd: &obj.CancelAtPeriodEnd}
	if obj.CurrentPeriodEnd > 0 {
		o.periodStart, o.periodEnd = unixPtr(obj.CurrentPeriodStart), unixPtr(obj.CurrentPeriodEnd)
	}
	if obj.CanceledAt > 0 {
		o.canceledAt = unixPtr(obj.CanceledAt)
	}
	if obj.Items != nil && len(obj.Items.Data) > 0 && obj.Items.Data[0].Price != nil && obj.Items.Data[0].Price.ID != "" {
		plan, err := planOfPrice(ctx, t.Ent().Client(), sub.PlanID, obj.Items.Data[0].Price.ID)
		if err != nil && !ent.IsNotFound(err) {
			return decision{}, fmt.Errorf("payments: finding the plan of price %s: %w", obj.Items.Data[0].Price.ID, err)
		}
		if plan != nil {
			o.planID = plan.ID
		}
	}
	_, err := s.observe(ctx, t, sub, o)
	return applied(), err
}

// stripeStatus maps a Stripe subscription's status to Tally's.
func stripeStatus(st stripe.SubscriptionStatus) creditsubscription.Status {
	switch st {
	case stripe.SubscriptionStatusActive, stripe.SubscriptionStatusTrialing:
		return creditsubscription.StatusActive
	case stripe.SubscriptionStatusCanceled, stripe.SubscriptionStatusIncompleteExpired:
		return creditsubscription.StatusCanceled
	case stripe.SubscriptionStatusIncomplete:
		return creditsubscription.StatusIncomplete
	default: // past_due, unpaid, paused: not being paid
		return creditsubscription.StatusPastDue
	}
}

// eventMark orders Stripe events: their creation time, then their id (a
// tie of one second is broken the same way in every order).
func eventMark(ev *stripe.Event) string {
	return fmt.Sprintf("%012d/%s", ev.Created, ev.ID)
}

func statusPtr(st creditsubscription.Status) *creditsubscription.Status { return &st }

func unixPtr(sec int64) *time.Time {
	t := time.Unix(sec, 0).UTC()
	return &t
}
