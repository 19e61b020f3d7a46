package auth_test

import (
	"crypto"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"hash"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/auth"
)

// The fuzz targets of bearer tokens build and read tokens by hand (base64url
// segments, HMAC or RSA signatures, JSON claims read with exact,
// case-sensitive names), so that they do not share a parser with the code
// under test.

// fuzzNow is the verifiers' clock.
var fuzzNow = time.Unix(1_700_000_000, 0)

const (
	fuzzIssuer   = "https://issuer.example"
	fuzzAudience = "tally-api"
	maxToken     = 8 << 10 // the documented bound on a token's length
)

// refusalMessages are every message a refusal may carry: fixed texts that
// name the problem and never echo the token.
var refusalMessages = []string{
	"missing bearer token", "token too large", "malformed token", "token algorithm not accepted",
	"invalid token signature", "invalid token", "token has no expiry", "token expired", "token not valid yet",
	"token issuer not accepted", "token audience not accepted", "token subject is empty",
	"token subject is longer than 255 bytes", "token subject contains control characters",
	"token subject is not valid UTF-8", "token subject starts or ends with white space",
	"token role not accepted", "token email too long", "token email contains control characters or invalid UTF-8",
	"token has critical header parameters",
}

// fuzzVerifiers are built once per fuzz worker: their caches of verified
// tokens fill across inputs, so the remembered path is fuzzed too.
type fuzzVerifiers struct {
	hs, rs, strict *auth.Verifier
	rsPEM          []byte
	rsKey          *rsa.PrivateKey
	configs        map[*auth.Verifier]auth.VerifierConfig
}

func newFuzzVerifiers(tb testing.TB) *fuzzVerifiers {
	tb.Helper()
	k := rsaKey()
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		tb.Fatal(err)
	}
	v := &fuzzVerifiers{rsKey: k, rsPEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}),
		configs: map[*auth.Verifier]auth.VerifierConfig{}}
	for _, c := range []struct {
		dst *(*auth.Verifier)
		cfg auth.VerifierConfig
	}{
		{&v.hs, auth.VerifierConfig{Secret: secret}},
		{&v.rs, auth.VerifierConfig{PublicKeyPEM: v.rsPEM}},
		{&v.strict, auth.VerifierConfig{Secret: secret, Issuer: fuzzIssuer, Audience: fuzzAudience}},
	} {
		if *c.dst, err = auth.NewVerifier(c.cfg); err != nil {
			tb.Fatal(err)
		}
		(*c.dst).SetClock(func() time.Time { return fuzzNow })
		v.configs[*c.dst] = c.cfg
	}
	return v
}

// checkMemoryAgrees verifies token at another time with ver, which may
// remember it, and with a fresh verifier of the same configuration: the
// answers must be the same, refusal message included.
func (v *fuzzVerifiers) checkMemoryAgrees(t *testing.T, ver *auth.Verifier, token string, later int64) {
	t.Helper()
	at := fuzzNow.Add(time.Duration(later%(1<<32)) * time.Second)
	fresh, err := auth.NewVerifier(v.configs[ver])
	if err != nil {
		t.Fatal(err)
	}
	fresh.SetClock(func() time.Time { return at })
	ver.SetClock(func() time.Time { return at })
	defer ver.SetClock(func() time.Time { return fuzzNow })
	c1, err1 := ver.Verify(token)
	c2, err2 := fresh.Verify(token)
	if c1 != c2 || apperr.CodeOf(err1) != apperr.CodeOf(err2) || (err1 != nil && err1.Error() != err2.Error()) {
		t.Fatalf("at %s the verifier that saw the token says %+v %v, a fresh one %+v %v", at, c1, err1, c2, err2)
	}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// handToken signs header and payload (raw JSON) as JWS compact
// serialization: HS* with key bytes, RS256 with an RSA key, none with
// nothing.
func handToken(header, payload []byte, alg string, key any) string {
	input := b64(header) + "." + b64(payload)
	return input + "." + b64(signature(input, alg, key))
}

// signature is alg's signature of the signing input.
func signature(input, alg string, key any) []byte {
	switch alg {
	case "HS256", "HS384", "HS512":
		h := map[string]func() hash.Hash{"HS256": sha256.New, "HS384": sha512.New384, "HS512": sha512.New}[alg]
		m := hmac.New(h, key.([]byte))
		m.Write([]byte(input))
		return m.Sum(nil)
	case "RS256":
		d := sha256.Sum256([]byte(input))
		sig, err := rsa.SignPKCS1v15(nil, key.(*rsa.PrivateKey), crypto.SHA256, d[:])
		if err != nil {
			panic(err)
		}
		return sig
	}
	return nil
}

// claimsOf reads a JSON object's members by their exact names; for a
// duplicate name the last one counts, as RFC 7519 allows.
func claimsOf(seg string) (map[string]json.RawMessage, bool) {
	raw, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return nil, false
	}
	var m map[string]json.RawMessage
	return m, json.Unmarshal(raw, &m) == nil && m != nil
}

