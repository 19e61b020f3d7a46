package outbound_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tally-billing/tally/internal/outbound"
)

// verify is written from the specification's text, independently of the
// library Sign uses: the signed content is "<id>.<timestamp>.<body>", the
// key is the base64 after "whsec_", the header is space-separated
// "v1,<base64 HMAC-SHA256>" entries, any of which may match.
func verify(t *testing.T, secret, id, timestamp string, body []byte, header string) bool {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		t.Fatalf("verifier: secret: %v", err)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + timestamp + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	for _, entry := range strings.Split(header, " ") {
		version, sig, ok := strings.Cut(entry, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err == nil && hmac.Equal(got, want) {
			return true
		}
	}
	return false
}

// The specification's published test vector.
const (
	vecSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vecID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vecTS     = 1614265330
	vecBody   = `{"test": 2432232314}`
	vecSig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func TestSignSpecVector(t *testing.T) {
	got, err := outbound.Sign(vecID, time.Unix(vecTS, 0), []byte(vecBody), vecSecret)
	if err != nil {
		t.Fatal(err)
	}
	if got != vecSig {
		t.Errorf("Sign = %q, want %q", got, vecSig)
	}
	if !verify(t, vecSecret, vecID, strconv.Itoa(vecTS), []byte(vecBody), vecSig) {
		t.Error("the independent verifier rejects the specification's own vector")
	}
	if verify(t, vecSecret, vecID, strconv.Itoa(vecTS+1), []byte(vecBody), vecSig) {
		t.Error("the verifier accepts the vector under another timestamp")
	}
}

func TestSignRotation(t *testing.T) {
	current, err := outbound.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	old, err := outbound.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	other, err := outbound.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	at := time.Unix(1700000000, 999_000_000) // sub-second part must not show
	body := []byte(`{"type":"credits.granted","data":{"amount":5}}`)
	sig, err := outbound.Sign("msg_1", at, body, current, old)
	if err != nil {
		t.Fatal(err)
	}
	entries := strings.Split(sig, " ")
	if len(entries) != 2 {
		t.Fatalf("signature header %q: want 2 entries", sig)
	}
	for i, secret := range []string{current, old} {
		if !verify(t, secret, "msg_1", "1700000000", body, entries[i]) {
			t.Errorf("entry %d does not verify with secret %d (order: current, then old)", i, i)
		}
		if verify(t, secret, "msg_1", "1700000000", body, entries[1-i]) {
			t.Errorf("entry %d verifies with the other secret", 1-i)
		}
	}
	if verify(t, other, "msg_1", "1700000000", body, sig) {
		t.Error("a wrong secret verifies the header")
	}
	if verify(t, current, "msg_1", "1700000000", append(body, ' '), sig) {
		t.Error("a changed body verifies")
	}
}

func TestHeaders(t *testing.T) {
	secret, err := outbound.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"a":1}`)
	h, err := outbound.Headers("msg_2", time.Unix(1614265330, 0), body, secret)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"webhook-id":        "msg_2",
		"webhook-timestamp": "1614265330",
		"Content-Type":      "application/json",
		"User-Agent":        "Tally-Webhooks/1",
	}
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if !verify(t, secret, h.Get("webhook-id"), h.Get("webhook-timestamp"), body, h.Get("webhook-signature")) {
		t.Errorf("webhook-signature %q does not verify", h.Get("webhook-signature"))
	}
	if len(h) != 5 {
		t.Errorf("headers %v: want exactly 5", h)
	}
}

func TestSignRefuses(t *testing.T) {
	good, _ := outbound.NewSecret()
	short := "whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 16))
	long := "whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 65))
	cases := []struct {
		name    string
		id      string
		secrets []string
	}{
		{"no secret", "msg", nil},
		{"no prefix", "msg", []string{strings.TrimPrefix(good, "whsec_")}},
		{"not base64", "msg", []string{"whsec_not*base64!"}},
		{"empty key", "msg", []string{"whsec_"}},
		{"key too short", "msg", []string{short}},
		{"key too long", "msg", []string{long}},
		{"second secret bad", "msg", []string{good, "whsec_%%%"}},
		{"empty id", "", []string{good}},
		{"id with newline", "msg\nX-Evil: 1", []string{good}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sig, err := outbound.Sign(c.id, time.Now(), []byte("{}"), c.secrets...)
			if err == nil {
				t.Fatalf("Sign = %q, want an error", sig)
			}
			if _, err := outbound.Headers(c.id, time.Now(), []byte("{}"), c.secrets...); err == nil {
				t.Fatal("Headers: want an error")
			}
			for _, s := range c.secrets {
				if len(s) > len("whsec_") && strings.Contains(err.Error(), strings.TrimPrefix(s, "whsec_")) {
					t.Errorf("error %q shows the secret", err)
				}
			}
		})
	}
}

func TestNewSecret(t *testing.T) {
	a, err := outbound.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	b, err := outbound.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	if a == b {
		t.Fatal("two secrets are equal")
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(a, "whsec_"))
	if !strings.HasPrefix(a, "whsec_") || err != nil || len(key) != 32 {
		t.Errorf("secret %q: want whsec_ + base64 of 32 bytes (%v, %d bytes)", a, err, len(key))
	}
}
