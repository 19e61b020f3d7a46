package payments

import (
	"context"
	"fmt"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/creditlot"
	"github.com/tally-billing/tally/ent/creditplan"
	"github.com/tally-billing/tally/ent/creditsubscription"
	"github.com/tally-billing/tally/ent/credittransaction"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/internal/ledger"
)

// applyInvoicePaid makes a paid invoice a SUBSCRIPTION payment and grants
// its credits, once (the invoice id is unique among payments), as a lot
// expiring at the end of the period it paid for. A renewal then closes the
// period before it (EndPeriod: what is left expires, the plan's rule rolls
// some over); an invoice that arrives after its next period's closes its
// own period into that one, so that the order of delivery does not matter.
func (s *Service) applyInvoicePaid(ctx context.Context, t *ledger.Tx, ev *stripe.Event, sub *ent.CreditSubscription, inv *stripe.Invoice) (decision, *ent.Payment, error) {
	if inv.ID == "" {
		return failed("the invoice has no id"), nil, nil
	}
	known, err := t.Ent().Payment.Query().Where(payment.StripeInvoiceID(inv.ID)).Only(ctx)
	if err == nil {
		return ignored("invoice %s already granted by payment %s", inv.ID, known.ID), known, nil
	}
	if !ent.IsNotFound(err) {
		return decision{}, nil, fmt.Errorf("payments: reading the payment of invoice %s: %w", inv.ID, err)
	}
	line := subscriptionLine(inv)
	if line == nil {
		return failed("the invoice has no subscription line with a period"), nil, nil
	}
	plan, err := invoicePlan(ctx, t.Ent().Client(), sub, line)
	if err != nil {
		return decision{}, nil, err
	}
	start, end := time.Unix(line.Period.Start, 0).UTC(), time.Unix(line.Period.End, 0).UTC()
	o := observation{mark: eventMark(ev), status: statusPtr(creditsubscription.StatusActive), periodStart: &start, periodEnd: &end}
	if inv.Subscription != nil {
		o.stripeSubscriptionID = inv.Subscription.ID
	}
	credits, err := invoiceCredits(inv, plan)
	if err != nil {
		return decision{}, nil, err
	}
	if inv.AmountPaid <= 0 || credits <= 0 {
		_, err := s.observe(ctx, t, sub, o)
		return ignored("an invoice of %d grants no credits", inv.AmountPaid), nil, err
	}
	p, err := s.insertInvoicePayment(ctx, t, sub, plan, inv, credits, start, end)
	if err != nil {
		return decision{}, nil, err
	}
	grant := purchaseGrant(p)
	expires := lotExpiry(end, plan.Interval, t.Now())
	grant.ExpiresAt, grant.Reason = &expires, "subscription "+sub.ID+" period paid"
	if _, err := t.Grant(ctx, webhookActor, grant); err != nil {
		return decision{}, nil, fmt.Errorf("payments: granting invoice %s: %w", inv.ID, err)
	}
	if err := s.closePeriods(ctx, t, sub, p); err != nil {
		return decision{}, nil, err
	}
	saved, err := s.observe(ctx, t, sub, o)
	if err != nil {
		return decision{}, nil, err
	}
	typ := EventSubscriptionRenewed
	if inv.BillingReason == stripe.InvoiceBillingReasonSubscriptionCreate {
		typ = EventSubscriptionActivated
	}
	tellSubscription(t, typ, saved, map[string]any{"payment": map[string]any{
		"id": p.ID, "amount": p.Amount, "currency": p.Currency, "credits": p.Credits, "periodEnd": end,
	}})
	return applied(), p, nil
}

// applyInvoiceFailed marks the subscription PAST_DUE, unless the invoice
// was paid after all (a retry that succeeded, delivered first), or it was
// the first one (Checkout asks the customer again; the subscription has
// not begun).
func (s *Service) applyInvoiceFailed(ctx context.Context, t *ledger.Tx, ev *stripe.Event, sub *ent.CreditSubscription, inv *stripe.Invoice) (decision, *ent.Payment, error) {
	known, err := t.Ent().Payment.Query().Where(payment.StripeInvoiceID(inv.ID)).Only(ctx)
	if err == nil {
		return ignored("invoice %s is paid", inv.ID), known, nil
	}
	if !ent.IsNotFound(err) {
		return decision{}, nil, fmt.Errorf("payments: reading the payment of invoice %s: %w", inv.ID, err)
	}
	if sub.Status == creditsubscription.StatusIncomplete {
		return ignored("the subscription has not begun"), nil, nil
	}
	_, err = s.observe(ctx, t, sub, observation{mark: eventMark(ev), status: statusPtr(creditsubscription.StatusPastDue)})
	return applied(), nil, err
}

