package ledger

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/tally-billing/tally/ent"
)

// writeSQL writes a ledger transaction's rows on PostgreSQL in one
// statement: each table's rows arrive as arrays (unnest), so that the
// statement has one text whatever the batch (prepared once per
// connection), and the data-modifying WITH queries all run, in one round
// trip, while the accounts are locked. The outer SELECT counts what each
// one wrote, which the caller checks.
//
// Every part sees the snapshot the statement started with. That is safe
// here because the rows it updates are those of users this transaction
// has locked (and their lots, which only a holder of the user's lock
// changes), and each row is written by one part only. The foreign keys
// between the parts (a posting's transaction) are checked at the end of
// the statement, once every part has run.
const writeSQL = `WITH
lots AS (
	UPDATE credit_lots AS l SET remaining = v.remaining, updated_at = $1
	FROM unnest($2::text[], $3::bigint[]) AS v(id, remaining)
	WHERE l.id = v.id
	RETURNING 1
),
txns AS (
	INSERT INTO credit_transactions (id, created_at, user_id, kind, amount, reason, actor,
		idempotency_key, fingerprint, payment_id, reservation_id, metadata)
	SELECT v.id, $1, v.user_id, v.kind, v.amount, v.reason, v.actor,
		v.idempotency_key, v.fingerprint, v.payment_id, v.reservation_id, v.metadata::jsonb
	FROM unnest($4::text[], $5::text[], $6::text[], $7::bigint[], $8::text[], $9::text[],
		$10::text[], $11::bytea[], $12::text[], $13::text[], $14::text[])
		AS v(id, user_id, kind, amount, reason, actor, idempotency_key, fingerprint, payment_id, reservation_id, metadata)
	RETURNING 1
),
postings AS (
	INSERT INTO credit_ledgers (id, created_at, transaction_id, account, amount, user_id, lot_id, balance_after)
	SELECT v.id, $1, v.transaction_id, v.account, v.amount, v.user_id, v.lot_id, v.balance_after
	FROM unnest($15::text[], $16::text[], $17::text[], $18::bigint[], $19::text[], $20::text[], $21::bigint[])
		AS v(id, transaction_id, account, amount, user_id, lot_id, balance_after)
	RETURNING 1
),
balances AS (
	UPDATE users AS u SET credits_balance = COALESCE(v.balance, u.credits_balance),
		transaction_count = u.transaction_count + v.added, updated_at = $1
	FROM unnest($22::text[], $23::bigint[], $24::bigint[]) AS v(id, balance, added)
	WHERE u.id = v.id
	RETURNING 1
),
notified AS (
	SELECT pg_notify($25, v.payload) FROM unnest($26::text[]) WITH ORDINALITY AS v(payload, n) ORDER BY v.n
),
new_lots AS (
	INSERT INTO credit_lots (id, created_at, updated_at, user_id, source, original, remaining, held,
		expires_at, priority, payment_id, transaction_id)
	SELECT v.id, $1, $1, v.user_id, v.source, v.original, v.remaining, v.held,
		v.expires_at, v.priority, v.payment_id, v.transaction_id
	FROM unnest($27::text[], $28::text[], $29::text[], $30::bigint[], $31::bigint[], $32::bigint[],
		$33::timestamptz[], $34::bigint[], $35::text[], $36::text[])
		AS v(id, user_id, source, original, remaining, held, expires_at, priority, payment_id, transaction_id)
	RETURNING 1
)` + "\n" + writeCountsSQL

// writeParts is writeSQL's WITH queries, writeCountsSQL its outer SELECT:
// a caller's writes (Along) join them as WITH queries of their own.
var writeParts = writeSQL[:strings.LastIndex(writeSQL, "\n"+writeCountsSQL)]

const writeCountsSQL = `SELECT (SELECT count(*) FROM lots), (SELECT count(*) FROM txns), (SELECT count(*) FROM postings),
	(SELECT count(*) FROM balances), (SELECT count(*) FROM notified), (SELECT count(*) FROM new_lots)`

// NotificationEncoder encodes balance changes as PostgreSQL notifications
// on channel, one payload each, in order (package events decodes them).
type NotificationEncoder func(changes []BalanceChange) (channel string, payloads []string, err error)

// WithNotifications has the ledger publish each transaction's balance
// changes through PostgreSQL's NOTIFY, within the statement that writes
// them: the database delivers them when the transaction commits, and never
// if it rolls back.
func WithNotifications(encode NotificationEncoder) Option {
	return func(s *Service) { s.notifications = encode }
}

// writeStatement writes the lots drawn from, txns, w's new lots, postings
// and balances, and the notifications of w's changes, with writeSQL.
func (t *Tx) writeStatement(ctx context.Context, txns []*ent.CreditTransaction, w *written) error {
	args, want, err := t.writeArgs(txns, w)
	if err != nil {
		return err
	}
	text, along, alongArgs, alongWant := writeSQL, t.along, []any(nil), []int64(nil)
	if len(along) > 0 {
		text, alongArgs, alongWant = alongStatement(writeParts, writeCountsSQL, len(args), along)
		args = append(args, alongArgs...)
	}
	t.along = nil
	got := make([]int64, len(want)+len(alongWant))
	if err := t.queryCounts(ctx, text, args, got); err != nil {
		return fmt.Errorf("ledger: writing %d transactions: %w", len(txns), keyTaken(err))
	}
	if writeCounts(got[:len(want)]) != want {
		return fmt.Errorf("ledger: wrote %v rows (lots, transactions, postings, users, notifications, new lots), not %v", got[:len(want)], want)
	}
	if err := checkAlong(along, got[len(want):], alongWant); err != nil {
		return err
	}
	clear(t.dirtyLots)
	return nil
}

