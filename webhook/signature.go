package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SignatureHeader is the header Stripe signs deliveries in.
const SignatureHeader = "Stripe-Signature"

// DefaultTolerance is Stripe's own recommendation for how far a signature's
// timestamp may drift from the receiver's clock.
const DefaultTolerance = 300 * time.Second

// Reasons a delivery's signature is refused. They are distinct so that the
// log (and the Stripe dashboard, which shows our answer) tells clock skew
// apart from a wrong secret.
var (
	ErrNoSignature        = errors.New("missing Stripe-Signature header")
	ErrMalformedSignature = errors.New("malformed Stripe-Signature header")
	ErrSignatureMismatch  = errors.New("no valid v1 signature for the configured secrets")
	ErrTimestampOutside   = errors.New("signature timestamp outside the tolerance")
)

// Sign returns a Stripe-Signature header value for payload as Stripe would
// send it, signed with secret at t. The webhook tests and `tally simulate`
// use it to post events that the handler accepts.
func Sign(payload []byte, secret string, t time.Time) string {
	ts := t.Unix()
	return fmt.Sprintf("t=%d,v1=%s", ts, hex.EncodeToString(mac(secret, ts, payload)))
}

// mac is Stripe's v1 scheme: HMAC-SHA256 keyed with the whole secret
// (whsec_ prefix included) over "<timestamp>.<raw body>".
func mac(secret string, ts int64, payload []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(strconv.FormatInt(ts, 10)))
	m.Write([]byte{'.'})
	m.Write(payload)
	return m.Sum(nil)
}

// parsedHeader is a Stripe-Signature header: one timestamp and the v1
// signatures. Stripe sends several v1 values while a secret is being rolled,
// one per active secret.
type parsedHeader struct {
	timestamp int64
	v1        [][]byte
}

// parseHeader reads "t=<unix>,v1=<hex>,v1=<hex>,v0=<hex>". v0 (Stripe's
// test-only scheme) and unknown schemes are skipped so that a scheme Stripe
// adds later does not break deliveries; a v1 value that is not hex can never
// match and is skipped the same way. A second t is refused: there is no
// honest reason for one, and picking either would be a guess.
func parseHeader(header string) (parsedHeader, error) {
	var p parsedHeader
	seenT := false
	for _, item := range strings.Split(header, ",") {
		key, value, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok {
			return parsedHeader{}, fmt.Errorf("%w: item %q is not key=value", ErrMalformedSignature, item)
		}
		switch key {
		case "t":
			if seenT {
				return parsedHeader{}, fmt.Errorf("%w: more than one timestamp", ErrMalformedSignature)
			}
			ts, err := strconv.ParseInt(value, 10, 64)
			if err != nil {
				return parsedHeader{}, fmt.Errorf("%w: timestamp %q is not a number", ErrMalformedSignature, value)
			}
			p.timestamp, seenT = ts, true
		case "v1":
			if sig, err := hex.DecodeString(value); err == nil {
				p.v1 = append(p.v1, sig)
			}
		}
	}
	if !seenT {
		return parsedHeader{}, fmt.Errorf("%w: no timestamp", ErrMalformedSignature)
	}
	if len(p.v1) == 0 {
		return parsedHeader{}, fmt.Errorf("%w: no v1 signature", ErrMalformedSignature)
	}
	return p, nil
}

// verify checks header against payload: some v1 signature must match some
// secret (several are configured while a secret is rolled), and the
// timestamp must be within tolerance of now in either direction — a future
// timestamp would otherwise extend a captured delivery's replay window.
//
// The signature is checked before the timestamp so that "outside the
// tolerance" is only ever said of a genuinely signed delivery, which points
// at clock skew or a replay rather than at a wrong secret.
func verify(header string, payload []byte, secrets []string, tolerance time.Duration, now time.Time) error {
	if header == "" {
		return ErrNoSignature
	}
	p, err := parseHeader(header)
	if err != nil {
		return err
	}
	if !anyMatch(p, payload, secrets) {
		return ErrSignatureMismatch
	}
	skew := now.Sub(time.Unix(p.timestamp, 0))
	if skew > tolerance || skew < -tolerance {
		return fmt.Errorf("%w: %s off, tolerance %s", ErrTimestampOutside, skew.Round(time.Second), tolerance)
	}
	return nil
}

// anyMatch compares every pair without stopping early, so the time taken
// says nothing about which secret or which signature came close.
func anyMatch(p parsedHeader, payload []byte, secrets []string) bool {
	matched := false
	for _, secret := range secrets {
		expected := mac(secret, p.timestamp, payload)
		for _, sig := range p.v1 {
			if hmac.Equal(expected, sig) {
				matched = true
			}
		}
	}
	return matched
}
