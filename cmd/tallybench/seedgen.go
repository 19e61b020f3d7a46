package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/tally-billing/tally/ent/creditlot"
	"github.com/tally-billing/tally/ent/creditreservation"
	"github.com/tally-billing/tally/ent/credittransaction"
	"github.com/tally-billing/tally/internal/admin"
	"github.com/tally-billing/tally/internal/idempotency"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/pulid"
)

// seedUser is one user's history, drawn from a random stream of its own so
// that it can be walked twice with the same outcome: once to learn the
// final balance and each lot's final remaining (which the user and lot
// rows carry, and which must be written before the postings naming them),
// and once to write the rows.
type seedUser struct {
	externalID string
	seed       uint64
	txns       int
	created    time.Time
	end        time.Time
}

// seedEvent is one transaction of a user's history, or two for a spend
// through a reservation: a HOLD at at, then its CAPTURE at captured.
type seedEvent struct {
	grant    bool
	amount   int64
	at       time.Time
	captured time.Time // zero: a plain spend
}

// walk calls fn with each transaction of the history, the balance before
// it known. Grants keep the account stocked; spends never exceed the
// balance, as the real ledger refuses those.
func (u seedUser) walk(fn func(i int, e seedEvent)) {
	r := rand.New(rand.NewPCG(u.seed, 0x7a11))
	var balance int64
	span := u.end.Sub(u.created)
	step := span / time.Duration(u.txns+1)
	for i := 0; i < u.txns; i++ {
		at := u.created.Add(span * time.Duration(i+1) / time.Duration(u.txns+1))
		if step > 2 {
			// Jitter of up to half a step back keeps the times increasing.
			at = at.Add(-time.Duration(r.Int64N(int64(step / 2))))
		}
		e := seedEvent{at: at.Truncate(time.Microsecond)}
		first := i
		switch {
		case balance < 100 || r.IntN(10) == 0:
			e.grant, e.amount = true, (1+r.Int64N(10))*100
			balance += e.amount
		default:
			e.amount = 1 + r.Int64N(min(balance, 100))
			balance -= e.amount
			if i+1 < u.txns && r.IntN(8) == 0 {
				// A quarter step later is still before the next event.
				e.captured = e.at.Add(min(step/4, 5*time.Minute)).Truncate(time.Microsecond)
				i++
			}
		}
		fn(first, e)
	}
}

// lotEnd is a lot's state once the whole history has run.
type lotEnd struct {
	remaining int64
	updated   time.Time
}

// plan walks the history without writing: lots are drawn first in, first
// out (every seeded lot has priority 0 and no expiry, so spend order is
// creation order).
func (u seedUser) plan() (balance int64, lots []lotEnd, last time.Time) {
	head := 0
	last = u.created
	u.walk(func(_ int, e seedEvent) {
		last = e.at
		if !e.captured.IsZero() {
			last = e.captured
		}
		at := last
		if e.grant {
			lots = append(lots, lotEnd{remaining: e.amount, updated: e.at})
			balance += e.amount
			return
		}
		balance -= e.amount
		for left := e.amount; left > 0; head++ {
			take := min(left, lots[head].remaining)
			lots[head].remaining -= take
			lots[head].updated = at
			left -= take
			if lots[head].remaining > 0 {
				break
			}
		}
	})
	return balance, lots, last
}

// Reasons a seeded transaction carries; admin grants require one.
const (
	seedGrantReason = "support goodwill"
	seedSpendReason = "api usage"
)

// seedKey is the client's idempotency key of a seeded transaction; grants
// share the admin's scope, so the key names the user.
func seedKey(u seedUser, i int) string { return fmt.Sprintf("seed-%s-%d", u.externalID, i) }