func jsonString(raw json.RawMessage) (string, bool) {
	var s string
	return s, raw != nil && json.Unmarshal(raw, &s) == nil
}

// numericDate reads a NumericDate in seconds: a JSON number (not a string
// holding one) from 0 to 1e11, the range the verifier accepts.
func numericDate(raw json.RawMessage) (float64, bool) {
	var n json.Number
	if len(raw) == 0 || raw[0] == '"' || json.Unmarshal(raw, &n) != nil {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(n), 64)
	return f, err == nil && f >= 0 && f <= 1e11
}

// subjectProblem is why a subject cannot name a caller, or "": it must be
// non-empty, at most 255 bytes, without control characters, and without
// white space at either end (" alice" and "alice" must not be two users).
func subjectProblem(sub string) string {
	switch {
	case strings.TrimSpace(sub) == "":
		return "empty"
	case len(sub) > auth.MaxSubjectLen:
		return "too long"
	case strings.ContainsFunc(sub, unicode.IsControl):
		return "control characters"
	case strings.TrimSpace(sub) != sub:
		return "white space at an end"
	}
	return ""
}

// checkAccepted fails unless token, accepted as caller by a verifier for
// alg (with issuer and audience when strict), is one the documented rules
// accept, signed for that algorithm, and caller is what its claims say.
func checkAccepted(t *testing.T, token string, caller auth.Caller, alg string, key any, strict bool) {
	t.Helper()
	fail := func(why string) { t.Helper(); t.Fatalf("accepted %q as %+v: %s", token, caller, why) }
	if len(token) > maxToken {
		fail("longer than the bound")
	}
	segs := strings.Split(token, ".")
	if len(segs) != 3 {
		fail("not three segments")
	}
	header, ok := claimsOf(segs[0])
	if !ok {
		fail("header is not a JSON object")
	}
	if a, _ := jsonString(header["alg"]); a != alg {
		fail("header alg is " + a)
	}
	// The signature must be the key's, over the segments as sent.
	sig, err := base64.RawURLEncoding.DecodeString(segs[2])
	if err != nil {
		fail("signature is not base64url")
	}
	input := segs[0] + "." + segs[1]
	if alg == "RS256" {
		d := sha256.Sum256([]byte(input))
		if rsa.VerifyPKCS1v15(&key.(*rsa.PrivateKey).PublicKey, crypto.SHA256, d[:], sig) != nil {
			fail("RS256 signature does not verify")
		}
	} else if !hmac.Equal(sig, signature(input, alg, key)) {
		fail("HMAC does not verify")
	}
	c, ok := claimsOf(segs[1])
	if !ok {
		fail("payload is not a JSON object")
	}
	sub, ok := jsonString(c["sub"])
	if !ok || sub != caller.Subject {
		fail("sub claim is " + string(c["sub"]))
	}
	if why := subjectProblem(sub); why != "" {
		fail("subject: " + why)
	}
	now := float64(fuzzNow.Unix())
	leeway := auth.Leeway.Seconds() + 1 // a second of slack for truncation
	if exp, ok := numericDate(c["exp"]); !ok || exp+leeway <= now || math.Abs(exp) >= math.MaxInt64 {
		fail("exp is " + string(c["exp"]))
	}
	if raw, has := c["nbf"]; has && string(raw) != "null" {
		if nbf, ok := numericDate(raw); !ok || nbf > now+leeway {
			fail("nbf is " + string(raw))
		}
	}
	role := auth.RoleUser
	if raw, has := c["role"]; has && string(raw) != "null" {
		s, ok := jsonString(raw)
		if !ok || !slices.Contains([]auth.Role{auth.RoleUser, auth.RoleService, auth.RoleAdmin}, auth.Role(s)) {
			fail("role is " + string(raw))
		}
		role = auth.Role(s)
	}
	if caller.Role != role {
		fail("role claim says " + string(role))
	}
	email := ""
	if raw, has := c["email"]; has && string(raw) != "null" {
		if email, ok = jsonString(raw); !ok {
			fail("email is " + string(raw))
		}
	}
	if caller.Email != email || len(email) > 320 {
		fail("email claim is " + string(c["email"]))
	}
	if strict {
		iss, _ := jsonString(c["iss"])
		var aud []string
		if s, ok := jsonString(c["aud"]); ok {
			aud = []string{s}
		} else {
			_ = json.Unmarshal(c["aud"], &aud)
		}
		if iss != fuzzIssuer || !slices.Contains(aud, fuzzAudience) {
			fail("issuer or audience not the configured ones")
		}
	}
}

