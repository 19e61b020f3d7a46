package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	stripewebhook "github.com/stripe/stripe-go/v76/webhook"
)

// The fuzz targets of the Stripe-Signature header. The verifier is checked
// against a reference written here from Stripe's documentation of the
// scheme (HMAC-SHA256 over "<t>.<body>", any v1 may match, t within the
// tolerance of now either way), with its own HMAC and its own arithmetic for
// the tolerance (big integers, so that no time.Duration overflow can agree
// with an overflow in the code under test).

// fuzzSecrets are configured as during a rotation: a delivery signed with
// either verifies.
var fuzzSecrets = []string{secret, "whsec_test_rotated_in"}

// signatureKinds are the refusals the package documents; verify returns
// nothing else.
var signatureKinds = []error{ErrNoSignature, ErrMalformedSignature, ErrSignatureMismatch, ErrTimestampOutside}

// stripeMAC is the independent signer: the hex HMAC-SHA256 of "<t>.<body>"
// keyed with the whole secret, as Stripe documents it.
func stripeMAC(key string, t int64, body []byte) string {
	m := hmac.New(sha256.New, []byte(key))
	fmt.Fprintf(m, "%d.", t)
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// referenceVerify says which refusal, if any, a header deserves.
func referenceVerify(header string, body []byte, secrets []string, tolerance time.Duration, at time.Time) error {
	if header == "" {
		return ErrNoSignature
	}
	var ts *big.Int
	var sigs []string
	for _, item := range strings.Split(header, ",") {
		item = strings.TrimSpace(item)
		eq := strings.IndexByte(item, '=')
		if eq < 0 {
			return ErrMalformedSignature
		}
		key, value := item[:eq], item[eq+1:]
		switch key {
		case "t":
			n, ok := new(big.Int).SetString(value, 10)
			if ts != nil || !ok || !n.IsInt64() {
				return ErrMalformedSignature
			}
			ts = n
		case "v1":
			// A v1 that is not hex can never match and is skipped like an
			// unknown scheme; hex is compared by value (either case).
			if _, err := hex.DecodeString(value); err == nil {
				sigs = append(sigs, strings.ToLower(value))
			}
		}
	}
	if ts == nil || len(sigs) == 0 {
		return ErrMalformedSignature
	}
	matched := false
	for _, s := range secrets {
		want := stripeMAC(s, ts.Int64(), body)
		for _, sig := range sigs {
			matched = matched || sig == want
		}
	}
	if !matched {
		return ErrSignatureMismatch
	}
	skew := new(big.Int).Sub(big.NewInt(at.Unix()), ts)
	limit := big.NewInt(int64(tolerance / time.Second))
	if skew.CmpAbs(limit) > 0 {
		return ErrTimestampOutside
	}
	return nil
}

// checkKind fails unless err is exactly the refusal want (nil: accepted).
func checkKind(t *testing.T, what string, err, want error) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("%s: refused with %v, want accepted", what, err)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Fatalf("%s: got %v, want %v", what, err, want)
	}
	for _, other := range signatureKinds {
		if other != want && errors.Is(err, other) {
			t.Fatalf("%s: %v is two kinds of refusal at once", what, err)
		}
	}
}

// postSigned delivers body with header through the real handler and checks
// that a refused signature is a 400 naming its kind that reaches nothing.
func postSigned(t *testing.T, body []byte, header string, want error) {
	t.Helper()
	f := newFixture(t, func(o *Options) { o.Secrets = fuzzSecrets })
	rec := f.post(body, header)
	if want == nil {
		if rec.Code == http.StatusBadRequest && strings.Contains(rec.Body.String(), "invalid signature") {
			t.Fatalf("a valid signature was refused by the handler: %s", rec.Body)
		}
		return
	}
	if rec.Code != http.StatusBadRequest {
		t.Fatalf("refused signature (%v): status %d, want 400", want, rec.Code)
	}
	if msg := errorBody(t, rec); msg != "invalid signature: "+want.Error() {
		t.Fatalf("refused signature: error %q, want the %q reason", msg, want)
	}
	if f.proc.calls() != 0 {
		t.Fatal("a refused signature reached the processor")
	}
}

