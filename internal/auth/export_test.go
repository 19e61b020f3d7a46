package auth

import "time"

// SetClock makes v read the time from now, for tests of expiry.
func (v *Verifier) SetClock(now func() time.Time) { v.now = now }

// Leeway is the clock skew tolerated on exp and nbf.
const Leeway = leeway
