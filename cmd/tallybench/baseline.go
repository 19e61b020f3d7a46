package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tally-billing/tally/internal/pulid"
)

// rawStore runs the baselines: the least SQL a correct operation needs, on
// the benchmark's database but on a pool of its own (the server's size),
// so that a baseline neither borrows nor starves the server's connections.
// PostgreSQL's goes through pgx directly (pgxpool, statements prepared and
// cached per connection); SQLite's through database/sql.
type rawStore interface {
	// spendLocked is B1: BEGIN; SELECT … FOR UPDATE; INSERT the
	// transaction; INSERT its postings; UPDATE the balance; COMMIT.
	spendLocked(ctx context.Context, userID string) error
	// spendStatement is B2: the guarded update and the inserts as one
	// statement (PostgreSQL), or as close as the database allows (SQLite).
	spendStatement(ctx context.Context, userID string) error
	// balance is B3: the raw balance read.
	balance(ctx context.Context, userID string) (int64, error)
	// page is B3's history read: the keyset page after d's position, with
	// the look-ahead row the API also reads; it returns the ids in order.
	page(ctx context.Context, userID string, d depthCursor) ([]string, error)
	// completeCheckout is B4: record the event unless it is known, and if
	// it is new, pay the payment and credit its user. It reports whether
	// the event was applied (false: a duplicate).
	completeCheckout(ctx context.Context, eventID, paymentID string) (bool, error)
	Close()
}

// Actors recorded on the baselines' transactions, so that they can be told
// apart from Tally's.
const (
	rawActor     = "service:bench-raw"
	rawHookActor = "stripe:bench-raw"
)

// The baselines' SQL, shared by both drivers. PostgreSQL and SQLite both
// read $n placeholders.
const (
	sqlLock          = `SELECT credits_balance FROM users WHERE id = $1`
	sqlInsertSpend   = `INSERT INTO credit_transactions (id, created_at, kind, amount, actor, user_id) VALUES ($1, $2, 'SPEND', 1, '` + rawActor + `', $3)`
	sqlInsertPosting = `INSERT INTO credit_ledgers (id, created_at, transaction_id, account, amount, user_id, balance_after)
		VALUES ($1, $2, $3, $4, -1, $5, $6), ($7, $2, $3, 'system:spent', 1, NULL, NULL)`
	sqlUpdateBalance = `UPDATE users SET credits_balance = $1 WHERE id = $2`
	sqlSelectBalance = `SELECT credits_balance FROM users WHERE id = $1`
	// sqlDecrement is SQLite's B2 first step: the guarded update, which
	// both checks and takes the credit.
	sqlDecrement = `UPDATE users SET credits_balance = credits_balance - 1 WHERE id = $1 AND credits_balance >= 1 RETURNING credits_balance`
	// sqlSpendCTE is PostgreSQL's B2: one statement, whose data-modifying
	// CTEs run as one unit (the casts type parameters that a SELECT list
	// would otherwise read as text). The UPDATE's guard re-checks the row after
	// waiting on a concurrent writer's lock (READ COMMITTED), so it never
	// overdraws; when it matches nothing the inserts insert nothing.
	sqlSpendCTE = `WITH u AS (
		UPDATE users SET credits_balance = credits_balance - 1
		 WHERE id = $1 AND credits_balance >= 1
		RETURNING id, credits_balance
	), t AS (
		INSERT INTO credit_transactions (id, created_at, kind, amount, actor, user_id)
		SELECT $2::varchar, $5::timestamptz, 'SPEND', 1, '` + rawActor + `', u.id FROM u
		RETURNING id, user_id
	)
	INSERT INTO credit_ledgers (id, created_at, transaction_id, account, amount, user_id, balance_after)
	SELECT $3::varchar, $5::timestamptz, t.id, 'user:' || t.user_id, -1, t.user_id, u.credits_balance FROM t, u
	UNION ALL
	SELECT $4::varchar, $5::timestamptz, t.id, 'system:spent', 1, NULL, NULL FROM t`

	// The keyset page, in the order the API uses (created_at, then id,
	// both newest first), with the same columns, and one row more than the
	// page as the API reads to tell whether there is a next page.
	sqlPageFirst = `SELECT id, amount, kind, created_at FROM credit_transactions WHERE user_id = $1
		ORDER BY created_at DESC, id DESC LIMIT 51`
	sqlPageAfter = `SELECT id, amount, kind, created_at FROM credit_transactions WHERE user_id = $1
		AND (created_at, id) < ($2, $3) ORDER BY created_at DESC, id DESC LIMIT 51`

	// B4: the event's record first (its unique key makes a concurrent
	// duplicate wait for the first, then do nothing), then the payment,
	// the balance, the purchase transaction, its lot and its postings.
	sqlInsertEvent = `INSERT INTO processed_events (id, stripe_event_id, type, livemode, api_version, outcome, attempts, received_at, processed_at, payment_id)
		VALUES ($1, $2, 'checkout.session.completed', false, '2023-10-16', 'APPLIED', 1, $3, $3, $4)
		ON CONFLICT (stripe_event_id) DO NOTHING`
	sqlPayPayment = `UPDATE payments SET status = 'SUCCEEDED', paid_at = $2, updated_at = $2
		WHERE id = $1 AND status = 'PENDING' RETURNING user_id, credits`
	sqlCredit         = `UPDATE users SET credits_balance = credits_balance + $2 WHERE id = $1 RETURNING credits_balance`
	sqlInsertPurchase = `INSERT INTO credit_transactions (id, created_at, kind, amount, actor, user_id, payment_id)
		VALUES ($1, $2, 'PURCHASE', $3, '` + rawHookActor + `', $4, $5)`
	sqlInsertLot = `INSERT INTO credit_lots (id, created_at, updated_at, source, original, remaining, held, priority, transaction_id, payment_id, user_id)
		VALUES ($1, $2, $2, 'PURCHASE', $3, $3, 0, 0, $4, $5, $6)`
	sqlInsertPurchasePostings = `INSERT INTO credit_ledgers (id, created_at, transaction_id, account, amount, lot_id, user_id, balance_after)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8), ($9, $2, $3, 'system:purchases', $10, $6, NULL, NULL)`
)