// FuzzSignatureHeader feeds arbitrary headers and bodies to the verifier:
// it must agree with the reference on every input, refuse with one of the
// package's kinds only, and the handler must answer a refusal 400 without
// calling the processor.
func FuzzSignatureHeader(f *testing.F) {
	body := event("evt_fuzz", "checkout.session.completed", "2023-10-16")
	ts := now.Unix()
	good := stripeMAC(secret, ts, body)
	t0 := strconv.FormatInt(ts, 10)
	seeds := []string{
		"t=" + t0 + ",v1=" + good,                                       // accepted
		"v1=" + good + ",t=" + t0,                                       // order does not matter
		"t=" + t0 + ",v1=" + strings.ToUpper(good),                      // hex of either case is the same bytes
		"t=" + t0 + ",v1=" + stripeMAC(fuzzSecrets[1], ts, body),        // the second secret of a rotation
		" t=" + t0 + " ,\tv1=" + good + " ",                             // spaces around items are trimmed
		"t=" + t0 + ",v0=" + good,                                       // v0 only: Stripe's test scheme is never enough
		"t=" + t0 + ",v1=",                                              // an empty v1 decodes to nothing and matches nothing
		"t=,v1=" + good,                                                 // an empty timestamp
		"t=" + t0 + ",t=" + t0 + ",v1=" + good,                          // a second t, even equal, is refused
		"t=+" + t0 + ",v1=" + good,                                      // a sign: the same number, so the same MAC
		"t=0" + t0 + ",v1=" + good,                                      // a leading zero: the same number
		"t= " + t0 + ",v1=" + good,                                      // a space inside the value is not trimmed
		"T=" + t0 + ",V1=" + good,                                       // keys are case-sensitive
		"t=" + t0 + ".5,v1=" + good,                                     // not an integer
		"t=0x6553f100,v1=" + good,                                       // not decimal
		"t=١٧٠٠٠٠٠٠٠٠,v1=" + good,                                       // non-ASCII digits
		"t=99999999999999999999999,v1=" + good,                          // past int64
		"t=9223372036854775807,v1=" + good,                              // the largest int64: time.Unix overflows inside
		"t=-9223372036854775808,v1=" + good,                             // the smallest
		"t=" + t0 + ",v1=" + good + ",v1=zz",                            // a non-hex v1 beside a valid one is skipped
		"t=" + t0 + "," + strings.Repeat("v1=00,", 2000) + "v1=" + good, // many items
		strings.Repeat("v1=", 1000) + "t=" + t0,                         // items without a comma between them
		"t",                                                             // no "="
		"=",                                                             // an empty key
		",",                                                             // empty items
		"\x00",                                                          // NUL
		"t=\xff",                                                        // invalid UTF-8
		"garbage",                                                       // not key=value at all
	}
	for _, h := range seeds {
		f.Add(h, body)
	}
	f.Add("t="+t0+",v1="+stripeMAC(secret, ts, nil), []byte(nil)) // an empty body signs too
	f.Add("", body)                                               // no header at all

	f.Fuzz(func(t *testing.T, header string, body []byte) {
		// The server reads at most http.DefaultMaxHeaderBytes of headers (it
		// sets no MaxHeaderBytes of its own) and refuses larger requests
		// before any handler runs.
		if len(header) > http.DefaultMaxHeaderBytes || len(body) > DefaultMaxBody {
			return
		}
		want := referenceVerify(header, body, fuzzSecrets, DefaultTolerance, now)
		checkKind(t, fmt.Sprintf("verify(%q)", header), verify(header, body, fuzzSecrets, DefaultTolerance, now), want)
		postSigned(t, body, header, want)
	})
}

