package outbound

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/payments"
)

// Types are the outbound event types an endpoint may subscribe to.
var Types = []string{
	ledger.EventBalanceLow, ledger.EventBalanceDepleted, ledger.EventBalanceRecovered,
	ledger.EventCreditsExpiring, ledger.EventCreditsExpired,
	payments.EventPaymentSucceeded, payments.EventPaymentFailed, payments.EventPaymentRefunded,
	payments.EventPaymentDisputed, payments.EventPaymentDisputeClosed,
	payments.EventRechargeSucceeded, payments.EventRechargeFailed, payments.EventRechargeActionRequired,
	payments.EventRechargeDisabled,
	payments.EventSubscriptionActivated, payments.EventSubscriptionRenewed, payments.EventSubscriptionPastDue,
	payments.EventSubscriptionCanceled,
}

// KnownType says whether t is an event type Tally sends.
func KnownType(t string) bool { return slices.Contains(Types, t) }

// body is what every delivery of an event posts: the Standard Webhooks
// envelope.
type body struct {
	Type      string         `json:"type"`
	Timestamp string         `json:"timestamp"`
	Data      map[string]any `json:"data"`
}

// payload is the JSON body of ev, with the user and the balances as of its
// commit beside what its type adds.
func payload(ev ledger.Event, externalID string, b ledger.Balance) ([]byte, error) {
	data := make(map[string]any, len(ev.Data)+3)
	for k, v := range ev.Data {
		data[k] = v
	}
	data["user"] = map[string]string{"id": ev.User.ID, "externalId": externalID}
	data["creditsBalance"] = b.Balance
	data["availableCredits"] = b.Available
	out, err := json.Marshal(body{Type: ev.Type, Timestamp: ev.At.UTC().Format(time.RFC3339Nano), Data: data})
	if err != nil {
		return nil, fmt.Errorf("outbound: encoding a %s event: %w", ev.Type, err)
	}
	return out, nil
}
