package auth_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tally-billing/tally/internal/auth"
)

// serveFuzz runs one request with the given Authorization header (twice
// when asked) through mw and reports what the handler behind it saw.
func serveFuzz(mw func(http.Handler) http.Handler, header string, twice bool) (rec *httptest.ResponseRecorder, called bool, caller auth.Caller, hasCaller bool) {
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		called = true
		caller, hasCaller = auth.FromContext(r.Context())
		w.WriteHeader(http.StatusNoContent)
	}))
	req := httptest.NewRequest(http.MethodPost, "/graphql", strings.NewReader(`{"query":"{ viewer { id } }"}`))
	req.Header.Add("Authorization", header)
	if twice {
		req.Header.Add("Authorization", header)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec, called, caller, hasCaller
}

// asSent is s as a JSON string carries it: invalid UTF-8 becomes U+FFFD.
func asSent(s string) string {
	b, _ := json.Marshal(s)
	var out string
	_ = json.Unmarshal(b, &out)
	return out
}

// fuzzClaims are the claims of FuzzTokenClaims: which are present, and
// their values. Times are offsets from fuzzNow in seconds, bounded so that
// they are exact in a JSON number and far from time's limits.
type fuzzClaims struct {
	sub, role, email       string
	hasExp, hasNbf         bool
	hasRole, hasEmail      bool
	expOff, nbfOff         int64
	issVariant, audVariant int
}

func newFuzzClaims(sub, role, email string, flags uint8, expOff, nbfOff int64) fuzzClaims {
	return fuzzClaims{
		sub: sub, role: role, email: email,
		hasExp: flags&1 != 0, hasNbf: flags&2 != 0, hasRole: flags&4 != 0, hasEmail: flags&8 != 0,
		expOff: expOff % (1 << 40), nbfOff: nbfOff % (1 << 40),
		issVariant: int(flags>>4) & 3, audVariant: int(flags>>6) & 3,
	}
}

