package ledger

import (
	"context"
	"encoding/json"
	"fmt"

	"entgo.io/ent/dialect"
	"entgo.io/ent/dialect/sql"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/user"
)

// On PostgreSQL a batch of spends (and a reservation, and its capture)
// locks its users and reads their lots in one statement: one round trip
// fewer while the accounts are locked.
//
// That needs care. Under READ COMMITTED, SELECT … FOR UPDATE that waits
// for another transaction's lock returns the row as that transaction left
// it, but every other table in the statement is read as of the moment the
// statement started: lots read alongside could be older than the locked
// balance. So the statement also says, for each user, whether the row it
// locked is the one its snapshot sees (the same xmin: no transaction
// changed the user between the snapshot and the lock). Every change to a
// user's lots or reservations that a spend depends on is made by a
// movement, and every movement updates its user's row (its
// transaction_count, at least), under the lock: an unchanged row means
// the lots read are the lots as of the lock. Where any user's row changed,
// the lots are read again, as before, now that the locks are held.
//
// Contended accounts (the row changed while waiting) pay the statement
// they paid before; uncontended ones, the common case, save it.

// Columns the locking statement adds to each user's row.
const (
	colCurrent  = "lock_current"
	colLots     = "lock_lots"
	colReserved = "lock_reserved"
)

// lockUsersWithLots locks the users with ids, in id order, and reads
// their lots and reservations in the same statement. read is nil when one
// of the users changed between the statement's snapshot and its lock
// (then the caller reads the lots again).
func (t *Tx) lockUsersWithLots(ctx context.Context, ids []string) (_ map[string]*ent.User, read map[string]lotsOf, _ error) {
	now := t.now
	found, err := t.ent.User.Query().
		Where(user.IDIn(ids...)).
		Order(user.ByID()).
		ForUpdate().
		Modify(func(s *sql.Selector) {
			id := s.C(user.FieldID)
			s.AppendSelectExprAs(sql.Raw(fmt.Sprintf(
				`(%s = (SELECT seen.xmin FROM users AS seen WHERE seen.id = %s))`, s.C("xmin"), id)), colCurrent)
			s.AppendSelectExprAs(sql.ExprFunc(func(b *sql.Builder) {
				b.WriteString(`(SELECT CAST(json_agg(l ORDER BY l.priority, l.expires_at NULLS LAST, l.created_at, l.id) AS TEXT)
					FROM credit_lots AS l WHERE l.user_id = ` + id + ` AND l.remaining > 0
					AND (l.expires_at IS NULL OR l.expires_at > `).Arg(now).WriteString(`))`)
			}), colLots)
			s.AppendSelectExprAs(sql.ExprFunc(func(b *sql.Builder) {
				b.WriteString(`(SELECT CAST(COALESCE(SUM(r.amount), 0) AS BIGINT) FROM credit_reservations AS r
					WHERE r.user_id = ` + id + ` AND r.status = 'OPEN' AND r.expires_at > `).Arg(now).WriteString(`)`)
			}), colReserved)
		}).
		All(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("ledger: locking %d users: %w", len(ids), err)
	}
	users := make(map[string]*ent.User, len(found))
	read = make(map[string]lotsOf, len(found))
	for _, u := range found {
		users[u.ID] = u
		t.holds(u)
		if read == nil {
			continue
		}
		current, lots, reserved, err := lockedColumns(u)
		if err != nil {
			return nil, nil, err
		}
		if !current {
			read = nil
			continue
		}
		read[u.ID] = lotsOf{lots: lots, reserved: reserved}
	}
	return users, read, nil
}

