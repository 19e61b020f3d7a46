package ledger_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/tally-billing/tally/ent/credittransaction"
	"github.com/tally-billing/tally/ent/idempotencykey"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/idempotency"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/pulid"
	"github.com/tally-billing/tally/internal/testdb"
)

// answer is what a client reads of a result: replays must give it back
// byte for byte.
func answer(t *testing.T, r *ledger.Result) string {
	t.Helper()
	a := struct {
		ledger.StoredResult
		Kind     string
		Postings []string
	}{StoredResult: ledger.StoredResult{Balance: r.Balance, Amount: r.Amount}}
	if r.Transaction != nil {
		a.TransactionID, a.Kind = r.Transaction.ID, string(r.Transaction.Kind)
		for _, p := range r.Transaction.Edges.Postings {
			a.Postings = append(a.Postings, p.ID)
		}
	}
	if r.Reservation != nil {
		a.ReservationID = r.Reservation.ID
	}
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestMovementKeysAreHeldByTheirTransactions: a movement's key is stored on
// its transaction (with the fingerprint as 32 bytes), with no record unless
// the transaction cannot give the result back (a reservation's HOLD and
// RELEASE have no posting to read the balance from); every kind replays the
// first answer exactly, and refuses another request with the key.
func TestMovementKeysAreHeldByTheirTransactions(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		u := e.user("alice")
		e.grant(u.ID, 100)
		var rsvID string
		ops := []struct {
			name, key string
			record    bool // a record is kept beside the transaction
			run       func(amount int64) (*ledger.Result, error)
		}{
			{"spend", "k-spend", false, func(a int64) (*ledger.Result, error) {
				return e.l.Spend(ctx, service, ledger.SpendRequest{UserID: u.ID, Amount: a, IdempotencyKey: "k-spend"})
			}},
			{"grant", "k-grant", false, func(a int64) (*ledger.Result, error) {
				return e.l.Grant(ctx, service, ledger.GrantRequest{UserID: u.ID, Amount: a, IdempotencyKey: "k-grant"})
			}},
			{"revoke", "k-revoke", false, func(a int64) (*ledger.Result, error) {
				return e.l.Revoke(ctx, service, ledger.RevokeRequest{UserID: u.ID, Amount: a, IdempotencyKey: "k-revoke"})
			}},
			{"reserve", "k-reserve", true, func(a int64) (*ledger.Result, error) {
				r, err := e.l.Reserve(ctx, service, ledger.ReserveRequest{UserID: u.ID, Amount: a, IdempotencyKey: "k-reserve"})
				if err == nil {
					rsvID = r.Reservation.ID
				}
				return r, err
			}},
			{"capture", "k-capture", false, func(a int64) (*ledger.Result, error) {
				return e.l.Capture(ctx, service, ledger.CaptureRequest{UserID: u.ID, ReservationID: rsvID, Amount: &a, IdempotencyKey: "k-capture"})
			}},
		}
		for _, op := range ops {
			first, err := op.run(4)
			if err != nil {
				t.Fatalf("%s: %v", op.name, err)
			}
			again, err := op.run(4)
			if err != nil || !again.Replayed {
				t.Fatalf("%s again: %+v, %v; want a replay", op.name, again, err)
			}
			if a, b := answer(t, first), answer(t, again); a != b {
				t.Errorf("%s: replay answered %s, first %s", op.name, b, a)
			}
			if _, err := op.run(3); apperr.CodeOf(err) != apperr.IdempotencyKeyReused {
				t.Errorf("%s with another amount: %v, want IDEMPOTENCY_KEY_REUSED", op.name, err)
			}
			txn := db.Ent.CreditTransaction.Query().Where(credittransaction.IdempotencyKey(op.key)).OnlyX(ctx)
			if txn.Fingerprint == nil || len(*txn.Fingerprint) != 32 {
				t.Errorf("%s: transaction's fingerprint %v, want 32 bytes", op.name, txn.Fingerprint)
			}
			if n := db.Ent.IdempotencyKey.Query().Where(idempotencykey.Key(op.key)).CountX(ctx); n != map[bool]int{false: 0, true: 1}[op.record] {
				t.Errorf("%s: %d records, want a record %v", op.name, n, op.record)
			}
		}
		e.check()
	})
}

