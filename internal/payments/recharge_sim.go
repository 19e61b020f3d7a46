package payments

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/autorecharge"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/pulid"
)

// Simulated auto-recharge (`tally simulate card` and `simulate recharge`):
// a card saved as a Checkout with saveCard would save it, and the
// payment_intent events Stripe would send about a recharge's off-session
// charge. Without a Stripe key the recharge job leaves the payment PENDING
// for these events (see rechargeWorker.Work).

// RechargeOutcome is how a simulated recharge's charge ends.
type RechargeOutcome string

// The outcomes of a simulated recharge.
const (
	RechargeSucceeded              RechargeOutcome = "succeeded"
	RechargeDeclined               RechargeOutcome = "declined"
	RechargeAuthenticationRequired RechargeOutcome = "authentication_required"
)

// RechargeOutcomes are the outcomes simulate recharge takes.
var RechargeOutcomes = []RechargeOutcome{RechargeSucceeded, RechargeDeclined, RechargeAuthenticationRequired}

// ErrNoRechargeInFlight is SimulatedRechargeOf's answer for a user without
// a recharge waiting for its outcome; its text is the hint a developer
// reads.
var ErrNoRechargeInFlight = errors.New("no recharge in flight: turn auto-recharge on (setAutoRecharge) and spend below the threshold")

// SimulatedUser is the user with the external id, created if new, as a
// first request with their token would.
func SimulatedUser(ctx context.Context, client *ent.Client, externalUserID string) (*ent.User, error) {
	u, err := client.User.Query().Where(user.ExternalID(externalUserID)).Only(ctx)
	if ent.IsNotFound(err) {
		u, err = client.User.Create().SetExternalID(externalUserID).Save(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("payments: finding user %s: %w", externalUserID, err)
	}
	return u, nil
}

// SimulatedCard is the test card (Visa 4242, expiring in three years) a
// simulation saves for the user: customer cus_sim_<user id>, a new payment
// method each time, as a new Checkout would give.
func SimulatedCard(userID string, now time.Time) Card {
	return Card{
		CustomerID: "cus_sim_" + userID, PaymentMethodID: "pm_sim_" + pulid.New("x")[2:],
		Brand: "visa", Last4: "4242", ExpMonth: 12, ExpYear: now.Year() + 3,
	}
}

// SimulatedRechargeOf is the user's recharge in flight (PENDING, or
// AWAITING_PAYMENT while the customer is asked to authenticate) with the
// user's settings, ErrNoRechargeInFlight when there is none.
func SimulatedRechargeOf(ctx context.Context, client *ent.Client, userID string) (*ent.Payment, *ent.AutoRecharge, error) {
	p, err := client.Payment.Query().
		Where(payment.UserID(userID), payment.KindEQ(payment.KindRECHARGE),
			payment.StatusIn(payment.StatusPending, payment.StatusAwaitingPayment)).
		Order(ent.Desc(payment.FieldCreatedAt), ent.Desc(payment.FieldID)).
		First(ctx)
	if ent.IsNotFound(err) {
		return nil, nil, ErrNoRechargeInFlight
	}
	if err != nil {
		return nil, nil, fmt.Errorf("payments: reading the recharge in flight of %s: %w", userID, err)
	}
	a, err := client.AutoRecharge.Query().Where(autorecharge.UserID(userID)).Only(ctx)
	if err != nil && !ent.IsNotFound(err) {
		return nil, nil, fmt.Errorf("payments: reading the auto-recharge of %s: %w", userID, err)
	}
	return p, a, nil
}

// SimulatedRechargeEvent is the event Stripe sends when the recharge's
// off-session charge ends with outcome: payment_intent.succeeded, or
// payment_intent.payment_failed with the card error a declined card or a
// bank asking for authentication gives (status requires_payment_method).
// The intent is the one the recharge already names, else pi_sim_<payment
// id>; a (nil-able) settings row supplies the customer.
func SimulatedRechargeEvent(p *ent.Payment, a *ent.AutoRecharge, outcome RechargeOutcome) ([]byte, error) {
	id := intentOf(p)
	pi := map[string]any{
		"id": id, "object": "payment_intent", "amount": p.Amount, "currency": p.Currency, "client_secret": id + "_secret_sim",
		"metadata": map[string]string{rechargeRef: p.ID, "user_id": p.UserID, "package_id": packageID(p)},
	}
	if a != nil && a.StripeCustomerID != "" {
		pi["customer"] = a.StripeCustomerID
		pi["payment_method"] = a.StripePaymentMethodID
	}
	switch outcome {
	case RechargeSucceeded:
		pi["status"] = "succeeded"
		pi["amount_received"] = p.Amount
		pi["latest_charge"] = "ch_sim_" + p.ID
		return simulatedEvent("payment_intent.succeeded", pi)
	case RechargeDeclined:
		pi["status"] = "requires_payment_method"
		pi["last_payment_error"] = map[string]any{
			"type": "card_error", "code": "card_declined", "decline_code": "generic_decline",
			"message": "Your card was declined.",
		}
	case RechargeAuthenticationRequired:
		pi["status"] = "requires_payment_method"
		pi["last_payment_error"] = map[string]any{
			"type": "card_error", "code": "authentication_required",
			"message": "Your card was declined. This transaction requires authentication.",
		}
	default:
		return nil, apperr.Invalid("outcome", "a recharge's outcome is succeeded, declined or authentication_required, not %q", outcome)
	}
	return simulatedEvent("payment_intent.payment_failed", pi)
}
