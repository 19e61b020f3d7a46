package auth_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/auth"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

// rsaKey is generated once: a 2048-bit key takes long enough that every test
// making its own would slow the package down.
var rsaKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func publicPEM(t *testing.T, k *rsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func hsVerifier(t *testing.T, cfg auth.VerifierConfig) *auth.Verifier {
	t.Helper()
	cfg.Secret = secret
	v, err := auth.NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// claims are valid for an hour unless a test changes them.
func claims(extra map[string]any) jwt.MapClaims {
	return with(jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}, extra)
}

// with sets the claims in extra on c, deleting those set to nil.
func with(c jwt.MapClaims, extra map[string]any) jwt.MapClaims {
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func sign(t *testing.T, method jwt.SigningMethod, key any, c jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// refused checks that err is the caller-safe UNAUTHENTICATED refusal with
// the given message.
func refused(t *testing.T, err error, msg string) {
	t.Helper()
	e, ok := apperr.As(err)
	if !ok || e.Code != apperr.Unauthenticated || e.Message != msg {
		t.Fatalf("error %v, want UNAUTHENTICATED %q", err, msg)
	}
}

func TestHS256TokenGivesItsCaller(t *testing.T) {
	v := hsVerifier(t, auth.VerifierConfig{})
	got, err := v.Verify(sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"role": "admin", "email": "a@example.com"})))
	if err != nil {
		t.Fatal(err)
	}
	if want := (auth.Caller{Subject: "alice", Role: auth.RoleAdmin, Email: "a@example.com", Expires: got.Expires}); got != want || got.Expires.IsZero() {
		t.Fatalf("caller %+v, want %+v with the token's expiry", got, want)
	}
}

func TestRS256TokenGivesItsCaller(t *testing.T) {
	v, err := auth.NewVerifier(auth.VerifierConfig{PublicKeyPEM: publicPEM(t, rsaKey())})
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.Verify(sign(t, jwt.SigningMethodRS256, rsaKey(), claims(map[string]any{"sub": "billing-backend", "role": "service"})))
	if err != nil {
		t.Fatal(err)
	}
	if got.Subject != "billing-backend" || got.Role != auth.RoleService {
		t.Fatalf("caller %+v", got)
	}
}

func TestMissingRoleIsAUser(t *testing.T) {
	v := hsVerifier(t, auth.VerifierConfig{})
	got, err := v.Verify(sign(t, jwt.SigningMethodHS256, secret, claims(nil)))
	if err != nil || got.Role != auth.RoleUser {
		t.Fatalf("caller %+v, %v; want role user", got, err)
	}
}

func TestClockLeewayIsSmall(t *testing.T) {
	v := hsVerifier(t, auth.VerifierConfig{})
	justExpired := claims(map[string]any{"exp": time.Now().Add(-10 * time.Second).Unix()})
	if _, err := v.Verify(sign(t, jwt.SigningMethodHS256, secret, justExpired)); err != nil {
		t.Fatalf("a token 10s past expiry is within the clock leeway: %v", err)
	}
	almostValid := claims(map[string]any{"nbf": time.Now().Add(10 * time.Second).Unix()})
	if _, err := v.Verify(sign(t, jwt.SigningMethodHS256, secret, almostValid)); err != nil {
		t.Fatalf("a token valid in 10s is within the clock leeway: %v", err)
	}
}

func TestRefusedTokens(t *testing.T) {
	hour := time.Hour
	good := sign(t, jwt.SigningMethodHS256, secret, claims(nil))
	parts := strings.Split(good, ".")
	payload, _ := json.Marshal(claims(map[string]any{"role": "admin"}))
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload) + "." + parts[2]
	none := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(map[string]any{"role": "admin"}))
	hs512 := sign(t, jwt.SigningMethodHS512, secret, claims(nil))

	cases := []struct {
		name, token, msg string
	}{
		{"empty", "", "missing bearer token"},
		{"garbage", "not-a-jwt", "malformed token"},
		{"two segments", parts[0] + "." + parts[1], "malformed token"},
		{"huge", strings.Repeat("a", 10000), "token too large"},
		{"expired", sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"exp": time.Now().Add(-hour).Unix()})), "token expired"},
		{"not yet valid", sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"nbf": time.Now().Add(hour).Unix()})), "token not valid yet"},
		{"no exp", sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"exp": nil})), "token has no expiry"},
		{"exp not a number", sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"exp": "tomorrow"})), "malformed token"},
		{"wrong secret", sign(t, jwt.SigningMethodHS256, []byte("another secret, just as long as that"), claims(nil)), "invalid token signature"},
		{"tampered payload", tampered, "invalid token signature"},
		{"alg none", none, "token algorithm not accepted"},
		{"alg none without signature", strings.TrimSuffix(none, "."), "malformed token"},
		{"another HMAC", hs512, "token algorithm not accepted"},
		{"no sub", sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"sub": nil})), "token subject is empty"},
		{"empty sub", sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"sub": ""})), "token subject is empty"},
		{"blank sub", sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"sub": "  "})), "token subject is empty"},
		{"long sub", sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"sub": strings.Repeat("x", 256)})), "token subject is longer than 255 bytes"},
		{"control in sub", sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"sub": "al\nice"})), "token subject contains control characters"},
		{"unknown role", sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"role": "root"})), "token role not accepted"},
		{"empty role", sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"role": ""})), "token role not accepted"},
		{"role in another case", sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"role": "Admin"})), "token role not accepted"},
		{"role not a string", sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"role": 1})), "malformed token"},
	}
	v := hsVerifier(t, auth.VerifierConfig{})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := v.Verify(c.token)
			refused(t, err, c.msg)
			if got != (auth.Caller{}) {
				t.Fatalf("a refused token still gave a caller: %+v", got)
			}
		})
	}
}

