package payments

import (
	"context"
	"fmt"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/creditsubscription"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/ent/predicate"
)

// UngrantedInvoice is a subscription's invoice Stripe says is paid whose
// period's credits Tally has not granted (no SUBSCRIPTION payment names
// it): its invoice.paid never arrived, or was refused.
type UngrantedInvoice struct {
	InvoiceID      string
	SubscriptionID string
	// Repaired says --apply granted it, as invoice.paid would.
	Repaired bool
}

// reconcileInvoices finds the subscription invoices created since (a Unix
// time) that Stripe says are paid, that belong to a subscription Tally
// knows and that grant credits, but that no payment records; with apply it
// processes each as the invoice.paid that was missed. Runs after the events
// are reconciled, so that a missed invoice.paid Stripe still has is applied
// as itself rather than repaired here.
func (s *Service) reconcileInvoices(ctx context.Context, r *ReconcileReport, apply bool, since int64,
	progress func(format string, args ...any),
) error {
	progress("reading paid invoices created since %s", time.Unix(since, 0).UTC().Format(time.RFC3339))
	ip := &stripe.InvoiceListParams{
		Status:       stripe.String(string(stripe.InvoiceStatusPaid)),
		CreatedRange: &stripe.RangeQueryParams{GreaterThanOrEqual: since},
	}
	ip.Context = ctx
	ip.Filters.AddFilter("limit", "", "100")
	it := s.stripe.Invoices.List(ip)
	for it.Next() {
		inv := it.Invoice()
		r.InvoicesChecked++
		if r.InvoicesChecked%500 == 0 {
			progress("%d invoices checked", r.InvoicesChecked)
		}
		owed, sub, err := s.invoiceOwed(ctx, inv)
		if err != nil {
			return err
		}
		if !owed {
			continue
		}
		missing := UngrantedInvoice{InvoiceID: inv.ID, SubscriptionID: sub.ID}
		if apply {
			missing.Repaired = s.repairInvoice(ctx, r, inv)
		}
		r.UngrantedInvoices = append(r.UngrantedInvoices, missing)
	}
	if err := it.Err(); err != nil {
		return stripeError("listing paid invoices", err)
	}
	return nil
}

// invoiceOwed says whether a paid invoice should have granted credits that
// no payment records, and of which of Tally's subscriptions. An invoice of
// no subscription, or of one Tally does not know (made by hand in Stripe,
// or another deployment's on a shared account), is none of its business;
// one that grants nothing (a trial's, a full discount's) leaves no payment.
func (s *Service) invoiceOwed(ctx context.Context, inv *stripe.Invoice) (bool, *ent.CreditSubscription, error) {
	if inv.Status != stripe.InvoiceStatusPaid || inv.Subscription == nil || inv.AmountPaid <= 0 {
		return false, nil, nil
	}
	sub, err := s.invoiceSubscription(ctx, inv)
	if sub == nil || err != nil {
		return false, nil, err
	}
	known, err := s.db.Ent.Payment.Query().Where(payment.StripeInvoiceID(inv.ID)).Exist(ctx)
	if err != nil {
		return false, nil, fmt.Errorf("payments: reading the payment of invoice %s: %w", inv.ID, err)
	}
	if known {
		return false, nil, nil
	}
	// Reported unless it grants nothing. An invoice without a line with a
	// period cannot be granted: reported, for someone to look at (the
	// repair fails with the reason).
	line := subscriptionLine(inv)
	if line == nil {
		return true, sub, nil
	}
	plan, err := invoicePlan(ctx, s.db.Ent, sub, line)
	if err != nil {
		return false, nil, err
	}
	credits, amount, err := invoiceCredits(inv, plan)
	if err != nil {
		return false, nil, err
	}
	return credits > 0 && amount > 0, sub, nil
}

// invoiceSubscription is the subscription an invoice names, by the id Tally
// gave the Stripe subscription's metadata or by the Stripe subscription's
// id, as the webhook matches it; nil when it names none of Tally's.
func (s *Service) invoiceSubscription(ctx context.Context, inv *stripe.Invoice) (*ent.CreditSubscription, error) {
	ors := []predicate.CreditSubscription{creditsubscription.StripeSubscriptionID(inv.Subscription.ID)}
	if inv.SubscriptionDetails != nil {
		if ref := inv.SubscriptionDetails.Metadata[metaSubscription]; ref != "" {
			ors = append(ors, creditsubscription.ID(ref))
		}
	}
	subs, err := s.db.Ent.CreditSubscription.Query().Where(creditsubscription.Or(ors...)).Limit(2).All(ctx)
	if err != nil {
		return nil, fmt.Errorf("payments: matching invoice %s to a subscription: %w", inv.ID, err)
	}
	if len(subs) == 0 {
		return nil, nil
	}
	// Two matches are reported on the first; the webhook's path refuses
	// the repair with the reason.
	return subs[0], nil
}

// repairInvoice processes a paid invoice as the invoice.paid that was
// missed, created when the invoice was paid (so that a later event, a
// failed renewal say, still decides the subscription's status), with an id
// derived from the invoice: repeated repairs are one event. It says
// whether the invoice now has its payment.
func (s *Service) repairInvoice(ctx context.Context, r *ReconcileReport, inv *stripe.Invoice) bool {
	id := "reconcile_" + inv.ID
	created := inv.Created
	if inv.StatusTransitions != nil && inv.StatusTransitions.PaidAt > 0 {
		created = inv.StatusTransitions.PaidAt
	}
	ev, payload, err := s.syntheticEventAt(id, "invoice.paid", created, inv)
	if err == nil {
		_, err = s.HandleEvent(ctx, ev, payload)
	}
	if err == nil {
		var known bool
		if known, err = s.db.Ent.Payment.Query().Where(payment.StripeInvoiceID(inv.ID)).Exist(ctx); err == nil && !known {
			err = fmt.Errorf("invoice %s is still not granted%s", inv.ID, s.refusal(ctx, id))
		}
	}
	if err != nil {
		r.Failures = append(r.Failures, fmt.Sprintf("%s: %v", id, err))
		return false
	}
	r.Repaired++
	return true
}
