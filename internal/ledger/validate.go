package ledger

import (
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tally-billing/tally/internal/apperr"
)

// Each request of the ledger validates itself, once, before any work: what
// can be said of the request alone (amounts, texts, bounds). What depends
// on the database or the clock (a balance, a reservation's state, an expiry
// in the future) is checked by the operation. Errors name the request's
// field as the API does (apperr.Invalid), for extensions.field.

// MaxReasonLength bounds the reason of a movement.
const MaxReasonLength = 1000

// Metadata bounds, Stripe's own: what fits Stripe fits Tally.
const (
	MaxMetadataKeys     = 50
	MaxMetadataKeyLen   = 40
	MaxMetadataValueLen = 500
)

// Validate checks a grant.
func (r GrantRequest) Validate() error {
	return apperr.First(
		validateAmount("amount", r.Amount),
		ValidateText("reason", r.Reason, MaxReasonLength),
		validateMetadata(r.Metadata),
	)
}

// Validate checks a spend.
func (r SpendRequest) Validate() error {
	return apperr.First(
		validateAmount("amount", r.Amount),
		ValidateText("reason", r.Reason, MaxReasonLength),
		validateMetadata(r.Metadata),
	)
}

// Validate checks a revocation.
func (r RevokeRequest) Validate() error {
	return apperr.First(
		validateAmount("amount", r.Amount),
		ValidateText("reason", r.Reason, MaxReasonLength),
	)
}

// Validate checks a clawback.
func (r ClawbackRequest) Validate() error {
	return apperr.First(
		validateAmount("amount", r.Amount),
		ValidateText("reason", r.Reason, MaxReasonLength),
	)
}

// Validate checks a dispute hold or release.
func (r PaymentRequest) Validate() error {
	return ValidateText("reason", r.Reason, MaxReasonLength)
}

// Validate checks a reservation.
func (r ReserveRequest) Validate() error {
	err := apperr.First(
		validateAmount("amount", r.Amount),
		ValidateText("reason", r.Reason, MaxReasonLength),
	)
	if err == nil && r.TTLSeconds != nil {
		// Bounded in seconds, before any multiplication: a number of
		// seconds past 2^63 nanoseconds would wrap to a short, valid TTL.
		min, max := int64(MinReservationTTL/time.Second), int64(MaxReservationTTL/time.Second)
		if s := *r.TTLSeconds; s < min || s > max {
			return apperr.Invalid("ttlSeconds", "ttlSeconds must be from %d to %d, not %d", min, max, s)
		}
	}
	return err
}

// Validate checks a capture.
func (r CaptureRequest) Validate() error {
	var amount error
	if r.Amount != nil {
		amount = validateAmount("amount", *r.Amount)
	}
	return apperr.First(amount, ValidateText("reason", r.Reason, MaxReasonLength))
}

// Validate checks a release.
func (r ReleaseRequest) Validate() error {
	return ValidateText("reason", r.Reason, MaxReasonLength)
}

func validateAmount(field string, amount int64) error {
	switch {
	case amount <= 0:
		return apperr.Invalid(field, "%s must be a positive whole number of credits, not %d", field, amount)
	case amount > MaxAmount:
		return apperr.Invalid(field, "%s %d is larger than the largest amount, %d", field, amount, MaxAmount)
	}
	return nil
}

// ValidateText checks free text a caller attaches (a reason, a name): at
// most max bytes of valid UTF-8, with no control character but tab and line
// breaks. NUL in particular: PostgreSQL refuses it in text and SQLite
// stores it, so the two databases would disagree.
func ValidateText(field, v string, max int) error {
	if len(v) > max {
		return apperr.Invalid(field, "%s is longer than %d characters", field, max)
	}
	if !utf8.ValidString(v) {
		return apperr.Invalid(field, "%s is not valid UTF-8", field)
	}
	if i := strings.IndexFunc(v, forbiddenControl); i >= 0 {
		return apperr.Invalid(field, "%s holds a control character at byte %d", field, i)
	}
	return nil
}

func forbiddenControl(r rune) bool {
	return unicode.IsControl(r) && r != '\t' && r != '\n' && r != '\r'
}

// validateMetadata bounds what a caller attaches to a movement, which is
// stored with it for good: a 1-credit spend must not carry 300 KB.
func validateMetadata(m map[string]string) error {
	if len(m) > MaxMetadataKeys {
		return apperr.Invalid("metadata", "metadata has %d keys; the limit is %d", len(m), MaxMetadataKeys)
	}
	for k, v := range m {
		if k == "" || len(k) > MaxMetadataKeyLen || strings.ContainsFunc(k, unicode.IsControl) || !utf8.ValidString(k) {
			return apperr.Invalid("metadata", "metadata keys must be 1 to %d bytes of text without control characters", MaxMetadataKeyLen)
		}
		if err := ValidateText("metadata value of "+strconv.Quote(k), v, MaxMetadataValueLen); err != nil {
			e, _ := apperr.As(err)
			e.Field = "metadata"
			return e
		}
	}
	return nil
}