// TestAlgorithmConfusionIsRefused is the classic attack on RS256: the public
// key is public, so an HS256 token "signed" with its PEM bytes must fail.
func TestAlgorithmConfusionIsRefused(t *testing.T) {
	pub := publicPEM(t, rsaKey())
	v, err := auth.NewVerifier(auth.VerifierConfig{PublicKeyPEM: pub})
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(sign(t, jwt.SigningMethodHS256, pub, claims(map[string]any{"role": "admin"})))
	refused(t, err, "token algorithm not accepted")

	// And the other way: an RS256 token against an HS256 verifier.
	hs := hsVerifier(t, auth.VerifierConfig{})
	_, err = hs.Verify(sign(t, jwt.SigningMethodRS256, rsaKey(), claims(nil)))
	refused(t, err, "token algorithm not accepted")

	// Another key pair's signature is a bad signature, not an accepted token.
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(sign(t, jwt.SigningMethodRS256, other, claims(nil)))
	refused(t, err, "invalid token signature")
}

func TestIssuerAndAudienceAreCheckedWhenConfigured(t *testing.T) {
	v := hsVerifier(t, auth.VerifierConfig{Issuer: "https://id.example.com/", Audience: "tally"})
	ok := claims(map[string]any{"iss": "https://id.example.com/", "aud": []string{"other", "tally"}})
	if _, err := v.Verify(sign(t, jwt.SigningMethodHS256, secret, ok)); err != nil {
		t.Fatalf("matching issuer and one matching audience: %v", err)
	}
	cases := []struct {
		name  string
		extra map[string]any
		msg   string
	}{
		{"wrong issuer", map[string]any{"iss": "https://evil.example.com/"}, "token issuer not accepted"},
		{"no issuer", map[string]any{"iss": nil}, "token issuer not accepted"},
		{"wrong audience", map[string]any{"aud": "billing"}, "token audience not accepted"},
		{"no audience", map[string]any{"aud": nil}, "token audience not accepted"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bad := with(claims(map[string]any{"iss": "https://id.example.com/", "aud": "tally"}), c.extra)
			_, err := v.Verify(sign(t, jwt.SigningMethodHS256, secret, bad))
			refused(t, err, c.msg)
		})
	}

	// Not configured: not checked.
	open := hsVerifier(t, auth.VerifierConfig{})
	if _, err := open.Verify(sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"iss": "anyone", "aud": "anything"}))); err != nil {
		t.Fatalf("issuer and audience are not checked unless configured: %v", err)
	}
}

func TestNewVerifierRefusesBadKeys(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	private := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey())})
	cases := map[string]struct {
		cfg  auth.VerifierConfig
		want string
	}{
		"nothing":     {auth.VerifierConfig{}, "no HS256 secret or RS256 public key"},
		"both":        {auth.VerifierConfig{Secret: secret, PublicKeyPEM: publicPEM(t, rsaKey())}, "not both"},
		"not PEM":     {auth.VerifierConfig{PublicKeyPEM: []byte("ssh-rsa AAAA")}, "not PEM"},
		"private key": {auth.VerifierConfig{PublicKeyPEM: private}, "private key"},
		"weak key":    {auth.VerifierConfig{PublicKeyPEM: publicPEM(t, small)}, "1024 bits"},
	}
	for name, c := range cases {
		_, err := auth.NewVerifier(c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one mentioning %q", name, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "PRIVATE KEY-----") {
			t.Errorf("%s: the error quotes the key: %v", name, err)
		}
	}
}