// emit writes the user's rows into b as the real code would have: admin
// grants (transaction holding its key, lot, two postings, audit row) and
// user spends (transaction holding its key, a posting per lot drawn, the
// spent posting), one in eight of them through a reservation captured at
// once (whose HOLD has a key record as well, see package idempotency).
func (u seedUser) emit(b *copyBatch, adminID string) error {
	balance, ends, last := u.plan()
	userID := pulid.NewAt("usr", u.created)
	b.user(userID, u, balance, last)
	w := &historyWriter{
		b: b, u: u, ends: ends, userID: userID, adminID: adminID,
		admin: ledger.Actor{Kind: ledger.ActorAdmin, ID: adminID},
		user:  ledger.Actor{Kind: ledger.ActorUser, ID: userID},
	}
	var err error
	u.walk(func(i int, e seedEvent) {
		if err != nil {
			return
		}
		if e.grant {
			err = w.grant(i, e)
		} else {
			err = w.spend(i, e)
		}
	})
	if err == nil && w.running != balance {
		err = fmt.Errorf("seed: %s: the second walk ended at %d, the first at %d", u.externalID, w.running, balance)
	}
	return err
}

// historyWriter is the state of one user's second walk: the lots still
// holding credits, oldest first, and the running balance.
type historyWriter struct {
	b           *copyBatch
	u           seedUser
	ends        []lotEnd
	granted     int // lots made so far: the index into ends
	fifo        []openLot
	running     int64
	userID      string
	adminID     string
	admin, user ledger.Actor
}

type openLot struct {
	id        string
	remaining int64
}

func (w *historyWriter) grant(i int, e seedEvent) error {
	b, userID, account := w.b, w.userID, ledger.UserAccount(w.userID)
	txnID, lotID, key := pulid.NewAt("txn", e.at), pulid.NewAt("lot", e.at), seedKey(w.u, i)
	end := w.ends[w.granted]
	w.granted++
	w.fifo = append(w.fifo, openLot{id: lotID, remaining: e.amount})
	before := w.running
	w.running += e.amount
	r, err := seedRequest(w.admin, key, "grant", ledger.GrantRequest{
		UserID: userID, Amount: e.amount, Reason: seedGrantReason, IdempotencyKey: key,
	})
	if err != nil {
		return err
	}
	b.transaction(txnID, e, credittransaction.KindGrant, seedGrantReason, r, userID, nil)
	b.lot(lotID, e, end, txnID, userID)
	b.posting(e.at, ledger.AccountGrants, -e.amount, &lotID, txnID, "", 0)
	b.posting(e.at, account, e.amount, &lotID, txnID, userID, w.running)
	b.adminAction(e, w.adminID, userID, txnID, before, w.running)
	return nil
}

// spend writes a spend, or a hold and the capture that spends it.
func (w *historyWriter) spend(i int, e seedEvent) error {
	b, userID := w.b, w.userID
	kind, spent, key := credittransaction.KindSpend, e, seedKey(w.u, i)
	r, err := seedRequest(w.user, key, "spend", ledger.SpendRequest{
		UserID: userID, Amount: e.amount, Reason: seedSpendReason, IdempotencyKey: key,
	})
	var rsvID *string
	if !e.captured.IsZero() {
		id, rerr := b.reserve(e, userID, w.user, key, w.running)
		rsvID, spent = &id, seedEvent{amount: e.amount, at: e.captured}
		kind, key = credittransaction.KindCapture, seedKey(w.u, i+1)
		r, err = seedRequest(w.user, key, "capture", ledger.CaptureRequest{
			UserID: userID, ReservationID: id, Reason: seedSpendReason, IdempotencyKey: key,
		}.Fingerprinted())
		err = errors.Join(rerr, err)
	}
	if err != nil {
		return err
	}
	txnID := pulid.NewAt("txn", spent.at)
	b.transaction(txnID, spent, kind, seedSpendReason, r, userID, rsvID)
	for left := e.amount; left > 0; {
		lot := &w.fifo[0]
		take := min(left, lot.remaining)
		lot.remaining -= take
		w.running -= take
		left -= take
		b.posting(spent.at, ledger.UserAccount(userID), -take, &lot.id, txnID, userID, w.running)
		if lot.remaining == 0 {
			w.fifo = w.fifo[1:]
		}
	}
	b.posting(spent.at, ledger.AccountSpent, e.amount, nil, txnID, "", 0)
	return nil
}