// writeCounts are the rows each part of writeSQL wrote, in its order.
type writeCounts [6]int64

// writeArgs are writeSQL's arguments, and the counts it must return.
func (t *Tx) writeArgs(txns []*ent.CreditTransaction, w *written) ([]any, writeCounts, error) {
	lotIDs := slices.Sorted(maps.Keys(t.dirtyLots))
	remaining := make([]int64, len(lotIDs))
	for i, id := range lotIDs {
		remaining[i] = t.dirtyLots[id].Remaining
	}

	n := len(txns)
	txnIDs, userIDs, kinds, actors := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	amounts := make([]int64, n)
	reasons, keys, paymentIDs, reservationIDs, metadata := make([]*string, n), make([]*string, n), make([]*string, n), make([]*string, n), make([]*string, n)
	fingerprints := make([][]byte, n)
	for i, txn := range txns {
		txnIDs[i], userIDs[i], kinds[i], actors[i], amounts[i] = txn.ID, txn.UserID, string(txn.Kind), txn.Actor, txn.Amount
		if txn.Reason != "" {
			reasons[i] = &txn.Reason
		}
		keys[i], paymentIDs[i], reservationIDs[i] = txn.IdempotencyKey, txn.PaymentID, txn.ReservationID
		if txn.Fingerprint != nil {
			fingerprints[i] = *txn.Fingerprint
		}
		if len(txn.Metadata) > 0 {
			encoded, err := json.Marshal(txn.Metadata)
			if err != nil {
				return nil, writeCounts{}, fmt.Errorf("ledger: encoding the metadata of %s: %w", txn.ID, err)
			}
			text := string(encoded)
			metadata[i] = &text
		}
	}

	p := len(w.postings)
	postingIDs, postingTxns, accounts := make([]string, p), make([]string, p), make([]string, p)
	postingAmounts := make([]int64, p)
	postingUsers, postingLots := make([]*string, p), make([]*string, p)
	balancesAfter := make([]*int64, p)
	for i, row := range w.postings {
		postingIDs[i], postingTxns[i], accounts[i], postingAmounts[i] = row.ID, row.TransactionID, row.Account, row.Amount
		postingUsers[i], postingLots[i], balancesAfter[i] = row.UserID, row.LotID, row.BalanceAfter
	}

	// In id order, as every batch updates users, so that two never wait
	// on each other's rows in opposite orders.
	users := slices.SortedFunc(slices.Values(w.touched), func(a, b *ent.User) int { return strings.Compare(a.ID, b.ID) })
	ids, balances, added := make([]string, len(users)), make([]*int64, len(users)), make([]int64, len(users))
	for i, u := range users {
		ids[i], added[i] = u.ID, w.counts[u.ID]
		if w.changed[u.ID] {
			balance := w.balances[u.ID]
			balances[i] = &balance
		}
	}

	channel, payloads := "", []string{}
	if t.s.notifications != nil && len(w.changes) > 0 {
		var err error
		if channel, payloads, err = t.s.notifications(w.changes); err != nil {
			return nil, writeCounts{}, fmt.Errorf("ledger: publishing balance changes: %w", err)
		}
	}

	l := len(w.newLots)
	newIDs, newUsers, sources := make([]string, l), make([]string, l), make([]string, l)
	originals, newRemaining, held, priorities := make([]int64, l), make([]int64, l), make([]int64, l), make([]int64, l)
	expires := make([]*time.Time, l)
	newPayments, newTxns := make([]*string, l), make([]string, l)
	for i, lot := range w.newLots {
		newIDs[i], newUsers[i], sources[i] = lot.ID, lot.UserID, string(lot.Source)
		originals[i], newRemaining[i], held[i], priorities[i] = lot.Original, lot.Remaining, lot.Held, int64(lot.Priority)
		expires[i], newPayments[i], newTxns[i] = lot.ExpiresAt, lot.PaymentID, lot.TransactionID
	}

	args := []any{t.now,
		lotIDs, remaining,
		txnIDs, userIDs, kinds, amounts, reasons, actors, keys, fingerprints, paymentIDs, reservationIDs, metadata,
		postingIDs, postingTxns, accounts, postingAmounts, postingUsers, postingLots, balancesAfter,
		ids, balances, added,
		channel, payloads,
		newIDs, newUsers, sources, originals, newRemaining, held, expires, priorities, newPayments, newTxns,
	}
	want := writeCounts{int64(len(lotIDs)), int64(n), int64(p), int64(len(users)), int64(len(payloads)), int64(l)}
	return args, want, nil
}
