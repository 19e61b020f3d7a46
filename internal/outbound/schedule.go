package outbound

import (
	"math/rand/v2"
	"time"
)

// retryAfter is how long after each failed attempt the next one is made:
// about 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, then daily, so that the
// last of the ten attempts comes a little over three days after the first.
var retryAfter = []time.Duration{
	5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour,
	5 * time.Hour, 10 * time.Hour, 10 * time.Hour, 24 * time.Hour, 24 * time.Hour,
}

// nextDelay is the wait after the given number of failed attempts, with
// ±10% jitter so that the retries of an outage do not arrive together;
// false when none is left.
func nextDelay(schedule []time.Duration, attempts int) (time.Duration, bool) {
	if attempts < 1 || attempts > len(schedule) {
		return 0, false
	}
	base := schedule[attempts-1]
	jitter := time.Duration(rand.Int64N(int64(base)/5+1)) - base/10
	return base + jitter, true
}