// The rows, column by column, in the order of seedColumns. The request id
// of an audit row is the server's own (internal/server/requestid.go).

// user writes the user's row with their final balance and count of
// transactions (u.txns: a hold and its capture are two), as the ledger
// keeps them.
func (b *copyBatch) user(id string, u seedUser, balance int64, updated time.Time) {
	b.add(tUsers, id, u.created, updated, u.externalID, u.externalID+"@example.com", balance, int64(u.txns), "ACTIVE")
}

// transaction writes a transaction holding the key of r (its actor is the
// key's scope).
func (b *copyBatch) transaction(id string, e seedEvent, kind credittransaction.Kind, reason string,
	r idempotency.Request, userID string, reservationID *string,
) {
	b.txns++
	var rsv any
	if reservationID != nil {
		rsv = *reservationID
	}
	b.add(tTransactions, id, e.at, string(kind), e.amount, reason, r.Scope, r.Key.Key, r.FingerprintBytes(), userID, rsv)
}

// reserve writes a reservation already captured in full (its capture is
// the caller's next transaction), the HOLD transaction that opened it,
// without postings, holding the key of the reserve request, and that key's
// record (a HOLD has no posting to read the balance back from); it returns
// the reservation's id. The hold leaves the balance as it was.
func (b *copyBatch) reserve(e seedEvent, userID string, actor ledger.Actor, key string, balance int64) (string, error) {
	id := pulid.NewAt("res", e.at)
	b.add(tReservations, id, e.at, e.captured, e.amount, e.amount, string(creditreservation.StatusCaptured),
		e.at.Add(ledger.DefaultReservationTTL), seedSpendReason, e.captured, userID)
	r, err := seedRequest(actor, key, "reserve", ledger.ReserveRequest{
		UserID: userID, Amount: e.amount, Reason: seedSpendReason, IdempotencyKey: key,
	}.Fingerprinted())
	if err != nil {
		return "", err
	}
	txnID := pulid.NewAt("txn", e.at)
	b.transaction(txnID, e, credittransaction.KindHold, seedSpendReason, r, userID, &id)
	return id, b.record(e.at, r, ledger.StoredResult{TransactionID: txnID, ReservationID: id, Balance: balance, Amount: e.amount})
}

func (b *copyBatch) lot(id string, e seedEvent, end lotEnd, txnID, userID string) {
	b.add(tLots, id, e.at, end.updated, string(creditlot.SourceGrant), e.amount, end.remaining, int64(0), int64(0), txnID, userID)
}

func (b *copyBatch) posting(at time.Time, account string, amount int64, lotID *string, txnID, userID string, balanceAfter int64) {
	var lot, user, after any
	if lotID != nil {
		lot = *lotID
	}
	if userID != "" {
		user, after = userID, balanceAfter
	}
	b.add(tPostings, pulid.NewAt("led", at), at, account, amount, after, lot, txnID, user)
}

func (b *copyBatch) adminAction(e seedEvent, adminID, userID, txnID string, before, after int64) {
	b.add(tAdminActions, pulid.NewAt("adm", e.at), e.at, admin.ActionGrantCredits, userID, e.amount,
		seedGrantReason, before, after, pulid.NewAt("req", e.at), adminID, userID, txnID)
}

// seedRequest is the key and fingerprint the ledger computes for the same
// request.
func seedRequest(actor ledger.Actor, key, op string, req any) (idempotency.Request, error) {
	r, err := idempotency.NewRequest(actor.String(), key, op, req)
	if err != nil {
		return r, fmt.Errorf("seed: fingerprinting key %s: %w", key, err)
	}
	return r, nil
}

// record writes the idempotency record of r with its result.
func (b *copyBatch) record(at time.Time, r idempotency.Request, res ledger.StoredResult) error {
	key := r.Key.Key
	result, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("seed: encoding the result of key %s: %w", key, err)
	}
	b.add(tKeys, pulid.NewAt("idk", at), at, r.Scope, r.Key.Key, r.Fingerprint, result)
	return nil
}
