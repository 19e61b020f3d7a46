package payments

import (
	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/internal/ledger"
)

// Outbound event types of the payment state machine (package outbound
// delivers them).
const (
	EventPaymentSucceeded     = "payment.succeeded"
	EventPaymentFailed        = "payment.failed"
	EventPaymentRefunded      = "payment.refunded"
	EventPaymentDisputed      = "payment.disputed"
	EventPaymentDisputeClosed = "payment.dispute_closed"

	EventRechargeSucceeded      = "recharge.succeeded"
	EventRechargeFailed         = "recharge.failed"
	EventRechargeActionRequired = "recharge.action_required"
	EventRechargeDisabled       = "recharge.disabled"
)

// paymentFacts is what a payment event says of its payment.
type paymentFacts struct {
	id, userID, currency string
	amount, credits      int64
	amountRefunded       int64
	status               payment.Status
}

func factsOf(p *ent.Payment) paymentFacts {
	return paymentFacts{id: p.ID, userID: p.UserID, currency: p.Currency, amount: p.Amount, credits: p.Credits,
		amountRefunded: p.AmountRefunded, status: p.Status}
}

// tell writes a payment event in the transaction that moved the payment,
// with its state after the move.
func tell(t *ledger.Tx, typ string, f paymentFacts, extra map[string]any) {
	data := map[string]any{"payment": map[string]any{
		"id": f.id, "status": f.status, "amount": f.amount, "currency": f.currency,
		"credits": f.credits, "amountRefunded": f.amountRefunded,
	}}
	for k, v := range extra {
		data[k] = v
	}
	t.Emit(ledger.Event{Type: typ, User: &ent.User{ID: f.userID}, Data: data})
}

// sessionEvent is the event of a Checkout Session's move to status, if
// that move is one the application is told of.
func sessionEvent(status payment.Status) (string, bool) {
	switch status {
	case payment.StatusSucceeded:
		return EventPaymentSucceeded, true
	case payment.StatusFailed, payment.StatusExpired:
		return EventPaymentFailed, true
	}
	return "", false
}
