package auth

import (
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/tally-billing/tally/internal/apperr"
)

// leeway absorbs clock skew between the issuer and Tally for exp and nbf,
// without keeping an expired token useful for long.
const leeway = 30 * time.Second

// maxTokenLen bounds the work done on a header before its signature is
// checked; real tokens are a few hundred bytes.
const maxTokenLen = 8 << 10

// verifiedCacheSize bounds the cache of verified tokens (a token and its
// caller are a few hundred bytes).
const verifiedCacheSize = 10_000

// minRSABits refuses keys that are too weak to trust for admin tokens.
const minRSABits = 2048

// DevSignatureHint is the refusal of a token with a bad signature in
// development, where the usual cause is a token minted for another
// database (each has its own development secret).
const DevSignatureHint = "invalid token signature: signed with a different development secret; mint tokens with tally token and the same DATABASE_URL as the server"

// VerifierConfig says which tokens to accept. Exactly one of Secret and
// PublicKeyPEM must be set; it fixes the only algorithm accepted.
type VerifierConfig struct {
	// Secret is the HS256 key, used as given (not base64-decoded).
	Secret []byte
	// PublicKeyPEM is the RS256 key of the issuer: a PEM "PUBLIC KEY",
	// "RSA PUBLIC KEY" or certificate.
	PublicKeyPEM []byte
	// Issuer and Audience, when not empty, must match the token's `iss` and
	// one of its `aud`; a token without the claim is then refused.
	Issuer   string
	Audience string
	// DevelopmentSecret says Secret is the development secret Tally made
	// itself: a token with a bad signature was then most likely minted
	// for another database, and the refusal says so. Never in production.
	DevelopmentSecret bool
}

// Verifier checks bearer tokens. It is safe for concurrent use.
type Verifier struct {
	alg      string
	key      any
	issuer   string
	audience string
	parser   *jwt.Parser
	devHint  bool
	// verified remembers tokens whose signature and claims checked out, with
	// the window in which they are valid. A token is immutable bytes, so the
	// same string always verifies the same way but for the clock, which is
	// checked on every use; this spares each request of a client that
	// reuses its token the signature check and the JSON decoding (an RS256
	// verification is much dearer than the rest of a balance read).
	verified *lru.Cache[string, verifiedToken]
	now      func() time.Time
}

type verifiedToken struct {
	caller    Caller
	notBefore time.Time // zero: no nbf
	expires   time.Time
}

func (t verifiedToken) validAt(now time.Time) bool {
	return now.Before(t.expires.Add(leeway)) && (t.notBefore.IsZero() || !now.Before(t.notBefore.Add(-leeway)))
}

// NewVerifier checks cfg and returns a Verifier for it.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	verified, err := lru.New[string, verifiedToken](verifiedCacheSize)
	if err != nil {
		return nil, err
	}
	v := &Verifier{issuer: cfg.Issuer, audience: cfg.Audience, verified: verified, now: time.Now, devHint: cfg.DevelopmentSecret}
	switch {
	case len(cfg.Secret) > 0 && len(cfg.PublicKeyPEM) > 0:
		return nil, errors.New("set an HS256 secret or an RS256 public key, not both")
	case len(cfg.Secret) > 0:
		v.alg = jwt.SigningMethodHS256.Alg()
		// A copy, so that the caller clearing or reusing its slice cannot
		// change the key under a running server.
		v.key = append([]byte(nil), cfg.Secret...)
	case len(cfg.PublicKeyPEM) > 0:
		key, err := parsePublicKey(cfg.PublicKeyPEM)
		if err != nil {
			return nil, err
		}
		v.alg = jwt.SigningMethodRS256.Alg()
		v.key = key
	default:
		return nil, errors.New("no HS256 secret or RS256 public key to verify tokens with")
	}
	opts := []jwt.ParserOption{
		// Only the configured algorithm: this is what stops "none" and an
		// HS256 token signed with the (public) RSA key.
		jwt.WithValidMethods([]string{v.alg}),
		jwt.WithExpirationRequired(),
		// One spelling per signature: non-zero spare bits in base64 refused.
		jwt.WithStrictDecoding(),
		jwt.WithLeeway(leeway),
		jwt.WithTimeFunc(func() time.Time { return v.now() }),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

func parsePublicKey(data []byte) (*rsa.PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("the RS256 public key is not PEM (expected -----BEGIN PUBLIC KEY-----)")
	}
	if strings.Contains(block.Type, "PRIVATE") {
		// Worth its own message: the private key must not sit in the API's
		// configuration at all.
		return nil, errors.New("the RS256 key given is a private key; configure the public key only")
	}
	key, err := jwt.ParseRSAPublicKeyFromPEM(data)
	if err != nil {
		return nil, fmt.Errorf("the RS256 public key: %w", err)
	}
	if key.N.BitLen() < minRSABits {
		return nil, fmt.Errorf("the RS256 public key has %d bits; at least %d are required", key.N.BitLen(), minRSABits)
	}
	return key, nil
}