// decoded is a base64url segment's bytes, or the segment itself when it is
// not base64url.
func decoded(seg string) string {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return seg
	}
	return string(b)
}

// checkRefused fails unless err is an UNAUTHENTICATED refusal with one of
// the documented messages.
func checkRefused(t *testing.T, what string, err error) string {
	t.Helper()
	e, ok := apperr.As(err)
	if !ok || e.Code != apperr.Unauthenticated || !slices.Contains(refusalMessages, e.Message) {
		t.Fatalf("%s: refused with %v (%T), want UNAUTHENTICATED with a documented message", what, err, err)
	}
	return e.Message
}

// signing modes of FuzzSignedToken: what signs the token, and which
// verifier (and so which algorithm) is asked.
var signingModes = []struct {
	name    string
	alg     string // the header's alg
	key     func(v *fuzzVerifiers) any
	verify  func(v *fuzzVerifiers) *auth.Verifier
	genuine bool // signed with the verifier's own key and algorithm
}{
	{"HS256", "HS256", func(*fuzzVerifiers) any { return secret }, func(v *fuzzVerifiers) *auth.Verifier { return v.hs }, true},
	{"RS256", "RS256", func(v *fuzzVerifiers) any { return v.rsKey }, func(v *fuzzVerifiers) *auth.Verifier { return v.rs }, true},
	{"HS256 with another secret", "HS256", func(*fuzzVerifiers) any { return []byte("not-the-secret-not-the-secret-00") },
		func(v *fuzzVerifiers) *auth.Verifier { return v.hs }, false},
	{"none", "none", func(*fuzzVerifiers) any { return nil }, func(v *fuzzVerifiers) *auth.Verifier { return v.hs }, false},
	// RS/HS confusion: an HS256 token keyed with the RSA public key, which
	// anyone has, sent to the RS256 verifier.
	{"HS256 keyed with the RSA public key", "HS256", func(v *fuzzVerifiers) any { return v.rsPEM },
		func(v *fuzzVerifiers) *auth.Verifier { return v.rs }, false},
	{"RS256 to the HS256 verifier", "RS256", func(v *fuzzVerifiers) any { return v.rsKey },
		func(v *fuzzVerifiers) *auth.Verifier { return v.hs }, false},
	{"HS512 with the secret", "HS512", func(*fuzzVerifiers) any { return secret }, func(v *fuzzVerifiers) *auth.Verifier { return v.hs }, false},
}

