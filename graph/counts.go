package graph

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"entgo.io/ent/dialect/sql"
	"github.com/99designs/gqlgen/graphql"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/user"
)

// CountCap is where a connection's totalCount stops counting: a list with
// more items says CountCap. Counting a filter's rows reads them all, so an
// uncapped totalCount costs as much as the table (or a user's history) is
// large; a capped one reads at most CountCap+1 index entries. The one count
// without a cap is a user's whole history, which the ledger keeps on the
// user's row (users.transaction_count).
const CountCap = 1_000

// counter counts a connection's items: how many, up to CountCap, and
// whether it stopped there.
type counter func(context.Context) (n int, capped bool, err error)

// countedPage is a connection whose totalCount, when asked, is count's
// rather than entgql's: paginate runs without seeing totalCount or
// pageInfo (entgql would count every row for either), and pageInfo comes
// from the row it reads past the page, as entgql derives it anyway.
func countedPage[C comparable](ctx context.Context, first, last *int,
	paginate func(context.Context) (C, error),
	count counter,
	fields func(C) (*int, *ent.PageInfo),
) (C, error) {
	conn, err := paginate(edgesOnly(ctx))
	if err != nil || graphql.GetFieldContext(ctx) == nil {
		return conn, err
	}
	pageless := !asksFor(ctx, "edges") || (first != nil && *first == 0) || (last != nil && *last == 0)
	if !asksForCount(ctx) && !(pageless && asksFor(ctx, "pageInfo")) {
		return conn, nil
	}
	n, stopped, err := count(ctx)
	if err != nil {
		return conn, err
	}
	if stopped {
		markCapped(ctx, conn)
	}
	total, info := fields(conn)
	*total = n
	if pageless {
		// What entgql answers a page of no edges: whether there are any.
		info.HasNextPage = first != nil && n > 0
		info.HasPreviousPage = last != nil && n > 0
	}
	return conn, nil
}

// cappedCount counts what ids returns, which the caller limits to
// CountCap+1 rows (query.Clone().Limit(CountCap+1).IDs).
func cappedCount(ids func(context.Context) ([]string, error)) counter {
	return func(ctx context.Context) (int, bool, error) {
		found, err := ids(ctx)
		if err != nil {
			return 0, false, fmt.Errorf("graph: counting a list: %w", err)
		}
		return min(len(found), CountCap), len(found) > CountCap, nil
	}
}

// cappedCountsPerUser counts, for each of the users, their rows of table
// that pass filter, up to CountCap+1 each (see cappedTotal), in one statement: for each user a scalar subquery counts a
// subquery that stops after CountCap+1 rows of the user's index.
func cappedCountsPerUser[P ~func(*sql.Selector)](table string, filter P) func(*sql.Selector) sql.Querier {
	return func(users *sql.Selector) sql.Querier {
		b := sql.Dialect(users.Dialect())
		src := b.Table(table).As("count_src")
		rows := b.Select(src.C("user_id")).From(src).
			Where(sql.ColumnsEQ(src.C("user_id"), users.C(user.FieldID))).
			Limit(CountCap + 1)
		if filter != nil {
			filter(rows)
		}
		rows.As("count_rows")
		counted := b.Select(sql.Count("*")).From(rows)
		return sql.ExprFunc(func(w *sql.Builder) {
			w.Wrap(func(w *sql.Builder) { w.Join(counted) })
		})
	}
}

// countsPerUser counts, for each of the users, all their rows of table (a
// range of an index led by user_id), in one statement: the uncapped count
// entgql gives a user's lots and reservations, kept as it was.
func countsPerUser(table string) func(*sql.Selector) sql.Querier {
	return func(users *sql.Selector) sql.Querier {
		b := sql.Dialect(users.Dialect())
		src := b.Table(table).As("count_src")
		counted := b.Select(sql.Count("*")).From(src).
			Where(sql.ColumnsEQ(src.C("user_id"), users.C(user.FieldID)))
		return sql.ExprFunc(func(w *sql.Builder) {
			w.Wrap(func(w *sql.Builder) { w.Join(counted) })
		})
	}
}

// transactionCounts is the users' maintained counts of transactions,
// uncapped.
func transactionCounts(users *sql.Selector) sql.Querier {
	return sql.Expr(users.C(user.FieldTransactionCount))
}

// countsOfUsers reads a count per user, count giving its expression over
// the users' rows.
func (r *Resolver) countsOfUsers(ctx context.Context, userIDs []string, count func(*sql.Selector) sql.Querier) (map[string]int, error) {
	var rows []userCount
	err := r.Client.User.Query().Where(user.IDIn(userIDs...)).
		Modify(func(s *sql.Selector) {
			s.Select(sql.As(s.C(user.FieldID), "user_id")).AppendSelectExprAs(count(s), "count")
		}).
		Scan(ctx, &rows)
	if err != nil {
		return nil, fmt.Errorf("graph: counting for %d users: %w", len(userIDs), err)
	}
	return countsOf(rows), nil
}

// cappedTotal is a count of cappedCountsPerUser as totalCount shows it,
// conn marked when it stopped at CountCap.
func cappedTotal(ctx context.Context, n int, conn any) int {
	if n > CountCap {
		markCapped(ctx, conn)
		return CountCap
	}
	return n
}

// asksForCount says whether the connection's selection needs its count.
func asksForCount(ctx context.Context) bool {
	return asksFor(ctx, "totalCount") || asksFor(ctx, "totalCountCapped")
}

// cappedConns are the connections of an operation whose totalCount stopped
// at CountCap, for their totalCountCapped: entgql's connection types have
// no field of their own for it.
type cappedConns struct {
	mu    sync.Mutex
	conns map[any]bool
}

type cappedKey struct{}

func withCappedConns(ctx context.Context) context.Context {
	return context.WithValue(ctx, cappedKey{}, &cappedConns{conns: map[any]bool{}})
}

func markCapped(ctx context.Context, conn any) {
	if c, ok := ctx.Value(cappedKey{}).(*cappedConns); ok {
		c.mu.Lock()
		c.conns[conn] = true
		c.mu.Unlock()
	}
}

func wasCapped(ctx context.Context, conn any) bool {
	c, ok := ctx.Value(cappedKey{}).(*cappedConns)
	if !ok {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conns[conn]
}

func transactionFields(c *ent.CreditTransactionConnection) (*int, *ent.PageInfo) {
	return &c.TotalCount, &c.PageInfo
}

// historyCount is the count of a user's history: the count on their row
// when the history is whole, and q's rows up to CountCap when it is
// filtered (q is the filtered history).
func (r *Resolver) historyCount(userID string, where *ent.CreditTransactionWhereInput, q *ent.CreditTransactionQuery) counter {
	if where != nil {
		if _, err := where.P(); !errors.Is(err, ent.ErrEmptyCreditTransactionWhereInput) {
			return cappedCount(q.Limit(CountCap + 1).IDs)
		}
	}
	return func(ctx context.Context) (int, bool, error) {
		n, err := r.Client.User.Query().Where(user.ID(userID)).Select(user.FieldTransactionCount).Int(ctx)
		if err != nil {
			return 0, false, fmt.Errorf("graph: reading the transaction count of %s: %w", userID, err)
		}
		return n, false, nil
	}
}