// errEmpty is a baseline spend refused for want of credits: it must never
// happen in a run (the accounts are granted far more than a run can spend).
var errEmpty = errors.New("baseline account is empty")

// errNotPending is a new event whose payment is not pending: the harness
// sends one event per payment, so this is a bug of the harness or the
// baseline, never a normal outcome.
var errNotPending = errors.New("the event's payment is not pending")

// spendArgs are the values of one raw spend.
type spendArgs struct {
	now               time.Time
	txnID, led1, led2 string
}

func newSpendArgs() spendArgs {
	return spendArgs{now: time.Now().UTC(), txnID: pulid.New("txn"), led1: pulid.New("led"), led2: pulid.New("led")}
}

// purchaseArgs are the values of one raw purchase.
type purchaseArgs struct {
	now                                  time.Time
	eventRowID, txnID, lotID, led1, led2 string
}

func newPurchaseArgs() purchaseArgs {
	return purchaseArgs{now: time.Now().UTC(), eventRowID: pulid.New("pev"), txnID: pulid.New("txn"),
		lotID: pulid.New("lot"), led1: pulid.New("led"), led2: pulid.New("led")}
}

// pageRow is one row of a raw history page: the columns the API's page
// asks for, read in full so that the baseline pays for them too.
type pageRow struct {
	id        string
	amount    int64
	kind      string
	createdAt time.Time
}

// rawSpendOp adapts B1 or B2 to the runner: spend 1 credit from the
// account pick chooses, and count it when it commits.
func rawSpendOp(spend func(context.Context, string) error, set *accountSet, pick func() int) op {
	return func(ctx context.Context) error {
		i := pick()
		if err := spend(ctx, set.ids[i]); err != nil {
			return err
		}
		set.spent[i].Add(1)
		return nil
	}
}

// rawReadOp is W3's balance baseline.
func rawReadOp(r rawStore, userID string, want int64) op {
	return func(ctx context.Context) error {
		balance, err := r.balance(ctx, userID)
		if err != nil {
			return err
		}
		if balance != want {
			return fmt.Errorf("raw balance %d, want %d", balance, want)
		}
		return nil
	}
}

// rawPageOp is W3's history baseline at one depth, checked like the API's.
func rawPageOp(r rawStore, userID string, d depthCursor) op {
	return func(ctx context.Context) error {
		ids, err := r.page(ctx, userID, d)
		if err != nil {
			return err
		}
		if len(ids) <= historyPage || ids[0] != d.firstID {
			return fmt.Errorf("raw page at depth %d: %d rows from %s, want %d+1 from %s",
				d.depth, len(ids), first(ids), historyPage, d.firstID)
		}
		return nil
	}
}

// rows is what both drivers' result sets offer.
type rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// pageIDs reads a history page's rows (every column, as the API reads
// them) and returns their ids.
func pageIDs(rs rows) ([]string, error) {
	ids := make([]string, 0, historyPage+1)
	for rs.Next() {
		var r pageRow
		if err := rs.Scan(&r.id, &r.amount, &r.kind, &r.createdAt); err != nil {
			return nil, err
		}
		ids = append(ids, r.id)
	}
	return ids, rs.Err()
}
