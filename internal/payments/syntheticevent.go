package payments

import (
	"encoding/json"
	"fmt"

	"github.com/stripe/stripe-go/v76"
)

// syntheticEvent builds the event that should have announced a Stripe
// object, with an id derived from it so that repeats are one event.
func (s *Service) syntheticEvent(id, typ string, object any) (*stripe.Event, []byte, error) {
	return s.syntheticEventAt(id, typ, s.now().Unix(), object)
}

// syntheticEventAt is syntheticEvent created at a given time (Unix
// seconds): events are ordered by it.
func (s *Service) syntheticEventAt(id, typ string, created int64, object any) (*stripe.Event, []byte, error) {
	raw, err := json.Marshal(object)
	if err != nil {
		return nil, nil, fmt.Errorf("payments: encoding %s: %w", id, err)
	}
	// In the server's mode: it describes an object of the account the key
	// reads, and an event of the other mode would be refused.
	payload, err := json.Marshal(map[string]any{
		"id": id, "object": "event", "type": typ, "api_version": APIVersion, "livemode": s.livemode,
		"created": created, "data": map[string]json.RawMessage{"object": raw},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("payments: encoding %s: %w", id, err)
	}
	var ev stripe.Event
	if err := json.Unmarshal(payload, &ev); err != nil {
		return nil, nil, fmt.Errorf("payments: decoding %s: %w", id, err)
	}
	return &ev, payload, nil
}
