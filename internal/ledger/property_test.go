package ledger_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/testdb"
)

// choices feeds the sequence: random numbers in the property test, the
// fuzzer's bytes in the fuzz target.
type choices interface {
	// pick returns a number from 0 to n-1; ok is false when input ran out.
	pick(n int) (int, bool)
}

type randChoices struct{ r *rand.Rand }

func (c randChoices) pick(n int) (int, bool) { return c.r.IntN(n), true }

type byteChoices struct{ data []byte }

func (c *byteChoices) pick(n int) (int, bool) {
	if len(c.data) == 0 {
		return 0, false
	}
	v := int(c.data[0]) % n
	c.data = c.data[1:]
	return v, true
}

// done is a request that succeeded, kept to be replayed.
type done struct {
	run   func(key string, variant bool) (*ledger.Result, error)
	key   string
	txnID string
}

// sequence runs random operations on a few users, checking after every one
// that the invariants hold, that a refused operation changed nothing, and
// that an idempotent replay returns the first result.
func sequence(t *testing.T, db *database.DB, in choices, maxOps int) {
	e := newEnv(t, db)
	ctx := context.Background()
	users := []string{e.user("u0").ID, e.user("u1").ID, e.user("u2").ID}
	var payments, reservations []string
	var history []done
	n := func(k int) int { v, _ := in.pick(k); return v }

	for step := 0; step < maxOps; step++ {
		op, ok := in.pick(13)
		if !ok {
			break
		}
		uid := users[n(len(users))]
		amount := int64(1 + n(150))
		key := fmt.Sprintf("k%d", step)
		before := e.snapshot()
		var res *ledger.Result
		var err error
		var run func(key string, variant bool) (*ledger.Result, error)
		switch op {
		case 0:
			var expires *time.Time
			if n(2) == 0 {
				at := e.clock.Now().Add(time.Duration(1+n(120)) * time.Minute)
				expires = &at
			}
			priority := n(3)
			run = func(k string, variant bool) (*ledger.Result, error) {
				a := amount
				if variant {
					a++
				}
				return e.l.Grant(ctx, admin, ledger.GrantRequest{UserID: uid, Amount: a, ExpiresAt: expires, Priority: priority, IdempotencyKey: k})
			}
		case 1:
			payments = append(payments, e.purchase(uid, amount).ID)
			before = e.snapshot()
		case 2, 3:
			run = func(k string, variant bool) (*ledger.Result, error) {
				a := amount
				if variant {
					a++
				}
				if op == 2 {
					return e.l.Spend(ctx, service, ledger.SpendRequest{UserID: uid, Amount: a, IdempotencyKey: k})
				}
				return e.l.Revoke(ctx, admin, ledger.RevokeRequest{UserID: uid, Amount: a, IdempotencyKey: k})
			}
		case 4, 5, 6:
			if len(payments) == 0 {
				continue
			}
			pid := payments[n(len(payments))]
			dispute := n(2) == 0
			run = func(k string, variant bool) (*ledger.Result, error) {
				switch {
				case op == 4:
					a := max(amount/2, 1)
					if variant {
						a++
					}
					return e.l.Clawback(ctx, stripe, ledger.ClawbackRequest{PaymentID: pid, Amount: a, Dispute: dispute, IdempotencyKey: k})
				case op == 5:
					return e.l.HoldPayment(ctx, stripe, ledger.PaymentRequest{PaymentID: pid, IdempotencyKey: k, Reason: fmt.Sprint(variant)})
				default:
					return e.l.ReleasePayment(ctx, stripe, ledger.PaymentRequest{PaymentID: pid, IdempotencyKey: k, Reason: fmt.Sprint(variant)})
				}
			}
		case 7:
			ttl := time.Duration(1+n(60)) * time.Minute
			run = func(k string, variant bool) (*ledger.Result, error) {
				a := max(amount/3, 1)
				if variant {
					a++
				}
				r, err := e.l.Reserve(ctx, service, ledger.ReserveRequest{UserID: uid, Amount: a, TTLSeconds: seconds(ttl), IdempotencyKey: k})
				if err == nil && !r.Replayed {
					reservations = append(reservations, r.Reservation.UserID+"|"+r.Reservation.ID)
				}
				return r, err
			}
		case 8, 9:
			if len(reservations) == 0 {
				continue
			}
			ref := reservations[n(len(reservations))]
			owner, rid := ref[:len(uid)], ref[len(uid)+1:]
			capture := int64(n(40))
			run = func(k string, variant bool) (*ledger.Result, error) {
				if op == 8 {
					c := capture
					if variant {
						c++
					}
					return e.l.Capture(ctx, service, ledger.CaptureRequest{UserID: owner, ReservationID: rid, Amount: new(int64(c)), IdempotencyKey: k})
				}
				return e.l.ReleaseReservation(ctx, service, ledger.ReleaseRequest{UserID: owner, ReservationID: rid, IdempotencyKey: k, Reason: fmt.Sprint(variant)})
			}
		case 10:
			e.clock.Advance(time.Duration(1+n(90)) * time.Minute)
			if _, err := e.l.ExpireLots(ctx); err != nil {
				t.Fatalf("step %d: expiring lots: %v", step, err)
			}
			if _, err := e.l.ExpireReservations(ctx); err != nil {
				t.Fatalf("step %d: expiring reservations: %v", step, err)
			}
		case 11:
			if len(history) == 0 {
				continue
			}
			d := history[n(len(history))]
			if n(2) == 0 {
				again, err := d.run(d.key, false)
				if err != nil || !again.Replayed || again.Transaction.ID != d.txnID {
					t.Fatalf("step %d: replaying key %s: %+v %v", step, d.key, again, err)
				}
			} else {
				_, err := d.run(d.key, true)
				if apperr.CodeOf(err) != apperr.IdempotencyKeyReused {
					t.Fatalf("step %d: key %s with another request: %v", step, d.key, err)
				}
			}
			if after := e.snapshot(); after != before {
				t.Fatalf("step %d: a replay changed the database", step)
			}
		case 12:
			status := user.StatusFrozen
			if n(2) == 0 {
				status = user.StatusActive
			}
			if err := db.Ent.User.UpdateOneID(uid).SetStatus(status).Exec(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if run != nil {
			res, err = run(key, false)
			if err != nil {
				switch apperr.CodeOf(err) {
				case apperr.InsufficientCredits, apperr.AccountFrozen, apperr.InvalidArgument, apperr.Conflict:
				default:
					t.Fatalf("step %d (op %d): unexpected error %v", step, op, err)
				}
				if after := e.snapshot(); after != before {
					t.Fatalf("step %d (op %d): refused (%v) but the database changed", step, op, err)
				}
			} else {
				if (op == 2 || op == 7 || op == 8) && res.Balance < 0 {
					t.Fatalf("step %d (op %d): balance %d after a spend", step, op, res.Balance)
				}
				history = append(history, done{run: run, key: key, txnID: res.Transaction.ID})
			}
		}
		e.check()
	}
}

func TestRandomSequences(t *testing.T) {
	seeds := []uint64{1, 2, 3}
	if testing.Short() {
		seeds = seeds[:1]
	}
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		for _, seed := range seeds {
			t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
				// Each seed on a database of its own.
				sdb := db
				if seed != seeds[0] {
					sdb = testdb.New(t, testdb.Kind(kindOf(db)))
				}
				sequence(t, sdb, randChoices{rand.New(rand.NewPCG(seed, seed))}, 300)
			})
		}
	})
}

func kindOf(db *database.DB) testdb.Kind {
	if db.Dialect == "postgres" {
		return testdb.Postgres
	}
	return testdb.SQLite
}

// FuzzSequences explores operation sequences from the fuzzer's bytes, on
// SQLite: go test -fuzz FuzzSequences ./internal/ledger
func FuzzSequences(f *testing.F) {
	f.Add([]byte{0, 0, 50, 2, 0, 20, 2, 0, 200, 11, 0, 0})
	f.Add([]byte{1, 1, 90, 2, 1, 80, 4, 1, 120, 0, 5, 0, 0, 6, 0, 0, 4, 0, 140, 0})
	f.Add([]byte{0, 2, 100, 1, 1, 7, 2, 60, 5, 8, 0, 0, 10, 10, 0, 30, 9, 0, 0, 12, 2, 2, 2, 2, 5})
	f.Fuzz(func(t *testing.T, data []byte) {
		db := testdb.New(t, testdb.SQLite)
		sequence(t, db, &byteChoices{data: data}, 200)
	})
}
