package payments

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/pulid"
)

// Simulated events let a developer walk a purchase through Tally without
// Stripe: `tally simulate` writes the pending payment a Checkout would have
// written and posts the events Stripe would send, signed with the
// webhook's secret. They are shaped like Stripe's (API version 2023-10-16)
// but carry only the fields Tally reads.

// SimulatedPayment writes a pending payment of the pack for the user with
// the external id (created if new), as createCheckoutSession would.
func SimulatedPayment(ctx context.Context, client *ent.Client, externalUserID, packageID string) (*ent.Payment, error) {
	u, err := SimulatedUser(ctx, client, externalUserID)
	if err != nil {
		return nil, err
	}
	pkg, err := client.CreditPackage.Get(ctx, packageID)
	if ent.IsNotFound(err) {
		return nil, apperr.New(apperr.NotFound, "no credit pack with id %q", packageID)
	}
	if err != nil {
		return nil, fmt.Errorf("payments: reading pack %s: %w", packageID, err)
	}
	p, err := client.Payment.Create().
		SetUserID(u.ID).SetPackageID(pkg.ID).
		SetAmount(pkg.PriceAmount).SetCurrency(pkg.Currency).SetCredits(pkg.Credits).
		SetStripeCheckoutSessionID("cs_sim_" + pulid.New("x")[2:]).
		Save(ctx)
	if err != nil {
		return nil, fmt.Errorf("payments: writing the simulated payment: %w", err)
	}
	return p, nil
}

func simulatedEvent(typ string, object map[string]any) ([]byte, error) {
	return json.Marshal(map[string]any{
		"id": "evt_sim_" + pulid.New("x")[2:], "object": "event", "type": typ,
		"api_version": APIVersion, "created": time.Now().Unix(), "livemode": false,
		"data": map[string]any{"object": object},
	})
}

// SimulatedCheckoutCompleted is the event of a paid Checkout Session.
func SimulatedCheckoutCompleted(p *ent.Payment) ([]byte, error) {
	return simulatedEvent("checkout.session.completed", map[string]any{
		"id": *p.StripeCheckoutSessionID, "object": "checkout.session", "client_reference_id": p.ID,
		"amount_total": p.Amount, "currency": p.Currency, "payment_status": "paid",
		"payment_intent": "pi_sim_" + p.ID, "metadata": map[string]string{"user_id": p.UserID, "payment_id": p.ID},
	})
}

// SimulatedRefund is the event of the payment's charge refunded to a
// cumulative amount (minor units).
func SimulatedRefund(p *ent.Payment, cumulative int64) ([]byte, error) {
	return simulatedEvent("charge.refunded", map[string]any{
		"id": "ch_sim_" + p.ID, "object": "charge", "amount": p.Amount, "amount_refunded": cumulative,
		"currency": p.Currency, "payment_intent": intentOf(p), "refunded": cumulative >= p.Amount,
	})
}

// SimulatedDispute is the event of a dispute on the payment's charge:
// created, or closed with status "won" or "lost".
func SimulatedDispute(p *ent.Payment, closedStatus string) ([]byte, error) {
	typ, status := "charge.dispute.created", "needs_response"
	if closedStatus != "" {
		typ, status = "charge.dispute.closed", closedStatus
	}
	return simulatedEvent(typ, map[string]any{
		"id": "dp_sim_" + p.ID, "object": "dispute", "amount": p.Amount, "currency": p.Currency,
		"charge": "ch_sim_" + p.ID, "payment_intent": intentOf(p), "status": status,
	})
}

func intentOf(p *ent.Payment) string {
	if p.StripePaymentIntentID != nil {
		return *p.StripePaymentIntentID
	}
	return "pi_sim_" + p.ID
}
