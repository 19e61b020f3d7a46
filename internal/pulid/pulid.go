// Package pulid makes the public identifiers of Tally's entities: a short type
// prefix and a ULID, for example "usr_01jd6m3v9q8x0n2k4t7w5y1zbc".
//
// The ULID part is time-sortable (so ids sort roughly by creation and keyset
// pagination on id is meaningful) and random enough that ids reveal neither
// how many rows exist nor how fast they are made. The prefix tells a reader,
// and the Relay node resolver, which entity an id belongs to.
package pulid

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
)

// ulidLen is the length of a ULID in its Crockford base32 text form.
const ulidLen = 26

// New returns a new id with the given prefix.
func New(prefix string) string {
	return prefix + "_" + strings.ToLower(ulid.Make().String())
}

// NewAt returns a new id with the given prefix whose time part is t, for
// rows written after the fact (a seeded history) that must sort among ids
// as if they had been made at t.
func NewAt(prefix string, t time.Time) string {
	return prefix + "_" + strings.ToLower(ulid.MustNew(ulid.Timestamp(t), ulid.DefaultEntropy()).String())
}

// ErrMalformed is returned for a string that is not a well-formed id.
var ErrMalformed = errors.New("malformed id")

// Prefix returns the type prefix of id after checking that the id is well formed.
func Prefix(id string) (string, error) {
	prefix, rest, ok := strings.Cut(id, "_")
	if !ok || prefix == "" || len(rest) != ulidLen {
		return "", fmt.Errorf("%w: %q", ErrMalformed, id)
	}
	if _, err := ulid.ParseStrict(strings.ToUpper(rest)); err != nil {
		return "", fmt.Errorf("%w: %q", ErrMalformed, id)
	}
	return prefix, nil
}
