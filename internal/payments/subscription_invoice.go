package payments

import (
	"context"
	"fmt"
	"slices"
	"time"

	"entgo.io/ent/dialect/sql"
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
	o := observation{mark: eventMark(ev), periodStart: &start, periodEnd: &end}
	if periodInvoice(inv) {
		o.status = statusPtr(creditsubscription.StatusActive)
	}
	if inv.Subscription != nil {
		o.stripeSubscriptionID = inv.Subscription.ID
	}
	credits, amount, err := invoiceCredits(inv, plan)
	if err != nil {
		return decision{}, nil, err
	}
	if amount <= 0 || credits <= 0 {
		_, err := s.observe(ctx, t, sub, o)
		return ignored("an invoice of %d grants no credits", amount), nil, err
	}
	paidAt := invoicePaidAt(ev, inv)
	p, refused, err := s.insertInvoicePayment(ctx, t, sub, plan, inv, invoiceFacts{amount, credits, start, end, paidAt})
	if refused != nil || err != nil {
		return *refused, nil, err
	}
	grant := purchaseGrant(p)
	expires := lotExpiry(end, plan.Interval, paidAt, t.Now())
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

// applyInvoiceFailed marks the subscription PAST_DUE when a renewal was
// declined, unless the invoice was paid after all (a retry that
// succeeded, delivered first).
func (s *Service) applyInvoiceFailed(ctx context.Context, t *ledger.Tx, ev *stripe.Event, sub *ent.CreditSubscription, inv *stripe.Invoice) (decision, *ent.Payment, error) {
	known, err := t.Ent().Payment.Query().Where(payment.StripeInvoiceID(inv.ID)).Only(ctx)
	if err == nil {
		return ignored("invoice %s is paid", inv.ID), known, nil
	}
	if !ent.IsNotFound(err) {
		return decision{}, nil, fmt.Errorf("payments: reading the payment of invoice %s: %w", inv.ID, err)
	}
	if !periodInvoice(inv) || inv.BillingReason == stripe.InvoiceBillingReasonSubscriptionCreate {
		// A declined change of plan leaves the subscription as it was;
		// a declined first invoice leaves it INCOMPLETE (Checkout asks
		// the customer again).
		return ignored("a declined %s invoice does not change the subscription", inv.BillingReason), nil, nil
	}
	_, err = s.observe(ctx, t, sub, observation{mark: eventMark(ev), status: statusPtr(creditsubscription.StatusPastDue)})
	return applied(), nil, err
}

// subscriptionLine is the invoice line that names the period paid for: the
// subscription's own line, else (an invoice of prorations alone) the
// first charged line with a period, else the first with one.
func subscriptionLine(inv *stripe.Invoice) *stripe.InvoiceLineItem {
	if inv.Lines == nil {
		return nil
	}
	var charged, first *stripe.InvoiceLineItem
	for _, l := range inv.Lines.Data {
		if l == nil || l.Period == nil || l.Period.End <= l.Period.Start {
			continue
		}
		if l.Type == stripe.InvoiceLineItemTypeSubscription && !l.Proration {
			return l
		}
		// Of a change's prorations, the new plan's (what is charged),
		// not the refund of the old one's unused time.
		if charged == nil && l.Amount > 0 {
			charged = l
		}
		if first == nil {
			first = l
		}
	}
	if charged != nil {
		return charged
	}
	return first
}

// invoicePlan is the plan the line's price belongs to, else the
// subscription's.
func invoicePlan(ctx context.Context, c *ent.Client, sub *ent.CreditSubscription, line *stripe.InvoiceLineItem) (*ent.CreditPlan, error) {
	if line.Price != nil && line.Price.ID != "" {
		plan, err := planOfPrice(ctx, c, sub.PlanID, line.Price.ID)
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

// planOfPrice is the plan sold at a Stripe price: the subscription's own
// when it is, else the oldest (several plans may share a price).
func planOfPrice(ctx context.Context, c *ent.Client, subPlanID, priceID string) (*ent.CreditPlan, error) {
	return c.CreditPlan.Query().Where(creditplan.StripePriceID(priceID)).
		Order(func(s *sql.Selector) {
			s.OrderExpr(sql.ExprP("CASE WHEN "+s.C(creditplan.FieldID)+" = ? THEN 0 ELSE 1 END", subPlanID))
		}, creditplan.ByID()).
		First(ctx)
}

// periodInvoice says whether an invoice pays a period (the first or a
// renewal), as opposed to a change of plan within one.
func periodInvoice(inv *stripe.Invoice) bool {
	return inv.BillingReason == stripe.InvoiceBillingReasonSubscriptionCreate ||
		inv.BillingReason == stripe.InvoiceBillingReasonSubscriptionCycle
}

// invoiceCredits is what an invoice grants, and the amount its payment
// records. A period's invoice (the first or a renewal) grants the plan's
// credits, however it was paid (by card, or from the customer's Stripe
// balance: then amount_paid is 0 and the total is what was paid). An
// invoice for a change within the period grants what the change cost
// before tax: the plan's credits in that proportion of a period's price,
// rounded down, at most a period's. An invoice of nothing (a trial, a
// full discount, a downgrade) grants nothing.
func invoiceCredits(inv *stripe.Invoice, plan *ent.CreditPlan) (credits, amount int64, err error) {
	amount = inv.AmountPaid
	if amount <= 0 {
		amount = inv.Total
	}
	if amount <= 0 {
		return 0, 0, nil
	}
	if inv.BillingReason != stripe.InvoiceBillingReasonSubscriptionUpdate {
		return plan.CreditsPerPeriod, amount, nil
	}
	cost := inv.TotalExcludingTax
	if cost <= 0 {
		cost = amount
	}
	n, err := ledger.MulDiv(plan.CreditsPerPeriod, min(cost, plan.PriceAmount), plan.PriceAmount)
	if err != nil {
		return 0, 0, fmt.Errorf("payments: credits of invoice %s: %w", inv.ID, err)
	}
	return n, amount, nil
}

// invoicePaidAt is when Stripe says the invoice was paid (else when the
// event was made): whether a period was paid late is a fact of the
// invoice, not of when Tally hears of it.
func invoicePaidAt(ev *stripe.Event, inv *stripe.Invoice) time.Time {
	if inv.StatusTransitions != nil && inv.StatusTransitions.PaidAt > 0 {
		return time.Unix(inv.StatusTransitions.PaidAt, 0).UTC()
	}
	return time.Unix(ev.Created, 0).UTC()
}

// paidLate says whether a payment paid for its period after it ended
// (Stripe retried a declined renewal for weeks): its credits then keep
// for an interval of their own, and its period is not closed into the
// next one's.
func paidLate(p *ent.Payment) bool {
	return p.PaidAt != nil && p.PeriodEnd != nil && !p.PeriodEnd.After(*p.PaidAt)
}

// lotExpiry is when a period's credits expire: at the period's end, or,
// for an invoice paid after its period ended, one interval after it was
// paid: the customer paid for a period of credits. An invoice Tally hears
// of only after that (an outage longer than the interval) still grants
// them, for a minute.
func lotExpiry(periodEnd time.Time, interval creditplan.Interval, paidAt, now time.Time) time.Time {
	expires := periodEnd
	if !expires.After(paidAt) {
		expires = paidAt.AddDate(0, 1, 0)
		if interval == creditplan.IntervalYear {
			expires = paidAt.AddDate(1, 0, 0)
		}
	}
	if !expires.After(now) {
		expires = now.Add(time.Minute)
	}
	return expires
}

// invoiceFacts is what a paid invoice's payment records.
type invoiceFacts struct {
	amount, credits  int64
	start, end, paid time.Time
}

// insertInvoicePayment writes the SUBSCRIPTION payment of a paid invoice.
// Fields out of bounds (an id too long, no currency) refuse the event.
func (s *Service) insertInvoicePayment(ctx context.Context, t *ledger.Tx, sub *ent.CreditSubscription, plan *ent.CreditPlan,
	inv *stripe.Invoice, f invoiceFacts,
) (*ent.Payment, *decision, error) {
	create := t.Ent().Payment.Create().
		SetUserID(sub.UserID).
		SetKind(payment.KindSUBSCRIPTION).
		SetPlanID(plan.ID).
		SetSubscriptionID(sub.ID).
		SetStripeInvoiceID(inv.ID).
		SetAmount(f.amount).
		SetCurrency(string(inv.Currency)).
		SetCredits(f.credits).
		SetStatus(payment.StatusSucceeded).
		SetLivemode(inv.Livemode).
		SetPaidAt(f.paid).
		SetPeriodStart(f.start).
		SetPeriodEnd(f.end)
	if inv.PaymentIntent != nil && inv.PaymentIntent.ID != "" {
		create.SetStripePaymentIntentID(inv.PaymentIntent.ID)
	}
	if inv.Charge != nil && inv.Charge.ID != "" {
		create.SetStripeChargeID(inv.Charge.ID)
	}
	p, err := create.Save(ctx)
	if ent.IsValidationError(err) {
		d := failed("invoice fields out of bounds: %v", err)
		return nil, &d, nil
	}
	if ent.IsConstraintError(err) {
		return nil, nil, fmt.Errorf("payments: invoice %s recorded concurrently: %w", inv.ID, ledger.ErrRetry)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("payments: writing the payment of invoice %s: %w", inv.ID, err)
	}
	return p, nil, nil
}

// closePeriods closes, around a newly paid period, the period that ended
// where it starts (a renewal) and, when its successor was paid first, the
// new period itself into that successor.
func (s *Service) closePeriods(ctx context.Context, t *ledger.Tx, sub *ent.CreditSubscription, p *ent.Payment) error {
	c := t.Ent()
	bySub := payment.And(payment.SubscriptionID(sub.ID), payment.KindEQ(payment.KindSUBSCRIPTION))
	ended, err := c.Payment.Query().Where(bySub, payment.PeriodEnd(*p.PeriodStart)).Order(payment.ByID()).All(ctx)
	if err != nil {
		return fmt.Errorf("payments: reading the period before invoice %v: %w", p.StripeInvoiceID, err)
	}
	ended = slices.DeleteFunc(ended, paidLate)
	if len(ended) > 0 {
		if err := s.closePeriod(ctx, t, sub, ended, p); err != nil {
			return err
		}
	}
	if paidLate(p) {
		return nil
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
	same, err := c.Payment.Query().Where(bySub, payment.PeriodEnd(*p.PeriodEnd)).Order(payment.ByID()).All(ctx)
	if err != nil {
		return fmt.Errorf("payments: reading the period of invoice %v: %w", p.StripeInvoiceID, err)
	}
	return s.closePeriod(ctx, t, sub, slices.DeleteFunc(same, paidLate), next)
}

// closePeriod ends the period the payments paid for into next's: its lots
// expire and the rule of next's plan rolls some over, keyed by the
// subscription and the new period's start.
func (s *Service) closePeriod(ctx context.Context, t *ledger.Tx, sub *ent.CreditSubscription, ended []*ent.Payment, next *ent.Payment) error {
	if len(ended) == 0 {
		return nil
	}
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

// reclosePeriod closes again, into the period after it, the period of a
// subscription payment whose dispute was won: the credits the dispute held
// are back in a lot that may have expired since, and the plan's rule then
// rolls them over as it would have at the renewal.
func (s *Service) reclosePeriod(ctx context.Context, t *ledger.Tx, p *ent.Payment) error {
	if p.Kind != payment.KindSUBSCRIPTION || p.SubscriptionID == nil {
		return nil
	}
	sub, err := t.Ent().CreditSubscription.Get(ctx, *p.SubscriptionID)
	if err != nil {
		return fmt.Errorf("payments: reading subscription %s of payment %s: %w", *p.SubscriptionID, p.ID, err)
	}
	return s.closePeriods(ctx, t, sub, p)
}
