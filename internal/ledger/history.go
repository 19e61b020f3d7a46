package ledger

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tally-billing/tally/ent/credittransaction"
	"github.com/tally-billing/tally/internal/apperr"
)

// Past balances and statements are sums of postings, never the cached
// balance: they are what an auditor recomputes from the ledger. A
// transaction's postings carry its created_at, which is taken when its
// database transaction begins (before the user's lock), so a transaction
// may commit a few milliseconds after a later-stamped one; a question about
// a moment at least that far in the past always has the same answer.

// BalanceAt is the user's balance as the ledger recorded it at the moment
// at: the sum of the postings on the user's account created at or before
// it. A moment in the future is INVALID_ARGUMENT: the ledger knows only the
// present balance, and answering it for a future time would pass off a
// guess as a record. So is one before EarliestTime.
func (s *Service) BalanceAt(ctx context.Context, userID string, at time.Time) (int64, error) {
	if err := s.inRange("time", at); err != nil {
		return 0, err
	}
	var balance int64
	err := s.db.SQL.QueryRowContext(ctx, s.db.Rebind(`SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT)
		FROM credit_ledgers WHERE user_id = ? AND created_at <= ?`), userID, at.UTC(),
	).Scan(&balance)
	if err != nil {
		return 0, fmt.Errorf("ledger: reading the balance of %s at %s: %w", userID, at.UTC().Format(time.RFC3339Nano), err)
	}
	return balance, nil
}

// EarliestTime bounds the times past balances and statements take: the
// Unix epoch, long before any ledger. Go's zero time (year 1) would
// otherwise be echoed back as a null by the Time scalar.
var EarliestTime = time.Unix(0, 0).UTC()

// inRange holds a time to [EarliestTime, now].
func (s *Service) inRange(name string, at time.Time) error {
	if at.Before(EarliestTime) {
		return apperr.Invalid(name, "%s %s is before %s", name,
			at.UTC().Format(time.RFC3339Nano), EarliestTime.Format(time.RFC3339))
	}
	if now := s.now(); at.After(now) {
		return apperr.Invalid(name, "%s %s is in the future (now is %s)", name,
			at.UTC().Format(time.RFC3339Nano), now.UTC().Format(time.RFC3339Nano))
	}
	return nil
}

// Statement is a user's account over the half-open period [From, To): a
// transaction stamped exactly From is in it, one stamped exactly To is in
// the next period. OpeningBalance + the sum of Totals' amounts =
// ClosingBalance.
type Statement struct {
	UserID string
	From   time.Time
	To     time.Time
	// OpeningBalance is the sum of the user's postings before From.
	OpeningBalance int64
	// ClosingBalance is the sum of the user's postings before To.
	ClosingBalance int64
	// Totals has one entry per kind of transaction in the period, in the
	// order of the kinds' names.
	Totals []KindTotal
}

// KindTotal is what the period's transactions of one kind did.
type KindTotal struct {
	Kind credittransaction.Kind
	// Transactions counts them (a reservation's hold and release move
	// nothing on the balance, but they are counted).
	Transactions int64
	// Amount is their net change of the balance: negative for spends,
	// revocations, expiries, clawbacks and dispute holds.
	Amount int64
}

// Statement reads the user's statement for [from, to). from after to, to
// in the future, or from before EarliestTime is INVALID_ARGUMENT; from equal to to is an empty
// period. Its cost is one statement that sums the user's postings (as
// BalanceAt does) and groups the period's transactions; one statement, so
// that the balances and totals come from one snapshot on both databases.
func (s *Service) Statement(ctx context.Context, userID string, from, to time.Time) (Statement, error) {
	if from.After(to) {
		return Statement{}, apperr.Invalid("from", "from (%s) is after to (%s)",
			from.UTC().Format(time.RFC3339Nano), to.UTC().Format(time.RFC3339Nano))
	}
	if err := s.inRange("from", from); err != nil {
		return Statement{}, err
	}
	if err := s.inRange("to", to); err != nil {
		return Statement{}, err
	}
	from, to = from.UTC(), to.UTC()
	st := Statement{UserID: userID, From: from, To: to, Totals: []KindTotal{}}
	// The first row (an empty kind, which no transaction has) carries the
	// balances; the others are the totals by kind.
	rows, err := s.db.SQL.QueryContext(ctx, s.db.Rebind(statementQuery),
		userID, from, userID, to,
		userID, from, to, userID, from, to)
	if err != nil {
		return Statement{}, fmt.Errorf("ledger: reading the statement of %s: %w", userID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var kind string
		var a, b int64
		if err := rows.Scan(&kind, &a, &b); err != nil {
			return Statement{}, sumError(err, "ledger: reading the statement of %s: %w", userID)
		}
		if b < -MaxAmount || b > MaxAmount {
			return Statement{}, tooLarge()
		}
		if kind == "" {
			st.OpeningBalance, st.ClosingBalance = a, b
			continue
		}
		st.Totals = append(st.Totals, KindTotal{Kind: credittransaction.Kind(kind), Transactions: a, Amount: b})
	}
	if err := rows.Err(); err != nil {
		return Statement{}, sumError(err, "ledger: reading the statement of %s: %w", userID)
	}
	return st, nil
}

// A sum of many postings can leave 64 bits (PostgreSQL's CAST fails with
// numeric_value_out_of_range, SQLite's SUM with "integer overflow"), and one
// past ±MaxAmount is one a JSON client cannot read exactly: either is a
// period too long for one statement, not an internal error.
func sumError(err error, format string, userID string) error {
	var pgErr *pgconn.PgError
	if (errors.As(err, &pgErr) && pgErr.Code == "22003") || strings.Contains(err.Error(), "integer overflow") {
		return tooLarge()
	}
	return fmt.Errorf(format, userID, err)
}

func tooLarge() error {
	return apperr.New(apperr.InvalidArgument, "the period's totals exceed %d credits; ask for shorter periods", MaxAmount)
}

// statementQuery: both sums run on the (user_id, created_at) index of
// postings, the totals on the (user_id, created_at, id) index of
// transactions. A transaction that moved nothing on the balance (a
// reservation's hold) is counted with an amount of 0.
const statementQuery = `SELECT '' AS kind,
	(SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM credit_ledgers WHERE user_id = ? AND created_at < ?),
	(SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM credit_ledgers WHERE user_id = ? AND created_at < ?)
UNION ALL
SELECT t.kind, COUNT(*), CAST(COALESCE(SUM(p.net), 0) AS BIGINT)
	FROM credit_transactions t
	LEFT JOIN (SELECT transaction_id, SUM(amount) AS net FROM credit_ledgers
		WHERE user_id = ? AND created_at >= ? AND created_at < ? GROUP BY transaction_id) p
	ON p.transaction_id = t.id
	WHERE t.user_id = ? AND t.created_at >= ? AND t.created_at < ?
	GROUP BY t.kind
ORDER BY 1`