// FuzzSignedToken signs arbitrary payloads (and arbitrary extra header
// members) in every mode, then changes one byte of the token. Properties:
// only a genuine signature can be accepted, and then only with claims the
// documented rules accept, read by the test's own parser; every refusal is
// UNAUTHENTICATED with a documented message; a changed token is refused,
// or (the signature's last character has spare bits) accepted as exactly
// the same token; the verifier's memory of tokens answers exactly as a
// fresh verifier would.
func FuzzSignedToken(f *testing.F) {
	exp := strconv.FormatInt(fuzzNow.Add(time.Hour).Unix(), 10)
	for i, p := range []string{
		`{"sub":"alice","exp":` + exp + `}`,
		`{"sub":"root","role":"admin","email":"root@example.com","exp":` + exp + `}`,
		`{"sub":"billing-backend","role":"service","exp":` + exp + `,"iss":"` + fuzzIssuer + `","aud":["x","` + fuzzAudience + `"]}`,
		`{"sub":"alice"}`,                           // no exp
		`{"sub":"alice","exp":null}`,                // exp null
		`{"sub":"alice","exp":1e300}`,               // huge exp: time arithmetic must not wrap it into the future
		`{"sub":"alice","exp":9223372036854775807}`, // the largest int64
		`{"sub":"alice","exp":-9.3e18}`,             // past the smallest
		`{"sub":"alice","exp":"` + exp + `"}`,       // exp as a string (the library reads it)
		`{"sub":42,"exp":` + exp + `}`,              // non-string sub
		`{"sub":["alice"],"exp":` + exp + `}`,
		`{"sub":"ali\u0000ce","exp":` + exp + `}`, // NUL
		`{"sub":"alice\n","exp":` + exp + `}`,     // a control character at the end
		`{"sub":"   ","exp":` + exp + `}`,         // blank
		`{"sub":"alice","role":"Admin","exp":` + exp + `}`,
		`{"sub":"alice","role":"","exp":` + exp + `}`,
		`{"sub":"alice","role":null,"exp":` + exp + `}`,
		`{"sub":"alice","exp":` + exp + `,"sub":"bob"}`, // duplicate: the last counts
		`{"sub":"alice","exp":` + exp + `,"email":"` + strings.Repeat("e", 321) + `"}`,
		`{"sub":"` + strings.Repeat("s", 9000) + `","exp":` + exp + `}`, // oversized token
		`[]`, `null`, `"alice"`, ``, `{`,
	} {
		f.Add([]byte(p), ``, uint8(i%2), uint16(i*7), byte(i), int64(i*1000-3600)) // genuine HS256 or RS256
	}
	f.Add([]byte(`{"sub":"alice","exp":`+exp+`}`), `"typ":"JWT","kid":"../../etc"`, uint8(0), uint16(3), byte(1), int64(0))
	f.Add([]byte(`{"sub":"alice","exp":`+exp+`}`), `"crit":["exp"]`, uint8(0), uint16(0), byte(0), int64(3570))
	f.Add([]byte(`{"sub":"alice","exp":`+exp+`}`), `"alg":"none"`, uint8(0), uint16(0), byte(0), int64(0)) // a second alg: the last counts
	for mode := range signingModes {
		f.Add([]byte(`{"sub":"alice","role":"admin","exp":`+exp+`}`), ``, uint8(mode), uint16(100+mode), byte(mode), int64(3630))
	}
	v := newFuzzVerifiers(f)

	f.Fuzz(func(t *testing.T, payload []byte, extraHeader string, mode uint8, at uint16, by byte, later int64) {
		m := signingModes[int(mode)%len(signingModes)]
		header := []byte(`{"alg":"` + m.alg + `"`)
		if extraHeader != "" {
			header = append(append(header, ','), extraHeader...)
		}
		header = append(header, '}')
		token := handToken(header, payload, m.alg, m.key(v))
		ver := m.verify(v)

		caller, err := ver.Verify(token)
		if err == nil {
			if !m.genuine {
				t.Fatalf("%s: accepted %q as %+v", m.name, token, caller)
			}
			checkAccepted(t, token, caller, m.alg, m.key(v), false)
		} else {
			checkRefused(t, m.name, err)
		}
		// Again: from the verifier's memory when it was accepted.
		if again, err2 := ver.Verify(token); again != caller || (err == nil) != (err2 == nil) {
			t.Fatalf("a second verification differs: %+v %v, then %+v %v", caller, err, again, err2)
		}
		v.checkMemoryAgrees(t, ver, token, later)

		// One byte changed, anywhere.
		i := int(at) % len(token)
		mutated := []byte(token)
		mutated[i] += by | 1
		got, err := ver.Verify(string(mutated))
		if err != nil {
			checkRefused(t, "mutated token", err)
			return
		}
		// Accepted: only a different spelling of the same bytes (the
		// last base64 character of the signature carries spare bits) may
		// pass, never other claims.
		ms := strings.Split(string(mutated), ".")
		ts := strings.Split(token, ".")
		if got != caller || len(ms) != 3 || ms[0] != ts[0] || ms[1] != ts[1] || decoded(ms[2]) != decoded(ts[2]) {
			t.Fatalf("byte %d changed (%q), and the token %q is accepted as %+v (was %+v, %v)", i, mutated[i], mutated, got, caller, err)
		}
	})
}

