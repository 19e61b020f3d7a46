package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// claims is what Tally reads from a token.
type claims struct {
	jwt.RegisteredClaims
	Email string `json:"email,omitempty"`
	// A pointer tells a missing role (a user) from an empty one (refused).
	Role *string `json:"role,omitempty"`
}

// claimNames are the claims Tally reads, by their exact names.
var claimNames = []string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "email", "role"}

// maxNumericDate bounds exp, nbf and iat (seconds since 1970: the year
// 5138), so that no value overflows a time on its way to a comparison: an
// nbf of 1e19 wrapped to the distant past and was accepted.
const maxNumericDate = 1e11

// UnmarshalJSON reads the payload as RFC 7519 says and encoding/json does
// not: claim names are case-sensitive ("SUB" is not "sub": taken as one, a
// user-controlled "ROLE" claim would have made its holder an admin), each
// appears at most once, strings are strings and dates are numbers in range.
// Claims Tally does not read are ignored.
func (c *claims) UnmarshalJSON(data []byte) error {
	members, err := objectMembers(data)
	if err != nil {
		return err
	}
	for name := range members {
		for _, known := range claimNames {
			if name != known && strings.EqualFold(name, known) {
				return fmt.Errorf("claim %q: claim names are case-sensitive", name)
			}
		}
	}
	*c = claims{}
	for name, into := range map[string]*string{"iss": &c.Issuer, "sub": &c.Subject, "jti": &c.ID, "email": &c.Email} {
		if raw, ok := members[name]; ok {
			if err := decodeString(name, raw, into); err != nil {
				return err
			}
		}
	}
	if raw, ok := members["role"]; ok {
		c.Role = new(string)
		if err := decodeString("role", raw, c.Role); err != nil {
			return err
		}
	}
	if raw, ok := members["aud"]; ok {
		if err := c.Audience.UnmarshalJSON(raw); err != nil {
			return fmt.Errorf("claim aud: %w", err)
		}
	}
	for name, into := range map[string]**jwt.NumericDate{"exp": &c.ExpiresAt, "nbf": &c.NotBefore, "iat": &c.IssuedAt} {
		if raw, ok := members[name]; ok {
			d, err := numericDate(name, raw)
			if err != nil {
				return err
			}
			*into = d
		}
	}
	return nil
}

// objectMembers splits a JSON object into its members, refusing a name
// that appears twice.
func objectMembers(data []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, errors.New("the claims are not a JSON object")
	}
	members := map[string]json.RawMessage{}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		name, _ := tok.(string)
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return nil, err
		}
		if _, dup := seen[name]; dup {
			return nil, fmt.Errorf("claim %q appears twice", name)
		}
		seen[name] = true
		if string(value) != "null" { // a null claim is an absent one
			members[name] = value
		}
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	return members, nil
}

func decodeString(name string, raw json.RawMessage, into *string) error {
	if len(raw) == 0 || raw[0] != '"' {
		return fmt.Errorf("claim %s is not a string", name)
	}
	return json.Unmarshal(raw, into)
}

func numericDate(name string, raw json.RawMessage) (*jwt.NumericDate, error) {
	var n json.Number
	if len(raw) == 0 || raw[0] == '"' || json.Unmarshal(raw, &n) != nil {
		return nil, fmt.Errorf("claim %s is not a number", name)
	}
	f, err := n.Float64()
	if err != nil || math.IsNaN(f) || f < 0 || f > maxNumericDate {
		return nil, fmt.Errorf("claim %s is out of range", name)
	}
	sec, frac := math.Modf(f)
	return jwt.NewNumericDate(time.Unix(int64(sec), int64(frac*1e9))), nil
}

// emailProblem says why an email claim cannot be stored, or "" if it can.
func emailProblem(email string) string {
	switch {
	case len(email) > maxEmailLen:
		return "too long"
	case !utf8.ValidString(email) || strings.ContainsFunc(email, unicode.IsControl):
		return "contains control characters or invalid UTF-8"
	}
	return ""
}