// lockedColumns decodes what the locking statement added to u's row.
func lockedColumns(u *ent.User) (current bool, lots []*ent.CreditLot, reserved int64, err error) {
	v, err := u.Value(colCurrent)
	if err != nil {
		return false, nil, 0, err
	}
	if current, _ = v.(bool); !current {
		return false, nil, 0, nil
	}
	if v, err = u.Value(colLots); err != nil {
		return false, nil, 0, err
	}
	if text, ok := v.(string); ok {
		if err := json.Unmarshal([]byte(text), &lots); err != nil {
			return false, nil, 0, fmt.Errorf("ledger: decoding the lots of %s: %w", u.ID, err)
		}
	}
	if v, err = u.Value(colReserved); err != nil {
		return false, nil, 0, err
	}
	if reserved, ok := v.(int64); ok {
		return true, lots, reserved, nil
	}
	return false, nil, 0, fmt.Errorf("ledger: the reservations of %s sum to a %T", u.ID, v)
}

// lockUserWithLots locks the user, on PostgreSQL reading their lots and
// reservations in the same statement, for the operation's available
// credits (see available). Elsewhere, or when the transaction holds the
// user already, it does what lockUser does.
func (t *Tx) lockUserWithLots(ctx context.Context, userID string) error {
	if _, held := t.locked[userID]; held || t.s.db.Dialect != dialect.Postgres {
		return nil // once locks the user, as before
	}
	users, read, err := t.lockUsersWithLots(ctx, []string{userID})
	if err != nil {
		return err
	}
	if users[userID] == nil || read == nil {
		return nil // once answers NOT_FOUND; stale lots are read again
	}
	if t.prefetched == nil {
		t.prefetched = map[string]lotsOf{}
	}
	t.prefetched[userID] = read[userID]
	return nil
}

// lotsOf are a user's unexpired lots in spend order and the sum of their
// open reservations.
type lotsOf struct {
	lots     []*ent.CreditLot
	reserved int64
}

// LockUsersJoining is LockUsersWhere for a caller that also locks, in the
// same statement, the rows of a table joined to each user (the payments a
// batch of webhooks names): join adds the join, its conditions and the
// columns the caller reads back with Value on the rows returned, one per
// joined row. PostgreSQL only: both tables are locked FOR NO KEY UPDATE
// (what updating them takes anyway), and a row waited for comes back as
// its holder left it in every locked table, so what is read is what the
// locks protect. Rows are locked in users' id order, each user before its
// joined rows (a row's tables are locked in the order of FROM), the order
// every path takes: the user, then the rest.
func (t *Tx) LockUsersJoining(ctx context.Context, join func(*sql.Selector)) ([]*ent.User, error) {
	if t.s.db.Dialect != dialect.Postgres {
		return nil, fmt.Errorf("ledger: LockUsersJoining on %s", t.s.db.Dialect)
	}
	reader, _ := t.s.events.(LockReader)
	rows, err := t.ent.User.Query().Order(user.ByID()).Modify(func(s *sql.Selector) {
		join(s)
		if reader != nil {
			s.AppendSelectExprAs(reader.LockColumn(), colForEvents)
		}
		s.For(sql.LockNoKeyUpdate)
	}).All(ctx)
	if err != nil {
		return nil, fmt.Errorf("ledger: locking users and their rows: %w", err)
	}
	for _, u := range rows {
		if _, ok := t.locked[u.ID]; !ok {
			t.holds(u)
		}
	}
	if reader != nil && len(rows) > 0 {
		v, err := rows[0].Value(colForEvents)
		if err != nil {
			return nil, err
		}
		if t.readForEvents, err = reader.FromLock(v); err != nil {
			return nil, err
		}
	}
	return rows, nil
}

// colForEvents is the column of what the EventWriter reads with the lock.
const colForEvents = "lock_for_events"

// LockReader is an EventWriter that reads what writing events needs (the
// outbound endpoints) along with LockUsersJoining's statement, whose
// callers expect to write events (a batch of purchases tells of each
// payment's success): one round trip fewer while the users are locked.
type LockReader interface {
	// LockColumn is an expression of the same value on every row
	// (uncorrelated); it may lock what it reads until the transaction ends.
	LockColumn() sql.Querier
	// FromLock decodes what the column read; ReadWithLock returns it.
	FromLock(v any) (any, error)
}

// ReadWithLock is what the EventWriter's LockColumn read in this
// transaction, or nil when nothing did.
func (t *Tx) ReadWithLock() any { return t.readForEvents }