// FuzzAuthorizationHeader sends arbitrary Authorization headers through the
// middleware: a request goes on with a caller only for a genuine token
// (checked by the test's own reader), and is otherwise answered 401 with
// UNAUTHENTICATED, a Bearer challenge and nothing cached, without reaching
// the handler.
func FuzzAuthorizationHeader(f *testing.F) {
	exp := strconv.FormatInt(fuzzNow.Add(time.Hour).Unix(), 10)
	good := handToken([]byte(`{"alg":"HS256","typ":"JWT"}`), []byte(`{"sub":"alice","role":"admin","exp":`+exp+`}`), "HS256", secret)
	for _, h := range []string{
		"Bearer " + good, "bearer " + good, "BEARER  " + good + "  ", "Bearer\t" + good, "Bearer " + good + " x",
		"Bearer", "Bearer ", "", "Basic YWxpY2U6cGFzcw==", "Bearer a.b.c", "Bearer ..", "Bearer " + good + "\x00",
		"Bearer " + strings.Repeat("A", maxToken+1), "Bearer " + strings.TrimSuffix(good, good[strings.LastIndexByte(good, '.'):]) + ".",
		"Bearer " + handToken([]byte(`{"alg":"none"}`), []byte(`{"sub":"root","role":"admin","exp":`+exp+`}`), "none", nil),
		"Bearer " + good[:len(good)-2] + "==", "Bearer\u00a0" + good, "Bearer " + good + "," + good,
	} {
		f.Add(h, false)
	}
	f.Add("Bearer "+good, true) // two Authorization headers
	v := newFuzzVerifiers(f)
	mw := auth.Middleware(v.hs)

	f.Fuzz(func(t *testing.T, header string, twice bool) {
		if len(header) > 1<<20 {
			return // past the server's header limit (http.DefaultMaxHeaderBytes)
		}
		rec, called, caller, hasCaller := serveFuzz(mw, header, twice)
		if called {
			if twice || !hasCaller || rec.Code != 204 {
				t.Fatalf("%q went on: twice %v, caller %v, status %d", header, twice, hasCaller, rec.Code)
			}
			scheme, token, _ := strings.Cut(strings.TrimSpace(header), " ")
			if !strings.EqualFold(scheme, "Bearer") {
				t.Fatalf("%q went on without the Bearer scheme", header)
			}
			checkAccepted(t, strings.TrimSpace(token), caller, "HS256", secret, false)
			return
		}
		var body struct {
			Errors []struct {
				Message    string
				Extensions struct{ Code string }
			}
		}
		if rec.Code != 401 || json.Unmarshal(rec.Body.Bytes(), &body) != nil || len(body.Errors) != 1 ||
			body.Errors[0].Extensions.Code != string(apperr.Unauthenticated) || body.Errors[0].Message == "" {
			t.Fatalf("%q: status %d, body %s; want 401 UNAUTHENTICATED", header, rec.Code, rec.Body)
		}
		if !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer") || rec.Header().Get("Cache-Control") != "no-store" {
			t.Fatalf("%q: 401 without a Bearer challenge or with caching allowed: %v", header, rec.Header())
		}
		if msg := body.Errors[0].Message; !slices.Contains(refusalMessages, msg) &&
			msg != "more than one Authorization header" && msg != "Authorization must use the Bearer scheme" {
			t.Fatalf("%q: refusal message %q is not a documented one", header, msg)
		}
	})
}
