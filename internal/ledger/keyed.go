package ledger

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/credittransaction"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/idempotency"
)

// The ledger's keyed operations follow the rules of package idempotency;
// this file is what the ledger adds: what a result remembers, how a replay
// reads it back, and when the key is looked up.

// StoredResult is what an idempotency record of a movement remembers of
// its result (the seeder writes such records too).
type StoredResult struct {
	TransactionID string `json:"transaction_id,omitempty"`
	ReservationID string `json:"reservation_id,omitempty"`
	Balance       int64  `json:"balance"`
	Amount        int64  `json:"amount"`
}

func storedOf(r *Result) StoredResult {
	s := StoredResult{Balance: r.Balance, Amount: r.Amount}
	if r.Transaction != nil {
		s.TransactionID = r.Transaction.ID
	}
	if r.Reservation != nil {
		s.ReservationID = r.Reservation.ID
	}
	return s
}

// keyedRequest is the idempotency request of an operation of the ledger:
// the key in the actor's scope, and the fingerprint of the operation's
// name and request.
func keyedRequest(actor Actor, key, opName string, req any) (idempotency.Request, error) {
	if err := actor.validate(); err != nil {
		return idempotency.Request{}, err
	}
	return idempotency.NewRequest(actor.String(), key, opName, req)
}

// replay is the result an earlier request with r's key produced, nil if
// there was none, or IDEMPOTENCY_KEY_REUSED if it was another request.
// u is the user as it is now.
func (t *Tx) replay(ctx context.Context, r idempotency.Request, u *ent.User) (*Result, error) {
	recs, err := idempotency.FindMany(ctx, t.ent.Client(), []idempotency.Request{r})
	if err != nil {
		return nil, err
	}
	rec, ok := recs[r.Key]
	if !ok {
		return nil, nil
	}
	stored, err := storedOfRecord(rec, r)
	if err != nil {
		return nil, err
	}
	return t.resultOf(ctx, stored, u)
}

// storedOfRecord is the result a key's record or transaction gives back to
// r, or IDEMPOTENCY_KEY_REUSED.
func storedOfRecord(rec idempotency.Record, r idempotency.Request) (StoredResult, error) {
	var stored StoredResult
	if err := rec.Replay(r, &stored); err != nil || rec.Transaction == nil {
		return stored, err
	}
	stored, ok := derived(rec.Transaction)
	if !ok {
		return stored, fmt.Errorf("ledger: transaction %s holds key %q but no result to replay", rec.Transaction.ID, r.Key.Key)
	}
	return stored, nil
}

// derived is the result a movement's transaction gives back by itself: its
// id, reservation and amount, and the balance after its last posting on the
// user's account (postings are numbered in the order written). ok is false
// when no posting is on the user's account.
func derived(txn *ent.CreditTransaction) (_ StoredResult, ok bool) {
	var last *ent.CreditLedger
	for _, p := range txn.Edges.Postings {
		if p.BalanceAfter != nil && (last == nil || p.ID > last.ID) {
			last = p
		}
	}
	if last == nil {
		return StoredResult{}, false
	}
	s := StoredResult{TransactionID: txn.ID, Balance: *last.BalanceAfter, Amount: txn.Amount}
	if txn.ReservationID != nil {
		s.ReservationID = *txn.ReservationID
	}
	return s, true
}

// resultOf reads back the entities a stored result names.
func (t *Tx) resultOf(ctx context.Context, stored StoredResult, u *ent.User) (*Result, error) {
	res := &Result{Balance: stored.Balance, Amount: stored.Amount, Replayed: true, User: u}
	var err error
	if stored.TransactionID != "" {
		res.Transaction, err = t.ent.CreditTransaction.Query().
			Where(credittransaction.ID(stored.TransactionID)).
			WithPostings().
			Only(ctx)
		if err != nil {
			return nil, fmt.Errorf("ledger: reading transaction %s of a replay: %w", stored.TransactionID, err)
		}
	}
	if stored.ReservationID != "" {
		res.Reservation, err = t.ent.CreditReservation.Get(ctx, stored.ReservationID)
		if err != nil {
			return nil, fmt.Errorf("ledger: reading reservation %s of a replay: %w", stored.ReservationID, err)
		}
	}
	return res, nil
}