func TestMintedTokensVerify(t *testing.T) {
	v := hsVerifier(t, auth.VerifierConfig{Issuer: "tally-dev", Audience: "tally"})
	token, err := auth.Mint(secret, auth.MintClaims{Subject: "bob", Role: auth.RoleService, Email: "b@example.com", Issuer: "tally-dev", Audience: "tally"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.Verify(token)
	if err != nil {
		t.Fatal(err)
	}
	if want := (auth.Caller{Subject: "bob", Role: auth.RoleService, Email: "b@example.com", Expires: got.Expires}); got != want {
		t.Fatalf("caller %+v, want %+v", got, want)
	}
	if d := time.Until(got.Expires); d < 59*time.Minute || d > time.Hour {
		t.Fatalf("the caller expires in %v; the token was minted for an hour", d)
	}

	token, err = auth.Mint(secret, auth.MintClaims{Subject: "carol"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := hsVerifier(t, auth.VerifierConfig{}).Verify(token); err != nil || got.Role != auth.RoleUser {
		t.Fatalf("default role: %+v, %v", got, err)
	}
}

func TestMintRefusesWhatVerifyWouldRefuse(t *testing.T) {
	cases := map[string]struct {
		secret []byte
		claims auth.MintClaims
		ttl    time.Duration
	}{
		"no secret":    {nil, auth.MintClaims{Subject: "a"}, time.Hour},
		"no subject":   {secret, auth.MintClaims{}, time.Hour},
		"long subject": {secret, auth.MintClaims{Subject: strings.Repeat("x", 256)}, time.Hour},
		"bad role":     {secret, auth.MintClaims{Subject: "a", Role: "root"}, time.Hour},
		"zero ttl":     {secret, auth.MintClaims{Subject: "a"}, 0},
		"negative ttl": {secret, auth.MintClaims{Subject: "a"}, -time.Minute},
	}
	for name, c := range cases {
		if tok, err := auth.Mint(c.secret, c.claims, c.ttl); err == nil {
			t.Errorf("%s: minted %s", name, tok)
		}
	}
}

func TestParseRole(t *testing.T) {
	for _, r := range []auth.Role{auth.RoleUser, auth.RoleService, auth.RoleAdmin} {
		if got, err := auth.ParseRole(string(r)); err != nil || got != r {
			t.Errorf("ParseRole(%q) = %q, %v", r, got, err)
		}
	}
	for _, s := range []string{"", "root", "ADMIN", " user"} {
		if _, err := auth.ParseRole(s); err == nil {
			t.Errorf("ParseRole(%q) accepted", s)
		}
	}
}

// TestVerifyIsSafeForConcurrentUse: one Verifier serves every request.
func TestVerifyIsSafeForConcurrentUse(t *testing.T) {
	v := hsVerifier(t, auth.VerifierConfig{Issuer: "idp"})
	good := sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"iss": "idp"}))
	bad := sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"iss": "other"}))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				if _, err := v.Verify(good); err != nil {
					t.Error(err)
					return
				}
				if _, err := v.Verify(bad); err == nil {
					t.Error("wrong issuer accepted")
					return
				}
			}
		})
	}
	wg.Wait()
}

// A token verified once is remembered, but only until its expiry: the clock
// is checked on every use, so a remembered token is refused once it expires
// exactly as a fresh one would be, and a token refused for being early is
// accepted once its time comes.
func TestRememberedTokensStillExpire(t *testing.T) {
	v := hsVerifier(t, auth.VerifierConfig{})
	now := time.Now()
	v.SetClock(func() time.Time { return now })
	tok := sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"exp": now.Add(time.Minute).Unix()}))
	for range 2 {
		if got, err := v.Verify(tok); err != nil || got.Subject != "alice" {
			t.Fatalf("a valid token: %+v, %v", got, err)
		}
	}
	now = now.Add(time.Minute + auth.Leeway + time.Second)
	_, err := v.Verify(tok)
	refused(t, err, "token expired")

	early := sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"nbf": now.Add(time.Hour).Unix(), "exp": now.Add(2 * time.Hour).Unix()}))
	_, err = v.Verify(early)
	refused(t, err, "token not valid yet")
	now = now.Add(time.Hour)
	if _, err := v.Verify(early); err != nil {
		t.Fatalf("the token's time has come: %v", err)
	}
}

// Remembering a token never lets another string through: a token that
// differs from a remembered one in its signature is checked afresh.
func TestRememberedTokenDoesNotVouchForATamperedOne(t *testing.T) {
	v := hsVerifier(t, auth.VerifierConfig{})
	tok := sign(t, jwt.SigningMethodHS256, secret, claims(nil))
	if _, err := v.Verify(tok); err != nil {
		t.Fatal(err)
	}
	// A character well inside the signature: the last one carries padding
	// bits that decoding ignores.
	i := len(tok) - 10
	flipped := byte('A')
	if tok[i] == 'A' {
		flipped = 'z'
	}
	_, err := v.Verify(tok[:i] + string(flipped) + tok[i+1:])
	refused(t, err, "invalid token signature")
}
