package config

import (
	"fmt"
	"time"
)

// Outbound configures the events Tally sends to the application's
// endpoints.
type Outbound struct {
	// LowBalanceThreshold is the threshold of users without their own; 0:
	// no balance events for them.
	LowBalanceThreshold int64
	// AllowHTTP lets endpoints use plain http (development default).
	AllowHTTP bool
	// AllowPrivate lets endpoints be on loopback, private or link-local
	// addresses (development default); production refuses them, after
	// DNS resolution too, so that an admin's endpoint cannot reach the
	// server's own network.
	AllowPrivate bool
	// Timeout bounds one delivery attempt.
	Timeout time.Duration
	// Workers is how many deliveries this process sends at once.
	Workers int
	// ExpiryNotice is how long before a lot expires the application is
	// told (credits.expiring).
	ExpiryNotice time.Duration
	// JobTimeout bounds one attempt of any background job (a long check
	// goes on from its progress in the next attempt).
	JobTimeout time.Duration
	// RescueAfter is how long a job may run before it is taken for one
	// whose process died and run again (at least twice JobTimeout).
	RescueAfter time.Duration
}

// maxThreshold is the ledger's largest amount (ledger.MaxAmount, which
// this package cannot import).
const maxThreshold = 1<<53 - 1

func (c *Config) loadOutbound(r *reader, dev bool) {
	c.Outbound = Outbound{
		LowBalanceThreshold: int64(r.intRange("TALLY_LOW_BALANCE_THRESHOLD", 0, 0, maxThreshold)),
		AllowHTTP:           r.boolean("TALLY_WEBHOOK_ALLOW_HTTP", dev),
		AllowPrivate:        r.boolean("TALLY_WEBHOOK_ALLOW_PRIVATE", dev),
		Timeout:             r.duration("TALLY_WEBHOOK_TIMEOUT", 10*time.Second),
		Workers:             r.intRange("TALLY_WEBHOOK_WORKERS", 32, 1, 1000),
		JobTimeout:          r.duration("TALLY_JOB_TIMEOUT", 2*time.Minute),
		ExpiryNotice:        r.duration("TALLY_EXPIRY_NOTICE", 72*time.Hour),
	}
	c.Outbound.RescueAfter = r.duration("TALLY_JOB_RESCUE_AFTER", 2*c.Outbound.JobTimeout+time.Minute)
	if c.Outbound.Timeout <= 0 || c.Outbound.Timeout > 30*time.Second {
		r.fail("TALLY_WEBHOOK_TIMEOUT", fmt.Sprintf("between 1ms and %s", 30*time.Second))
	}
	if c.Outbound.JobTimeout < 2*c.Outbound.Timeout {
		r.fail("TALLY_JOB_TIMEOUT", "at least twice TALLY_WEBHOOK_TIMEOUT (a delivery is one attempt of a job)")
	}
	if c.Outbound.RescueAfter < 2*c.Outbound.JobTimeout {
		r.fail("TALLY_JOB_RESCUE_AFTER", "at least twice TALLY_JOB_TIMEOUT, so that a job still running is never run twice")
	}
}
