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
//   - The key is stored in the same database transaction as the effect, in
//     one of two places (the storage rule):
//     a movement of credits stores it on its transaction (scope = the
//     transaction's actor, its idempotency_key, and the fingerprint as 32
//     raw bytes), under a unique (actor, idempotency_key) index; the ledger
//     adds a record (scope, key, fingerprint, result) only when the
//     transaction and its postings do not give back the exact result (a
//     reservation's HOLD has no posting to read the balance from). A request
//     without a transaction (checkout, refunds) has a record. Records stored
//     by earlier versions, for movements too, stay and keep replaying.
//   - FindMany is the one lookup: records first, then transactions. A key
//     with a record or a transaction answers its result (a replay) when the
//     fingerprint matches, and IDEMPOTENCY_KEY_REUSED when it does not.
//   - Two concurrent requests with one key both find nothing; a unique index
//     (of the records, or of the transactions) lets one insert win. The
//     loser's transaction fails with ErrTaken, which the transaction runner
//     (ledger.Within) treats as a conflict: it rolls back and runs again,
//     and the new attempt finds the winner's key and replays it. Nothing is
//     done twice.
//   - Keys are kept forever: a retry may come at any time.
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

	"entgo.io/ent/dialect/sql"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/credittransaction"
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

// FingerprintBytes is the fingerprint as a transaction stores it: 32 bytes
// rather than 64 hexadecimal characters.
func (r Request) FingerprintBytes() []byte {
	b, err := hex.DecodeString(r.Fingerprint)
	if err != nil {
		return nil // not made by NewRequest: matches no stored fingerprint
	}
	return b
}

// Record is a stored request and its result.
type Record struct {
	Request
	result json.RawMessage
	// Transaction is set when the key is held by a movement's transaction
	// and no record repeats it: the result is that transaction's (read its
	// Edges.Postings, loaded), which the ledger derives.
	Transaction *ent.CreditTransaction
}

// Replay decodes the recorded result into out, or refuses with
// IDEMPOTENCY_KEY_REUSED when r is not the request that recorded it. A key
// held by a transaction (rec.Transaction) leaves out untouched.
func (rec Record) Replay(r Request, out any) error {
	if rec.Fingerprint != r.Fingerprint {
		return apperr.New(apperr.IdempotencyKeyReused,
			"idempotency key %q was already used for a different request", rec.Key.Key)
	}
	if rec.Transaction != nil {
		return nil
	}
	if err := json.Unmarshal(rec.result, out); err != nil {
		return fmt.Errorf("idempotency: decoding the result of key %q: %w", rec.Key.Key, err)
	}
	return nil
}

// Find replays the record of r's key into out. It reports false when the
// key has no record (out is untouched), and IDEMPOTENCY_KEY_REUSED when the
// record is of another request. c is the client of the caller's
// transaction, or of the database.
func Find(ctx context.Context, c *ent.Client, r Request, out any) (bool, error) {
	recs, err := FindMany(ctx, c, []Request{r})
	if err != nil {
		return false, err
	}
	rec, ok := recs[r.Key]
	if !ok {
		return false, nil
	}
	return true, rec.Replay(r, out)
}

// FindMany reads the records of the requests' keys: the records in one
// statement, then, for the keys without one, the transactions that hold
// them (with their postings).
func FindMany(ctx context.Context, c *ent.Client, rs []Request) (map[Key]Record, error) {
	found := map[Key]Record{}
	if len(rs) == 0 {
		return found, nil
	}
	keys := make([]Key, 0, len(rs))
	seen := make(map[Key]bool, len(rs))
	for _, r := range rs {
		if !seen[r.Key] {
			seen[r.Key] = true
			keys = append(keys, r.Key)
		}
	}
	// Nearly every key is new: one statement says so for both tables.
	if known, err := anyKnown(ctx, c, keys); err != nil || !known {
		return found, err
	}
	if err := findRecords(ctx, c.IdempotencyKey, keys, found); err != nil {
		return nil, err
	}
	held := keys[:0]
	for _, k := range keys {
		if _, ok := found[k]; !ok {
			held = append(held, k)
		}
	}
	if err := findHeld(ctx, c.CreditTransaction, held, found); err != nil {
		return nil, err
	}
	return found, nil
}

// anyKnown says whether a record or a transaction holds one of the keys.
func anyKnown(ctx context.Context, c *ent.Client, keys []Key) (bool, error) {
	records := make([]predicate.IdempotencyKey, len(keys))
	var held []*sql.Predicate
	for i, k := range keys {
		records[i] = idempotencykey.And(idempotencykey.Scope(k.Scope), idempotencykey.Key(k.Key))
	}
	txns := sql.Table(credittransaction.Table)
	for _, k := range keys {
		held = append(held, sql.And(
			sql.EQ(txns.C(credittransaction.FieldActor), k.Scope),
			sql.EQ(txns.C(credittransaction.FieldIdempotencyKey), k.Key)))
	}
	var rows []struct {
		Known int `sql:"known"`
	}
	err := c.IdempotencyKey.Query().
		Where(idempotencykey.Or(records...)).
		Modify(func(s *sql.Selector) {
			s.SelectExpr(sql.Expr("1 AS known"))
			s.UnionAll(sql.SelectExpr(sql.Expr("1 AS known")).From(txns).Where(sql.Or(held...)))
		}).
		Scan(ctx, &rows)
	if err != nil {
		return false, fmt.Errorf("idempotency: looking %d keys up: %w", len(keys), err)
	}
	return len(rows) > 0, nil
}

func findRecords(ctx context.Context, c *ent.IdempotencyKeyClient, keys []Key, found map[Key]Record) error {
	matches := make([]predicate.IdempotencyKey, len(keys))
	for i, k := range keys {
		matches[i] = idempotencykey.And(idempotencykey.Scope(k.Scope), idempotencykey.Key(k.Key))
	}
	recs, err := c.Query().Where(idempotencykey.Or(matches...)).All(ctx)
	if err != nil {
		return fmt.Errorf("idempotency: reading %d keys: %w", len(keys), err)
	}
	for _, rec := range recs {
		k := Key{Scope: rec.Scope, Key: rec.Key}
		found[k] = Record{Request: Request{Key: k, Fingerprint: rec.Fingerprint}, result: rec.Result}
	}
	return nil
}

// findHeld reads the transactions that hold the keys. One that holds a key
// without a fingerprint (written before keys were held there, with a
// record) matches no request.
func findHeld(ctx context.Context, c *ent.CreditTransactionClient, keys []Key, found map[Key]Record) error {
	if len(keys) == 0 {
		return nil
	}
	matches := make([]predicate.CreditTransaction, len(keys))
	for i, k := range keys {
		matches[i] = credittransaction.And(credittransaction.Actor(k.Scope), credittransaction.IdempotencyKey(k.Key))
	}
	txns, err := c.Query().Where(credittransaction.Or(matches...)).WithPostings().All(ctx)
	if err != nil {
		return fmt.Errorf("idempotency: reading the transactions of %d keys: %w", len(keys), err)
	}
	for _, txn := range txns {
		k := Key{Scope: txn.Actor, Key: *txn.IdempotencyKey}
		fp := ""
		if txn.Fingerprint != nil {
			fp = hex.EncodeToString(*txn.Fingerprint)
		}
		found[k] = Record{Request: Request{Key: k, Fingerprint: fp}, Transaction: txn}
	}
	return nil
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
