// Package idempotency makes a keyed request take effect once. It is the one
// implementation every keyed operation uses (the ledger's movements,
// checkout, admin refunds); its rules are these:
//
//   - A key belongs to a scope: the caller who sent it ("user:<id>",
//     "service:<name>", "admin:<id>", see ledger.Actor). Two callers may use
//     the same key for different requests.
//   - A request is identified, apart from its key, by a fingerprint: the
//     SHA-256 of the operation's name and the request's fields as JSON. The
//     operation's name is part of it, so a key spent on one operation is
//     refused on another.
//   - The record (scope, key, fingerprint, result) is stored in the same
//     database transaction as the effect: both commit or neither does.
//   - A key with a record answers the recorded result (a replay) when the
//     fingerprint matches, and IDEMPOTENCY_KEY_REUSED when it does not.
//   - Two concurrent requests with one key both find no record; the unique
//     (scope, key) index lets one insert win. The loser's transaction fails
//     with ErrTaken, which the transaction runner (ledger.Within) treats as
//     a conflict: it rolls back and runs again, and the new attempt finds
//     the winner's record and replays it. Nothing is done twice.
//   - Records are kept forever: a retry may come at any time.
package idempotency

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/idempotencykey"
	"github.com/tally-billing/tally/ent/predicate"
	"github.com/tally-billing/tally/internal/apperr"
)

// MaxKeyLength bounds a client's key (the column's size).
const MaxKeyLength = 255

// ErrTaken says a concurrent request stored a record for the same key
// first. The transaction must be rolled back and run again, which then
// replays that request's result.
var ErrTaken = errors.New("idempotency: the key was recorded concurrently")

// Key is a client's key in its caller's scope.
type Key struct{ Scope, Key string }

// Request is a keyed request: its key and its fingerprint.
type Request struct {
	Key
	Fingerprint string
}

// ValidateKey checks a client's key: 1 to 255 printable ASCII characters.
func ValidateKey(key string) error {
	if key == "" {
		return apperr.Invalid("idempotencyKey", "idempotencyKey is required")
	}
	if len(key) > MaxKeyLength {
		return apperr.Invalid("idempotencyKey", "idempotencyKey is longer than %d characters", MaxKeyLength)
	}
	if !utf8.ValidString(key) || strings.IndexFunc(key, func(r rune) bool { return r < 0x20 || r > 0x7e }) >= 0 {
		return apperr.Invalid("idempotencyKey", "idempotencyKey may hold only printable ASCII characters")
	}
	return nil
}

// NewRequest checks the key and fingerprints the operation op with body,
// the fields that make one request differ from another.
func NewRequest(scope, key, op string, body any) (Request, error) {
	if err := ValidateKey(key); err != nil {
		return Request{}, err
	}
	b, err := json.Marshal(struct {
		Op  string
		Req any
	}{op, body})
	if err != nil {
		return Request{}, fmt.Errorf("idempotency: fingerprinting %s: %w", op, err)
	}
	sum := sha256.Sum256(b)
	return Request{Key: Key{Scope: scope, Key: key}, Fingerprint: hex.EncodeToString(sum[:])}, nil
}

// Record is a stored request and its result.
type Record struct {
	Request
	result json.RawMessage
}

// Replay decodes the recorded result into out, or refuses with
// IDEMPOTENCY_KEY_REUSED when r is not the request that recorded it.
func (rec Record) Replay(r Request, out any) error {
	if rec.Fingerprint != r.Fingerprint {
		return apperr.New(apperr.IdempotencyKeyReused,
			"idempotency key %q was already used for a different request", rec.Key.Key)
	}
	if err := json.Unmarshal(rec.result, out); err != nil {
		return fmt.Errorf("idempotency: decoding the result of key %q: %w", rec.Key.Key, err)
	}
	return nil
}

// Find replays the record of r's key into out. It reports false when the
// key has no record (out is untouched), and IDEMPOTENCY_KEY_REUSED when the
// record is of another request.
func Find(ctx context.Context, keys *ent.IdempotencyKeyClient, r Request, out any) (bool, error) {
	recs, err := FindMany(ctx, keys, []Request{r})
	if err != nil {
		return false, err
	}
	rec, ok := recs[r.Key]
	if !ok {
		return false, nil
	}
	return true, rec.Replay(r, out)
}

// FindMany reads the records of the requests' keys, in one statement.
func FindMany(ctx context.Context, keys *ent.IdempotencyKeyClient, rs []Request) (map[Key]Record, error) {
	found := map[Key]Record{}
	if len(rs) == 0 {
		return found, nil
	}
	matches := make([]predicate.IdempotencyKey, 0, len(rs))
	seen := make(map[Key]bool, len(rs))
	for _, r := range rs {
		if !seen[r.Key] {
			seen[r.Key] = true
			matches = append(matches, idempotencykey.And(idempotencykey.Scope(r.Scope), idempotencykey.Key(r.Key.Key)))
		}
	}
	q := keys.Query()
	if len(matches) == 1 {
		q = q.Where(matches[0])
	} else {
		q = q.Where(idempotencykey.Or(matches...))
	}
	recs, err := q.All(ctx)
	if err != nil {
		return nil, fmt.Errorf("idempotency: reading %d keys: %w", len(matches), err)
	}
	for _, rec := range recs {
		k := Key{Scope: rec.Scope, Key: rec.Key}
		found[k] = Record{Request: Request{Key: k, Fingerprint: rec.Fingerprint}, result: rec.Result}
	}
	return found, nil
}

// Entry is a request and the result to record for it.
type Entry struct {
	Request
	Result any
}

// Store records the entries, in one statement, in the caller's transaction
// (keys is its client of the records). A key another request recorded first is ErrTaken.
func Store(ctx context.Context, keys *ent.IdempotencyKeyClient, now time.Time, entries ...Entry) error {
	creates := make([]*ent.IdempotencyKeyCreate, len(entries))
	for i, e := range entries {
		b, err := json.Marshal(e.Result)
		if err != nil {
			return fmt.Errorf("idempotency: encoding the result of key %q: %w", e.Key.Key, err)
		}
		creates[i] = keys.Create().
			SetScope(e.Scope).
			SetKey(e.Key.Key).
			SetFingerprint(e.Fingerprint).
			SetResult(b).
			SetCreatedAt(now)
	}
	err := keys.CreateBulk(creates...).Exec(ctx)
	if ent.IsConstraintError(err) {
		return fmt.Errorf("%w: %w", ErrTaken, err)
	}
	if err != nil {
		return fmt.Errorf("idempotency: recording %d keys: %w", len(entries), err)
	}
	return nil
}

// Forget deletes a key's record, for a request whose effect was undone
// (a checkout Stripe refused), so that the key may be used again.
func Forget(ctx context.Context, keys *ent.IdempotencyKeyClient, k Key) error {
	if _, err := keys.Delete().
		Where(idempotencykey.Scope(k.Scope), idempotencykey.Key(k.Key)).
		Exec(ctx); err != nil {
		return fmt.Errorf("idempotency: forgetting key %q: %w", k.Key, err)
	}
	return nil
}
