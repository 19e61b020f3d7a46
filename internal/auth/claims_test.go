package auth_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"testing"
	"time"

	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/auth"
)

// rawToken signs a payload written by hand (a map cannot hold two claims
// whose names differ only in case, or one claim twice).
func rawToken(header, payload string) string {
	enc := base64.RawURLEncoding
	input := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload))
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(input))
	return input + "." + enc.EncodeToString(mac.Sum(nil))
}

// TestClaimsAreReadAsTheRFCSays: encoding/json matched "SUB" and "ROLE" to
// sub and role, so a token whose issuer let a user add a claim named
// "ROLE": "admin" verified as an admin; an nbf of 1e19 wrapped to the
// distant past and was accepted; a crit header was ignored.
func TestClaimsAreReadAsTheRFCSays(t *testing.T) {
	v := hsVerifier(t, auth.VerifierConfig{})
	exp := time.Now().Add(time.Hour).Unix()
	hs := `{"alg":"HS256","typ":"JWT"}`
	for name, token := range map[string]string{
		"ROLE beside sub":   rawToken(hs, fmt.Sprintf(`{"sub":"alice","ROLE":"admin","exp":%d}`, exp)),
		"SUB beside sub":    rawToken(hs, fmt.Sprintf(`{"sub":"alice","SUB":"bob","exp":%d}`, exp)),
		"Sub alone":         rawToken(hs, fmt.Sprintf(`{"Sub":"bob","exp":%d}`, exp)),
		"sub twice":         rawToken(hs, fmt.Sprintf(`{"sub":"alice","sub":"bob","exp":%d}`, exp)),
		"nbf past int64":    rawToken(hs, fmt.Sprintf(`{"sub":"alice","nbf":1e19,"exp":%d}`, exp)),
		"exp as a string":   rawToken(hs, fmt.Sprintf(`{"sub":"alice","exp":"%d"}`, exp)),
		"a negative exp":    rawToken(hs, `{"sub":"alice","exp":-1}`),
		"role not a string": rawToken(hs, fmt.Sprintf(`{"sub":"alice","role":["admin"],"exp":%d}`, exp)),
		"a critical header": rawToken(`{"alg":"HS256","crit":["x"],"x":1}`, fmt.Sprintf(`{"sub":"alice","exp":%d}`, exp)),
		"NUL in the email":  rawToken(hs, fmt.Sprintf(`{"sub":"alice","email":"a\u0000@b.c","exp":%d}`, exp)),
		"a padded subject":  rawToken(hs, fmt.Sprintf(`{"sub":" alice","exp":%d}`, exp)),
		"not an object":     rawToken(hs, `["sub","alice"]`),
		"one byte more":     rawToken(hs, fmt.Sprintf(`{"sub":"alice","exp":%d}`, exp)) + "x",
	} {
		c, err := v.Verify(token)
		if apperr.CodeOf(err) != apperr.Unauthenticated {
			t.Errorf("%s: verified as %+v, %v", name, c, err)
		}
	}
	// What the RFC allows still verifies: unknown claims, a null claim.
	ok := rawToken(hs, fmt.Sprintf(`{"sub":"alice","Custom":1,"role":null,"exp":%d}`, exp))
	if c, err := v.Verify(ok); err != nil || c.Subject != "alice" || c.Role != auth.RoleUser {
		t.Fatalf("a token with an unknown claim and a null role: %+v, %v", c, err)
	}
	if _, err := auth.Mint(secret, auth.MintClaims{Subject: "alice", Email: "a\x07@b.c"}, time.Hour); err == nil {
		t.Fatal("minted a token with a control character in its email")
	}
}
