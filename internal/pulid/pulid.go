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

// Bound is the smallest id with the given prefix made at t: every id of
// that prefix made before t sorts below it, every one made at t or later
// sorts at or above it (the incremental ledger check walks the ids made in
// a window of time this way).
func Bound(prefix string, t time.Time) string {
	var id ulid.ULID
	if err := id.SetTime(ulid.Timestamp(t)); err != nil {
		return prefix + "_" + strings.Repeat("0", ulidLen)
	}
	return prefix + "_" + strings.ToLower(id.String())
}

// Time is when id was made (its ULID's time), or false for an id that is
// not well formed.
func Time(id string) (time.Time, bool) {
	_, rest, ok := strings.Cut(id, "_")
	if !ok {
		return time.Time{}, false
	}
	u, err := ulid.ParseStrict(strings.ToUpper(rest))
	if err != nil {
		return time.Time{}, false
	}
	return ulid.Time(u.Time()).UTC(), true
}