// subscriptionLine is the invoice line that names the period paid for: the
// subscription's own line, else (an invoice of prorations alone) the
// first line with a period.
func subscriptionLine(inv *stripe.Invoice) *stripe.InvoiceLineItem {
	if inv.Lines == nil {
		return nil
	}
	var first *stripe.InvoiceLineItem
	for _, l := range inv.Lines.Data {
		if l == nil || l.Period == nil || l.Period.End <= l.Period.Start {
			continue
		}
		if l.Type == stripe.InvoiceLineItemTypeSubscription && !l.Proration {
			return l
		}
		if first == nil {
			first = l
		}
	}
	return first
}

// invoicePlan is the plan the line's price belongs to, else the
// subscription's.
func invoicePlan(ctx context.Context, c *ent.Client, sub *ent.CreditSubscription, line *stripe.InvoiceLineItem) (*ent.CreditPlan, error) {
	if line.Price != nil && line.Price.ID != "" {
		plan, err := c.CreditPlan.Query().Where(creditplan.StripePriceID(line.Price.ID)).First(ctx)
		if err == nil {
			return plan, nil
		}
		if !ent.IsNotFound(err) {
			return nil, fmt.Errorf("payments: finding the plan of price %s: %w", line.Price.ID, err)
		}
	}
	plan, err := c.CreditPlan.Get(ctx, sub.PlanID)
	if err != nil {
		return nil, fmt.Errorf("payments: reading plan %s of subscription %s: %w", sub.PlanID, sub.ID, err)
	}
	return plan, nil
}

// invoiceCredits is what an invoice grants. A period's invoice (the first
// or a renewal) grants the plan's credits. An invoice for a change within
// the period grants what it paid for: the plan's credits in proportion to
// the amount paid, rounded down, at most a period's.
func invoiceCredits(inv *stripe.Invoice, plan *ent.CreditPlan) (int64, error) {
	if inv.BillingReason != stripe.InvoiceBillingReasonSubscriptionUpdate {
		return plan.CreditsPerPeriod, nil
	}
	if inv.AmountPaid >= plan.PriceAmount {
		return plan.CreditsPerPeriod, nil
	}
	n, err := ledger.MulDiv(plan.CreditsPerPeriod, max(inv.AmountPaid, 0), plan.PriceAmount)
	if err != nil {
		return 0, fmt.Errorf("payments: credits of invoice %s: %w", inv.ID, err)
	}
	return n, nil
}

// lotExpiry is when a period's credits expire: at the period's end, or,
// for an invoice paid after its period ended (Stripe retried a failed
// payment for weeks), one interval after it was paid: the customer paid
// for a period of credits.
func lotExpiry(periodEnd time.Time, interval creditplan.Interval, now time.Time) time.Time {
	if periodEnd.After(now) {
		return periodEnd
	}
	if interval == creditplan.IntervalYear {
		return now.AddDate(1, 0, 0)
	}
	return now.AddDate(0, 1, 0)
}

// insertInvoicePayment writes the SUBSCRIPTION payment of a paid invoice.
func (s *Service) insertInvoicePayment(ctx context.Context, t *ledger.Tx, sub *ent.CreditSubscription, plan *ent.CreditPlan,
	inv *stripe.Invoice, credits int64, start, end time.Time,
) (*ent.Payment, error) {
	create := t.Ent().Payment.Create().
		SetUserID(sub.UserID).
		SetKind(payment.KindSUBSCRIPTION).
		SetPlanID(plan.ID).
		SetSubscriptionID(sub.ID).
		SetStripeInvoiceID(inv.ID).
		SetAmount(inv.AmountPaid).
		SetCurrency(string(inv.Currency)).
		SetCredits(credits).
		SetStatus(payment.StatusSucceeded).
		SetLivemode(inv.Livemode).
		SetPaidAt(t.Now()).
		SetPeriodStart(start).
		SetPeriodEnd(end)
	if inv.PaymentIntent != nil && inv.PaymentIntent.ID != "" {
		create.SetStripePaymentIntentID(inv.PaymentIntent.ID)
	}
	if inv.Charge != nil && inv.Charge.ID != "" {
		create.SetStripeChargeID(inv.Charge.ID)
	}
	p, err := create.Save(ctx)
	if ent.IsConstraintError(err) {
		return nil, fmt.Errorf("payments: invoice %s recorded concurrently: %w", inv.ID, ledger.ErrRetry)
	}
	if err != nil {
		return nil, fmt.Errorf("payments: writing the payment of invoice %s: %w", inv.ID, err)
	}
	return p, nil
}