// FuzzSignedDelivery signs deliveries with the independent signer at a
// fuzzed distance from now, then changes one thing at a time: a signed
// delivery verifies exactly when its timestamp is within the tolerance, and
// any change to the body, the signature's bytes or the timestamp is a
// mismatch.
func FuzzSignedDelivery(f *testing.F) {
	body := event("evt_fuzz", "checkout.session.completed", "2023-10-16")
	tol := int64(DefaultTolerance / time.Second)
	for _, off := range []int64{0, -tol, tol, -tol - 1, tol + 1, 1 << 40, -(1 << 40), math.MaxInt64, math.MinInt64} {
		f.Add(body, off, uint16(7), byte(1))
	}
	f.Add([]byte{}, int64(0), uint16(0), byte(0x80))
	f.Add([]byte("{\"id\":\"evt_\\u0000\"}\x00\xff"), int64(-3), uint16(63), byte(0xff))

	f.Fuzz(func(t *testing.T, body []byte, offset int64, at uint16, flip byte) {
		if len(body) > DefaultMaxBody {
			return
		}
		// The timestamp is now plus the offset, when that is an int64.
		ts := now.Unix() + offset
		if (offset > 0 && ts < now.Unix()) || (offset < 0 && ts > now.Unix()) {
			return
		}
		inside := offset >= -int64(DefaultTolerance/time.Second) && offset <= int64(DefaultTolerance/time.Second)
		sig := stripeMAC(secret, ts, body)
		header := fmt.Sprintf("t=%d,v1=%s", ts, sig)

		want := error(nil)
		if !inside {
			want = ErrTimestampOutside
		}
		checkKind(t, "signed delivery", verify(header, body, fuzzSecrets, DefaultTolerance, now), want)
		postSigned(t, body, header, want)
		// Stripe's own library reads the header the same way.
		if err := stripewebhook.ValidatePayloadIgnoringTolerance(body, header, secret); err != nil {
			t.Fatalf("stripe-go refuses the independent signer's header %q: %v", header, err)
		}
		// Signed with the other secret of a rotation, and with a secret
		// that is not configured.
		checkKind(t, "second secret", verify(fmt.Sprintf("t=%d,v1=%s", ts, stripeMAC(fuzzSecrets[1], ts, body)), body, fuzzSecrets, DefaultTolerance, now), want)
		checkKind(t, "unknown secret", verify(fmt.Sprintf("t=%d,v1=%s", ts, stripeMAC(otherSecret, ts, body)), body, fuzzSecrets, DefaultTolerance, now), ErrSignatureMismatch)

		// One byte of the body changed.
		if len(body) > 0 {
			tampered := append([]byte(nil), body...)
			tampered[int(at)%len(body)] ^= flip | 1
			checkKind(t, "tampered body", verify(header, tampered, fuzzSecrets, DefaultTolerance, now), ErrSignatureMismatch)
			postSigned(t, tampered, header, ErrSignatureMismatch)
		}

		// One hex digit of the signature changed to another value; or to a
		// character that is not hex, which leaves no usable v1.
		i := int(at) % len(sig)
		digits := "0123456789abcdef"
		mutated, wantSig := []byte(sig), ErrSignatureMismatch
		if flip&0x80 != 0 {
			mutated[i], wantSig = "gxz-=, "[int(flip)%7], ErrMalformedSignature
			if mutated[i] == ',' || mutated[i] == ' ' {
				// A comma splits the v1 in two; a space ends the item early:
				// both leave hex digits that are no signature, or non-hex.
				wantSig = referenceVerify(fmt.Sprintf("t=%d,v1=%s", ts, mutated), body, fuzzSecrets, DefaultTolerance, now)
			}
		} else {
			old := strings.IndexByte(digits, sig[i])
			mutated[i] = digits[(old+1+int(flip)%15)%16]
		}
		checkKind(t, "tampered signature", verify(fmt.Sprintf("t=%d,v1=%s", ts, mutated), body, fuzzSecrets, DefaultTolerance, now), wantSig)
		if wantSig == nil {
			t.Fatalf("a mutated signature %q verifies", mutated)
		}

		// The timestamp changed (by 1 to 256 seconds, either way) while the
		// signature stays: the signed text no longer matches, whether or
		// not the new time is within the tolerance.
		delta := int64(flip)%128 + 1
		if flip&1 == 1 {
			delta = -delta
		}
		if moved := ts + delta; (delta > 0) == (moved > ts) {
			checkKind(t, "moved timestamp", verify(fmt.Sprintf("t=%d,v1=%s", moved, sig), body, fuzzSecrets, DefaultTolerance, now), ErrSignatureMismatch)
		}

		// Hostile company for a valid signature: v0 and unknown schemes are
		// skipped, a second timestamp is refused, and without the v1 the
		// v0 alone is not enough.
		checkKind(t, "with v0 and v9", verify(fmt.Sprintf("v0=%s,t=%d,v9=x,v1=%s", sig, ts, sig), body, fuzzSecrets, DefaultTolerance, now), want)
		checkKind(t, "two timestamps", verify(fmt.Sprintf("t=%d,t=%d,v1=%s", ts, ts, sig), body, fuzzSecrets, DefaultTolerance, now), ErrMalformedSignature)
		checkKind(t, "v0 only", verify(fmt.Sprintf("t=%d,v0=%s", ts, sig), body, fuzzSecrets, DefaultTolerance, now), ErrMalformedSignature)
	})
}