// TestKeysStoredTheOldWayStillReplay: a key stored by an earlier version (a
// record beside a transaction without a fingerprint) replays its recorded
// result, through the spend path that does not look keys up first (the
// transaction's unique index sends it to the lookup) and through one that
// does; another request with it is refused and changes nothing.
func TestKeysStoredTheOldWayStillReplay(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		u := e.user("alice")
		e.grant(u.ID, 100)
		req := ledger.SpendRequest{UserID: u.ID, Amount: 7, IdempotencyKey: "old"}
		txn := db.Ent.CreditTransaction.Create().SetID(pulid.New("txn")).SetUserID(u.ID).
			SetKind(credittransaction.KindSpend).SetAmount(7).SetActor(service.String()).
			SetIdempotencyKey("old").SetCreatedAt(e.clock.Now()).SaveX(ctx)
		r, err := idempotency.NewRequest(service.String(), "old", "spend", req)
		if err != nil {
			t.Fatal(err)
		}
		recorded := ledger.StoredResult{TransactionID: txn.ID, Balance: 93, Amount: 7}
		if err := idempotency.Store(ctx, db.Ent.IdempotencyKey, e.clock.Now(), idempotency.Entry{Request: r, Result: recorded}); err != nil {
			t.Fatal(err)
		}
		before := e.snapshot()
		res, err := e.l.Spend(ctx, service, req)
		if err != nil || !res.Replayed || res.Transaction.ID != txn.ID || res.Balance != 93 || res.Amount != 7 {
			t.Fatalf("replay of an old key: %+v, %v", res, err)
		}
		if after := e.snapshot(); after != before {
			t.Fatalf("the replay changed the ledger:\n%s\n%s", before, after)
		}
		req.Amount = 8
		_, err = e.l.Spend(ctx, service, req)
		e.refused(err, apperr.IdempotencyKeyReused, before)
		_, err = e.l.Revoke(ctx, service, ledger.RevokeRequest{UserID: u.ID, Amount: 1, IdempotencyKey: "old"})
		e.refused(err, apperr.IdempotencyKeyReused, before)
	})
}

// TestKeysOfRecordsAloneAreNotSpentAgain: a key a user's checkout recorded
// (no transaction holds it, so no unique index of the transactions stops a
// movement under it) is refused to the user's spends and grants, though
// these do not look keys up first for other callers.
func TestKeysOfRecordsAloneAreNotSpentAgain(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		u := e.user("alice")
		e.grant(u.ID, 100)
		self := ledger.Actor{Kind: ledger.ActorUser, ID: u.ID}
		r, err := idempotency.NewRequest(self.String(), "co", "checkout", "pkg_1")
		if err != nil {
			t.Fatal(err)
		}
		if err := idempotency.Store(ctx, db.Ent.IdempotencyKey, e.clock.Now(), idempotency.Entry{Request: r, Result: struct{}{}}); err != nil {
			t.Fatal(err)
		}
		before := e.snapshot()
		_, err = e.l.Spend(ctx, self, ledger.SpendRequest{UserID: u.ID, Amount: 1, IdempotencyKey: "co"})
		e.refused(err, apperr.IdempotencyKeyReused, before)
		adminKey, err := idempotency.NewRequest(admin.String(), "refund-1", "refund", "pay_1")
		if err != nil {
			t.Fatal(err)
		}
		if err := idempotency.Store(ctx, db.Ent.IdempotencyKey, e.clock.Now(), idempotency.Entry{Request: adminKey, Result: struct{}{}}); err != nil {
			t.Fatal(err)
		}
		before = e.snapshot()
		_, err = e.l.Grant(ctx, admin, ledger.GrantRequest{UserID: u.ID, Amount: 1, IdempotencyKey: "refund-1"})
		e.refused(err, apperr.IdempotencyKeyReused, before)
	})
}