// serve notes the requests this transaction is about to serve: the
// transactions written under their keys hold their fingerprints.
func (t *Tx) serve(rs ...idempotency.Request) {
	if t.fingerprints == nil {
		t.fingerprints = make(map[idempotency.Key][]byte, len(rs))
	}
	for _, r := range rs {
		t.fingerprints[r.Key] = r.FingerprintBytes()
	}
}

// remember stores the requests' keys with their results, in this
// transaction. The transaction of a result holds its key already (written
// with its fingerprint, under the unique (actor, idempotency_key) index); a
// record is added, in one statement, only for results the transaction does
// not give back exactly (see derived). A key a concurrent request stored
// first fails the transaction's insert, or the record's, with
// idempotency.ErrTaken, which Within retries: the retry replays.
func (t *Tx) remember(ctx context.Context, rs []idempotency.Request, results []*Result) error {
	var entries []idempotency.Entry
	for i, r := range rs {
		stored := storedOf(results[i])
		if !holds(results[i].Transaction, r, stored) {
			entries = append(entries, idempotency.Entry{Request: r, Result: stored})
		}
	}
	if len(entries) == 0 {
		return nil
	}
	return idempotency.Store(ctx, t.ent.IdempotencyKey, t.now, entries...)
}

// holds says whether txn holds r's key and gives back its stored result.
func holds(txn *ent.CreditTransaction, r idempotency.Request, stored StoredResult) bool {
	if txn == nil || txn.Fingerprint == nil || txn.IdempotencyKey == nil ||
		txn.Actor != r.Scope || *txn.IdempotencyKey != r.Key.Key ||
		!bytes.Equal(*txn.Fingerprint, r.FingerprintBytes()) {
		return false
	}
	got, ok := derived(txn)
	return ok && got == stored
}

// ErrKnownKey says a batch met an idempotency key that already has a
// record; its operations are to be made one by one, which replay it.
var ErrKnownKey = errors.New("ledger: an idempotency key of the batch already has a record")

// noKnownKeys fails with ErrKnownKey when one of the keys has a record.
func (t *Tx) noKnownKeys(ctx context.Context, rs []idempotency.Request) error {
	found, err := idempotency.FindMany(ctx, t.ent.Client(), rs)
	if err != nil {
		return err
	}
	if len(found) > 0 {
		return ErrKnownKey
	}
	return nil
}

// sharesScopeWithRecords says whether the actor's scope may hold keys of
// requests that write no transaction (checkout in a user's scope, refunds
// in an admin's): no unique index stops a movement under such a key, so its
// key is looked up before the work even on a first attempt.
func (a Actor) sharesScopeWithRecords() bool {
	return a.Kind == ActorUser || a.Kind == ActorAdmin
}

// lookup says when an operation looks its key up.
type lookup int

const (
	// lookupFirst looks the key up before the work.
	lookupFirst lookup = iota
	// lookupOnRefusal is for an operation that refuses only before its
	// first write: on a first attempt, the key is looked up only if the
	// operation refuses (the retry of a request that succeeded must get its
	// result, not a refusal caused by its own effect). A key that exists
	// makes the insert of its transaction (or record) fail, which rolls
	// back and retries with the lookup first. Nearly every key is new, so
	// this saves statements under the account's lock. Actors whose scope
	// also holds record-only keys look up first regardless
	// (sharesScopeWithRecords).
	lookupOnRefusal
)

// once runs op on the locked user unless the key already has a result. req
// (with the name of the operation) is what the key's fingerprint covers.
func (t *Tx) once(ctx context.Context, actor Actor, key, opName string, req any, userID string,
	when lookup, op func(u *ent.User) (*Result, error),
) (*Result, error) {
	r, err := keyedRequest(actor, key, opName, req)
	if err != nil {
		return nil, err
	}
	u, err := t.lockUser(ctx, userID)
	if err != nil {
		return nil, err
	}
	t.serve(r)
	lookedUp := when == lookupFirst || t.attempt > 1 || actor.sharesScopeWithRecords()
	if lookedUp {
		if res, err := t.replay(ctx, r, u); res != nil || err != nil {
			return res, err
		}
	}
	res, err := op(u)
	if err != nil {
		if _, refused := apperr.As(err); refused && !lookedUp {
			if res, perr := t.replay(ctx, r, u); res != nil || perr != nil {
				return res, perr
			}
		}
		return nil, err
	}
	res.Balance = u.CreditsBalance
	res.User = u
	if err := t.remember(ctx, []idempotency.Request{r}, []*Result{res}); err != nil {
		return nil, err
	}
	return res, nil
}
