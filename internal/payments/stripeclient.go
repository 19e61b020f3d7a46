package payments

import (
	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"
)

// newStripeClient returns a client on Stripe's API, or on cfg.APIBase.
func newStripeClient(cfg Config) *client.API {
	var backends *stripe.Backends
	if cfg.APIBase != "" {
		backends = &stripe.Backends{
			API: stripe.GetBackendWithConfig(stripe.APIBackend, &stripe.BackendConfig{
				URL:           stripe.String(cfg.APIBase),
				LeveledLogger: &stripe.LeveledLogger{Level: stripe.LevelError},
			}),
		}
	}
	sc := &client.API{}
	sc.Init(cfg.SecretKey, backends)
	return sc
}
