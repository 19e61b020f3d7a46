// Package webhook is the REST endpoint Stripe posts events to. It is the
// transport only: body cap, signature check, dispatch to internal/payments,
// and the status code that tells Stripe whether to retry.
package webhook

import (
	"encoding/json"
	"net/http"
)

// Handler answers Stripe's webhook deliveries.
type Handler struct{}

// ServeHTTP answers 501 until Stripe event handling is built (the Stripe
// issue): Stripe retries 5xx answers for three days, so no event sent in the
// meantime is lost.
func (Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusNotImplemented)
	_ = json.NewEncoder(w).Encode(map[string]string{
		"error": "Stripe webhook handling is not implemented yet",
	})
}
