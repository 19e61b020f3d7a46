package ledger

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/tally-billing/tally/ent/creditreservation"
	"github.com/tally-billing/tally/internal/apperr"
)

// balanceSelect is the one text of Balance and Balances; the caller ends it
// with the placeholders of the ids. It sums the user's open reservations,
// the credits left in lots past their expiry that the sweep has not yet
// expired (few, through the (user_id, expires_at) index of lots with
// credits left), and what disputes hold: the unexpired lots' credits are
// the positive part of the balance less the expired ones, since lots hold
// exactly that part (an invariant of the checks), and are not summed, so a
// balance read costs the same however many lots the user has.
// available() reads the lots themselves under the account's lock.
const balanceSelect = `SELECT u.id, u.credits_balance,
	(SELECT CAST(COALESCE(SUM(r.amount), 0) AS BIGINT) FROM credit_reservations r
		WHERE r.user_id = u.id AND r.status = ? AND r.expires_at > ?),
	(SELECT CAST(COALESCE(SUM(l.remaining), 0) AS BIGINT) FROM credit_lots l
		WHERE l.user_id = u.id AND l.remaining > 0 AND l.expires_at <= ?),
	(SELECT CAST(COALESCE(SUM(l.held), 0) AS BIGINT) FROM credit_lots l WHERE l.user_id = u.id AND l.held > 0)
FROM users u WHERE u.id IN (`

// MaxBalanceBatch bounds the ids of one Balances call, far below what
// either database accepts as parameters of one statement.
const MaxBalanceBatch = 1000

// Balance reads a user's balance in one statement: one snapshot of the
// user's row, lots and reservations (a transaction of several reads would
// not give that on PostgreSQL's READ COMMITTED), and one round trip.
func (s *Service) Balance(ctx context.Context, userID string) (Balance, error) {
	all, err := s.Balances(ctx, []string{userID})
	if err != nil {
		return Balance{}, err
	}
	b, ok := all[userID]
	if !ok {
		return Balance{}, apperr.New(apperr.NotFound, "no user with id %q", userID)
	}
	return b, nil
}

// Balances reads the balances of several users in one statement (a page of
// users shows theirs for the cost of one). Each is what Balance would say
// of that user at the statement's snapshot; ids of no user are absent from
// the map, so that the caller decides what a missing user means.
func (s *Service) Balances(ctx context.Context, userIDs []string) (map[string]Balance, error) {
	out := make(map[string]Balance, len(userIDs))
	if len(userIDs) == 0 {
		return out, nil
	}
	if len(userIDs) > MaxBalanceBatch {
		return nil, apperr.New(apperr.InvalidArgument, "at most %d balances at once, not %d", MaxBalanceBatch, len(userIDs))
	}
	return s.balancesAt(ctx, s.db.SQL, s.now().UTC(), userIDs)
}

// querier reads through a pool or in a transaction.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// balancesAt is Balances read through q (in a transaction, it sees the
// transaction's own writes) at now.
func (s *Service) balancesAt(ctx context.Context, q querier, now time.Time, userIDs []string) (map[string]Balance, error) {
	out := make(map[string]Balance, len(userIDs))
	args := make([]any, 0, 3+len(userIDs))
	args = append(args, creditreservation.StatusOpen, now, now)
	seen := make(map[string]struct{}, len(userIDs))
	for _, id := range userIDs {
		if _, dup := seen[id]; !dup {
			seen[id] = struct{}{}
			args = append(args, id)
		}
	}
	query := balanceSelect + strings.TrimSuffix(strings.Repeat("?, ", len(args)-3), ", ") + ")"
	rows, err := q.QueryContext(ctx, s.db.Rebind(query), args...)
	if err != nil {
		return nil, fmt.Errorf("ledger: reading the balances of %d users: %w", len(seen), err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var b Balance
		var expired int64
		if err := rows.Scan(&id, &b.Balance, &b.Reserved, &expired, &b.Held); err != nil {
			return nil, fmt.Errorf("ledger: reading the balances of %d users: %w", len(seen), err)
		}
		b.Available = availableOf(b.Balance, b.Reserved, max(b.Balance, 0)-expired)
		out[id] = b
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ledger: reading the balances of %d users: %w", len(seen), err)
	}
	return out, nil
}