// closePeriods closes, around a newly paid period, the period that ended
// where it starts (a renewal) and, when its successor was paid first, the
// new period itself into that successor.
func (s *Service) closePeriods(ctx context.Context, t *ledger.Tx, sub *ent.CreditSubscription, p *ent.Payment) error {
	c := t.Ent()
	bySub := payment.And(payment.SubscriptionID(sub.ID), payment.KindEQ(payment.KindSUBSCRIPTION))
	ended, err := c.Payment.Query().Where(bySub, payment.PeriodEnd(*p.PeriodStart)).All(ctx)
	if err != nil {
		return fmt.Errorf("payments: reading the period before invoice %v: %w", p.StripeInvoiceID, err)
	}
	if len(ended) > 0 {
		if err := s.closePeriod(ctx, t, sub, ended, p); err != nil {
			return err
		}
	}
	next, err := c.Payment.Query().Where(bySub, payment.PeriodStart(*p.PeriodEnd), payment.IDNEQ(p.ID)).
		Order(payment.ByID()).First(ctx)
	if ent.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("payments: reading the period after invoice %v: %w", p.StripeInvoiceID, err)
	}
	// Every payment of the period, not this one alone: a change within it
	// may have paid for some too.
	same, err := c.Payment.Query().Where(bySub, payment.PeriodEnd(*p.PeriodEnd)).All(ctx)
	if err != nil {
		return fmt.Errorf("payments: reading the period of invoice %v: %w", p.StripeInvoiceID, err)
	}
	return s.closePeriod(ctx, t, sub, same, next)
}

// closePeriod ends the period the payments paid for into next's: its lots
// expire and the rule of next's plan rolls some over, keyed by the
// subscription and the new period's start.
func (s *Service) closePeriod(ctx context.Context, t *ledger.Tx, sub *ent.CreditSubscription, ended []*ent.Payment, next *ent.Payment) error {
	c := t.Ent()
	ids := make([]string, len(ended))
	for i, e := range ended {
		ids[i] = e.ID
	}
	lots, err := c.CreditLot.Query().Where(creditlot.PaymentIDIn(ids...)).IDs(ctx)
	if err != nil {
		return fmt.Errorf("payments: reading the lots of an ended period: %w", err)
	}
	rolled, err := c.CreditTransaction.Query().
		Where(credittransaction.PaymentIDIn(ids...), credittransaction.KindEQ(credittransaction.KindRollover)).IDs(ctx)
	if err != nil {
		return fmt.Errorf("payments: reading the rollovers into an ended period: %w", err)
	}
	if len(rolled) > 0 {
		more, err := c.CreditLot.Query().Where(creditlot.TransactionIDIn(rolled...)).IDs(ctx)
		if err != nil {
			return fmt.Errorf("payments: reading the rolled-over lots of an ended period: %w", err)
		}
		lots = append(lots, more...)
	}
	plan, err := c.CreditPlan.Get(ctx, *next.PlanID)
	if err != nil {
		return fmt.Errorf("payments: reading plan %v: %w", next.PlanID, err)
	}
	nextLot, err := c.CreditLot.Query().Where(creditlot.PaymentID(next.ID)).First(ctx)
	if err != nil {
		return fmt.Errorf("payments: reading the lot of payment %s: %w", next.ID, err)
	}
	end := ledger.PeriodEnd{
		UserID: sub.UserID, LotIDs: lots, Rule: string(plan.Rollover), NextExpiresAt: *nextLot.ExpiresAt,
		PaymentID:      next.ID,
		IdempotencyKey: fmt.Sprintf("rollover:%s:%d", sub.ID, next.PeriodStart.Unix()),
	}
	if plan.RolloverCap != nil {
		end.Cap = *plan.RolloverCap
	}
	_, err = t.EndPeriod(ctx, webhookActor, end)
	return err
}