// Verify checks the token's signature, algorithm, times, issuer and audience
// and returns its caller. Every refusal is an *apperr.Error with code
// UNAUTHENTICATED and a message safe to show the client.
func (v *Verifier) Verify(token string) (Caller, error) {
	if token == "" {
		return Caller{}, unauthenticated("missing bearer token")
	}
	if len(token) > maxTokenLen {
		return Caller{}, unauthenticated("token too large")
	}
	if t, ok := v.verified.Get(token); ok {
		if t.validAt(v.now()) {
			return t.caller, nil
		}
		// Expired (or not yet valid): the full check below names which.
		v.verified.Remove(token)
	}
	var c claims
	tok, err := v.parser.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		// WithValidMethods already refused other algorithms; checking again
		// here keeps the key from ever reaching another algorithm's code.
		if t.Method.Alg() != v.alg {
			return nil, errors.New("unexpected algorithm")
		}
		return v.key, nil
	})
	if err != nil {
		return Caller{}, v.refusal(tok, &c, err)
	}
	if why := externalIDProblem(c.Subject); why != "" {
		return Caller{}, unauthenticated("token subject " + why)
	}
	role := RoleUser
	if c.Role != nil {
		if role, err = ParseRole(*c.Role); err != nil {
			return Caller{}, unauthenticated("token role not accepted")
		}
	}
	if why := emailProblem(c.Email); why != "" {
		return Caller{}, unauthenticated("token email " + why)
	}
	if _, ok := tok.Header["crit"]; ok {
		// RFC 7515: a recipient that does not understand every critical
		// extension must refuse the token; Tally understands none.
		return Caller{}, unauthenticated("token has critical header parameters")
	}
	caller := Caller{Subject: c.Subject, Role: role, Email: c.Email, Expires: c.ExpiresAt.Time}
	entry := verifiedToken{caller: caller, expires: c.ExpiresAt.Time}
	if c.NotBefore != nil {
		entry.notBefore = c.NotBefore.Time
	}
	if entry.validAt(v.now()) {
		v.verified.Add(token, entry)
	}
	return caller, nil
}

// refusal turns a jwt error into a message that names the problem without
// revealing anything the client could not already see in its own token. The
// claims are read only once the signature is known to be good: jwt validates
// them after checking the signature.
func (v *Verifier) refusal(tok *jwt.Token, c *claims, err error) error {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return unauthenticated("malformed token")
	case errors.Is(err, jwt.ErrTokenUnverifiable),
		errors.Is(err, jwt.ErrTokenSignatureInvalid) && tok != nil && tok.Method != nil && tok.Method.Alg() != v.alg:
		return unauthenticated("token algorithm not accepted")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid) && v.devHint:
		return unauthenticated(DevSignatureHint)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return unauthenticated("invalid token signature")
	case !errors.Is(err, jwt.ErrTokenInvalidClaims):
		return unauthenticated("invalid token")
	// jwt reports a missing claim the same way for exp, iss and aud, so the
	// claims themselves say which one it was.
	case c.ExpiresAt == nil:
		return unauthenticated("token has no expiry")
	case errors.Is(err, jwt.ErrTokenExpired):
		return unauthenticated("token expired")
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return unauthenticated("token not valid yet")
	case v.issuer != "" && c.Issuer != v.issuer:
		return unauthenticated("token issuer not accepted")
	case v.audience != "" && !slices.Contains(c.Audience, v.audience):
		return unauthenticated("token audience not accepted")
	}
	return unauthenticated("invalid token")
}

func unauthenticated(msg string) error {
	return &apperr.Error{Code: apperr.Unauthenticated, Message: msg}
}