func (c fuzzClaims) json() []byte {
	m := map[string]any{"sub": c.sub}
	if c.hasExp {
		m["exp"] = fuzzNow.Unix() + c.expOff
	}
	if c.hasNbf {
		m["nbf"] = fuzzNow.Unix() + c.nbfOff
	}
	if c.hasRole {
		m["role"] = c.role
	}
	if c.hasEmail {
		m["email"] = c.email
	}
	if iss := []string{"", fuzzIssuer, "https://other.example", ""}[c.issVariant]; iss != "" {
		m["iss"] = iss
	}
	switch c.audVariant {
	case 1:
		m["aud"] = fuzzAudience
	case 2:
		m["aud"] = []string{"other", fuzzAudience}
	case 3:
		m["aud"] = "other"
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// expected is the refusal the documented rules give these claims, in the
// order the verifier reports them ("" to accept); a subject with white
// space at an end must be refused by some "token subject …" message.
func (c fuzzClaims) expected(strict bool) string {
	leeway := int64(auth.Leeway / time.Second)
	sub, role, email := asSent(c.sub), asSent(c.role), asSent(c.email)
	outOfRange := func(off int64) bool { d := fuzzNow.Unix() + off; return d < 0 || d > 1e11 }
	switch {
	case c.hasExp && outOfRange(c.expOff), c.hasNbf && outOfRange(c.nbfOff):
		return "malformed token" // a date no time can hold is refused as it is decoded
	case !c.hasExp:
		return "token has no expiry"
	case c.expOff+leeway <= 0: // valid while now < exp + leeway
		return "token expired"
	case c.hasNbf && c.nbfOff > leeway: // valid once nbf <= now + leeway
		return "token not valid yet"
	case strict && c.issVariant != 1:
		return "token issuer not accepted"
	case strict && c.audVariant != 1 && c.audVariant != 2:
		return "token audience not accepted"
	}
	switch subjectProblem(sub) {
	case "empty":
		return "token subject is empty"
	case "too long":
		return "token subject is longer than 255 bytes"
	case "control characters":
		return "token subject contains control characters"
	case "white space at an end":
		return "token subject …"
	}
	switch {
	case c.hasRole && !slices.Contains([]string{"user", "service", "admin"}, role):
		return "token role not accepted"
	case c.hasEmail && len(email) > 320:
		return "token email too long"
	case c.hasEmail && strings.ContainsFunc(email, unicode.IsControl):
		return "token email contains control characters or invalid UTF-8"
	}
	return ""
}

func (c fuzzClaims) caller() auth.Caller {
	role := auth.RoleUser
	if c.hasRole {
		role = auth.Role(asSent(c.role))
	}
	email := ""
	if c.hasEmail {
		email = asSent(c.email)
	}
	return auth.Caller{Subject: asSent(c.sub), Role: role, Email: email}
}

// sameCaller compares a verified caller with the one its claims name; the
// verified one also carries the token's expiry, which must be set.
func sameCaller(got, want auth.Caller) bool {
	if got.Expires.IsZero() {
		return false
	}
	got.Expires = want.Expires
	return got == want
}

// FuzzTokenClaims signs well-formed tokens with fuzzed claims and checks
// the verifiers' answer against the documented rules exactly: the caller
// when they accept, the refusal's message when they refuse (with and
// without a configured issuer and audience), also at another time, where
// a verifier that remembers the token must answer as a fresh one.
func FuzzTokenClaims(f *testing.F) {
	valid := uint8(1 | 4 | 8 | 1<<4 | 1<<6) // exp, role, email, right issuer and audience
	f.Add("alice", "admin", "a@example.com", valid, int64(3600), int64(0), int64(0))
	f.Add("billing-backend", "service", "", valid|2, int64(60), int64(-60), int64(7200))
	f.Add("alice", "user", "", uint8(1), int64(-29), int64(0), int64(-100)) // just inside the leeway
	f.Add("alice", "user", "", uint8(1), int64(-30), int64(0), int64(0))    // just past it
	f.Add("alice", "user", "", uint8(1|2), int64(3600), int64(30), int64(0))
	f.Add("alice", "user", "", uint8(1|2), int64(3600), int64(31), int64(31)) // not yet valid, then valid
	f.Add("alice", "user", "", uint8(0), int64(0), int64(0), int64(0))        // missing exp
	f.Add("alice", "", "", uint8(1|4), int64(3600), int64(0), int64(0))       // an empty role is not "no role"
	f.Add("alice", "Admin", "", uint8(1|4), int64(3600), int64(0), int64(0))  // roles are case-sensitive
	f.Add("alice", "root", "", uint8(1|4), int64(3600), int64(0), int64(0))
	f.Add("", "", "", uint8(1), int64(3600), int64(0), int64(0))
	f.Add(" \t", "", "", uint8(1), int64(3600), int64(0), int64(0))
	f.Add("ali\x00ce", "", "", uint8(1), int64(3600), int64(0), int64(0)) // NUL
	f.Add("alice\u0085", "", "", uint8(1), int64(3600), int64(0), int64(0))
	f.Add(strings.Repeat("s", 256), "", "", uint8(1), int64(3600), int64(0), int64(0))
	f.Add(strings.Repeat("é", 127), "", "", uint8(1), int64(3600), int64(0), int64(0)) // 254 bytes
	f.Add("alice", "", strings.Repeat("e", 321), uint8(1|8), int64(3600), int64(0), int64(0))
	f.Add("\xff\xfe", "\xff", "\xff", uint8(1|4|8), int64(3600), int64(0), int64(0))   // invalid UTF-8 arrives as U+FFFD
	f.Add("alice", "admin", "", uint8(1|4|2<<4|3<<6), int64(3600), int64(0), int64(0)) // wrong issuer and audience
	f.Add("alice", "admin", "", uint8(1|4|1<<4), int64(3600), int64(0), int64(0))      // no audience
	f.Add("alice", "user", "", uint8(1), int64(1<<40-1), int64(0), int64(1<<40-1))     // far in the future
	v := newFuzzVerifiers(f)

	f.Fuzz(func(t *testing.T, sub, role, email string, flags uint8, expOff, nbfOff, later int64) {
		c := newFuzzClaims(sub, role, email, flags, expOff, nbfOff)
		token := handToken([]byte(`{"alg":"HS256","typ":"JWT"}`), c.json(), "HS256", secret)
		for _, ver := range []*auth.Verifier{v.hs, v.strict} {
			strict := ver == v.strict
			want := c.expected(strict)
			if len(token) > maxToken {
				// The size bound comes first: invalid UTF-8 in a claim
				// grows threefold as U+FFFD, past it.
				want = "token too large"
			}
			got, err := ver.Verify(token)
			switch {
			case want == "" && err != nil:
				t.Fatalf("%s (strict %v): refused with %v, want accepted", c.json(), strict, err)
			case want == "" && !sameCaller(got, c.caller()):
				t.Fatalf("%s: caller %+v, want %+v", c.json(), got, c.caller())
			case want == "":
				checkAccepted(t, token, got, "HS256", secret, strict)
			case err == nil:
				t.Fatalf("%s (strict %v): accepted as %+v, want refused: %s", c.json(), strict, got, want)
			default:
				msg := checkRefused(t, string(c.json()), err)
				if msg != want && !(want == "token subject …" && strings.HasPrefix(msg, "token subject ")) {
					t.Fatalf("%s (strict %v): refused with %q, want %q", c.json(), strict, msg, want)
				}
			}
			v.checkMemoryAgrees(t, ver, token, later)
		}
	})
}

// FuzzMint mints tokens with fuzzed claims: Mint refuses what the
// documented rules refuse, and a token it mints verifies to exactly the
// caller it was asked for (by a verifier that checks the issuer and
// audience Mint wrote, at the moment just before Mint read the clock).
func FuzzMint(f *testing.F) {
	f.Add("alice", "", "", int64(time.Hour))
	f.Add("root", "admin", "root@example.com", int64(time.Minute))
	f.Add("billing-backend", "service", "", int64(time.Second))
	f.Add("alice", "Admin", "", int64(time.Hour))
	f.Add("", "", "", int64(time.Hour))
	f.Add("alice", "", "", int64(0))
	f.Add("alice", "", "", int64(-time.Hour))
	f.Add("al\x00ice", "", "", int64(time.Hour))
	f.Add(strings.Repeat("s", 255), "user", strings.Repeat("e", 320), int64(time.Hour))
	key := []byte("fuzz-mint-secret-fuzz-mint-secret")
	ver, err := auth.NewVerifier(auth.VerifierConfig{Secret: key, Issuer: fuzzIssuer, Audience: fuzzAudience})
	if err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, sub, role, email string, ttl int64) {
		// Lifetimes up to a year either way.
		d := time.Duration(ttl % int64(365*24*time.Hour))
		before := time.Now()
		ver.SetClock(func() time.Time { return before })
		token, err := auth.Mint(key, auth.MintClaims{Subject: sub, Role: auth.Role(role), Email: email, Issuer: fuzzIssuer, Audience: fuzzAudience}, d)
		roleOK := role == "" || slices.Contains([]string{"user", "service", "admin"}, role)
		emailOK := len(email) <= 320 && utf8.ValidString(email) && !strings.ContainsFunc(email, unicode.IsControl)
		valid := d > 0 && subjectProblem(sub) == "" && utf8.ValidString(sub) && roleOK && emailOK
		if err != nil {
			if !strings.HasPrefix(err.Error(), "auth: ") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("Mint's refusal %q is not one line of package auth", err)
			}
			if valid {
				t.Fatalf("Mint refused valid claims %q %q %q %s: %v", sub, role, email, d, err)
			}
			return
		}
		if d <= 0 || !roleOK || !emailOK {
			t.Fatalf("Mint accepted %q %q %q %s", sub, role, email, d)
		}
		want := auth.Caller{Subject: sub, Role: auth.Role(role), Email: email}
		if role == "" {
			want.Role = auth.RoleUser
		}
		got, err := ver.Verify(token)
		if err != nil || !sameCaller(got, want) {
			t.Fatalf("Mint(%q %q %q) made a token that verifies as %+v, %v", sub, role, email, got, err)
		}
	})
}
