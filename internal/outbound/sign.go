package outbound

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// secretPrefix marks a Standard Webhooks secret; what follows is standard
// base64 of the HMAC key.
const secretPrefix = "whsec_"

// The specification asks for keys of 24 to 64 bytes; shorter ones are weak
// and anything else is most likely a pasted value of some other kind.
const (
	minKeyBytes = 24
	maxKeyBytes = 64
	newKeyBytes = 32
)

// userAgent names the sender to the application's endpoint.
const userAgent = "Tally-Webhooks/1"

// NewSecret returns a new endpoint secret: "whsec_" + standard base64 of 32
// random bytes (crypto/rand).
func NewSecret() (string, error) {
	key := make([]byte, newKeyBytes)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("outbound: new secret: %w", err)
	}
	return secretPrefix + base64.StdEncoding.EncodeToString(key), nil
}

// Sign returns the value of the webhook-signature header for one attempt:
// "v1,<sig>" for each secret, space-separated, in the order given (the
// current secret first, then the one being rotated out). An invalid secret
// is an error; so are no secret at all and an empty id (the receiver could
// not verify either).
func Sign(id string, at time.Time, body []byte, secrets ...string) (string, error) {
	if err := checkID(id); err != nil {
		return "", err
	}
	if len(secrets) == 0 {
		return "", errors.New("outbound: sign: no secret")
	}
	sigs := make([]string, 0, len(secrets))
	for i, secret := range secrets {
		if err := checkSecret(secret); err != nil {
			// The secret itself never goes into the message.
			return "", fmt.Errorf("outbound: sign: secret %d: %w", i+1, err)
		}
		wh, err := standardwebhooks.NewWebhook(secret)
		if err != nil {
			return "", fmt.Errorf("outbound: sign: secret %d: invalid", i+1)
		}
		sig, err := wh.Sign(id, at, body)
		if err != nil {
			return "", fmt.Errorf("outbound: sign: %w", err)
		}
		sigs = append(sigs, sig)
	}
	return strings.Join(sigs, " "), nil
}

// Headers returns the three Standard Webhooks headers plus Content-Type:
// application/json and a User-Agent "Tally-Webhooks/1" for one attempt.
func Headers(id string, at time.Time, body []byte, secrets ...string) (http.Header, error) {
	sig, err := Sign(id, at, body, secrets...)
	if err != nil {
		return nil, err
	}
	h := make(http.Header, 5)
	h.Set(standardwebhooks.HeaderWebhookID, id)
	h.Set(standardwebhooks.HeaderWebhookTimestamp, strconv.FormatInt(at.Unix(), 10))
	h.Set(standardwebhooks.HeaderWebhookSignature, sig)
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", userAgent)
	return h, nil
}

// checkSecret insists on the whsec_ prefix even though the library would
// take a bare key: an unprefixed value is more likely a mistake than a key.
func checkSecret(secret string) error {
	b64, ok := strings.CutPrefix(secret, secretPrefix)
	if !ok {
		return errors.New(`invalid: it must start with "whsec_"`)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return errors.New("invalid: not standard base64 after whsec_")
	}
	if len(key) < minKeyBytes || len(key) > maxKeyBytes {
		return fmt.Errorf("invalid: key of %d bytes, want %d to %d", len(key), minKeyBytes, maxKeyBytes)
	}
	return nil
}

// checkID refuses ids that cannot travel in a header or be verified.
func checkID(id string) error {
	if id == "" {
		return errors.New("outbound: sign: empty message id")
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c >= 0x7f {
			return errors.New("outbound: sign: message id must be printable ASCII without spaces")
		}
	}
	return nil
}
