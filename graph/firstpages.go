package graph

import (
	"context"
	"errors"
	"fmt"

	"entgo.io/contrib/entgql"
	"entgo.io/ent/dialect"
	"entgo.io/ent/dialect/sql"
	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vikstrous/dataloadgen"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/credittransaction"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/ent/predicate"
)

// pageOwner is the column that tells, in a batch of several users' rows,
// whose each one is (the selection may leave user_id out).
const pageOwner = "page_owner"

// batchedPage says whether a user's connection field can join the batch of
// the list's other users: a first page, forward. Deeper pages take the
// keyset path (one user paging is not N+1). cost.go charges the batched
// pages accordingly (firstPage), so the two must agree. The batch counts
// when the per-user path would: totalCount asked, or the pageInfo of a page
// of no edges, which tells whether there are any.
func batchedPage(ctx context.Context, after, before *entgql.Cursor[string], first, last *int) (string, pageRequest, bool) {
	if batching(ctx) == nil || graphql.GetFieldContext(ctx) == nil ||
		after != nil || before != nil || last != nil || first == nil || *first < 0 {
		return "", pageRequest{}, false
	}
	pageless := *first == 0 || !asksFor(ctx, "edges")
	return placeOf(ctx), pageRequest{
		ctx: ctx, first: *first, pageless: pageless,
		counted: asksForCount(ctx) || pageless && asksFor(ctx, "pageInfo"),
	}, true
}

// firstPageFrom is the user's first page from the response's batch of its
// place, read by the loader that pick chooses, or ok false when the page
// cannot be batched. set adds to the request what the page is asked with
// beyond its size (a filter, an order).
func firstPageFrom[C any](ctx context.Context, userID string, after, before *entgql.Cursor[string], first, last *int,
	pick func(*loaders) *dataloadgen.Loader[pageKey, C], set func(*pageRequest),
) (conn C, ok bool, err error) {
	place, req, ok := batchedPage(ctx, after, before, first, last)
	if !ok {
		return conn, false, nil
	}
	l := batching(ctx)
	set(&req)
	l.register(place, req)
	loader := pick(l)
	if ids := l.siblings(ctx, place, userID); ids != nil {
		loader.LoadAllThunk(ctx, pageKeys(ids, place))
	}
	conn, err = loader.Load(ctx, pageKey{userID: userID, place: place})
	return conn, true, err
}

// firstTransactions is the user's first page of transactions from the
// response's batch, or ok false when the page cannot be batched.
func (r *Resolver) firstTransactions(ctx context.Context, userID string, after, before *entgql.Cursor[string], first, last *int, where *ent.CreditTransactionWhereInput) (*ent.CreditTransactionConnection, bool, error) {
	return firstPageFrom(ctx, userID, after, before, first, last,
		func(l *loaders) *dataloadgen.Loader[pageKey, *ent.CreditTransactionConnection] { return l.transactions },
		func(req *pageRequest) { req.where = where })
}

// firstPayments is firstTransactions for payments.
func (r *Resolver) firstPayments(ctx context.Context, userID string, after, before *entgql.Cursor[string], first, last *int, where *ent.PaymentWhereInput) (*ent.PaymentConnection, bool, error) {
	return firstPageFrom(ctx, userID, after, before, first, last,
		func(l *loaders) *dataloadgen.Loader[pageKey, *ent.PaymentConnection] { return l.payments },
		func(req *pageRequest) { req.where = where })
}

func pageKeys(userIDs []string, place string) []pageKey {
	keys := make([]pageKey, len(userIDs))
	for i, id := range userIDs {
		keys[i] = pageKey{userID: id, place: place}
	}
	return keys
}

// firstTransactionPages reads the first page of several users' histories
// in one statement (and one more per nested edge the selection loads, and
// one for the counts when totalCount is asked, for all of them), newest
// first as the per-user path orders them; its edges, cursors, pageInfo and
// totalCount are what that path would give each user.
func (r *Resolver) firstTransactionPages(req pageRequest, userIDs []string) (map[string]*ent.CreditTransactionConnection, error) {
	var filter predicate.CreditTransaction
	if where, _ := req.where.(*ent.CreditTransactionWhereInput); where != nil {
		p, err := where.P()
		if err != nil && !errors.Is(err, ent.ErrEmptyCreditTransactionWhereInput) {
			return nil, err
		}
		filter = p
	}
	out := make(map[string]*ent.CreditTransactionConnection, len(userIDs))
	for _, id := range userIDs {
		out[id] = &ent.CreditTransactionConnection{Edges: []*ent.CreditTransactionEdge{}}
	}
	if !req.pageless {
		if err := r.firstCreditTransactionEdges(req, userIDs, filter, out); err != nil {
			return nil, err
		}
	}
	var counts map[string]int
	if req.counted {
		// A whole history's count is on the user's row; a filtered one is
		// counted, up to CountCap.
		var err error
		if filter == nil {
			counts, err = r.countsOfUsers(req.ctx, userIDs, transactionCounts)
		} else {
			counts, err = r.countsOfUsers(req.ctx, userIDs, cappedCountsPerUser(credittransaction.Table, filter))
		}
		if err != nil {
			return nil, err
		}
	}
	for id, c := range out {
		c.PageInfo.StartCursor, c.PageInfo.EndCursor = endsOf(c.Edges, func(e *ent.CreditTransactionEdge) *ent.Cursor { return &e.Cursor })
		c.TotalCount = totalOf(counts, id, len(c.Edges))
		if filter != nil {
			c.TotalCount = cappedTotal(req.ctx, c.TotalCount, c)
		}
		if req.pageless && req.counted {
			// What entgql answers a page of no edges: a next page if any.
			c.PageInfo.HasNextPage = c.TotalCount > 0
		}
	}
	return out, nil
}

// firstPaymentPages is firstTransactionPages for payments.
func (r *Resolver) firstPaymentPages(req pageRequest, userIDs []string) (map[string]*ent.PaymentConnection, error) {
	var filter predicate.Payment
	if where, _ := req.where.(*ent.PaymentWhereInput); where != nil {
		p, err := where.P()
		if err != nil && !errors.Is(err, ent.ErrEmptyPaymentWhereInput) {
			return nil, err
		}
		filter = p
	}
	out := make(map[string]*ent.PaymentConnection, len(userIDs))
	for _, id := range userIDs {
		out[id] = &ent.PaymentConnection{Edges: []*ent.PaymentEdge{}}
	}
	if !req.pageless {
		if err := r.firstPaymentEdges(req, userIDs, filter, out); err != nil {
			return nil, err
		}
	}
	var counts map[string]int
	if req.counted {
		var err error
		if counts, err = r.countsOfUsers(req.ctx, userIDs, cappedCountsPerUser(payment.Table, filter)); err != nil {
			return nil, err
		}
	}
	for id, c := range out {
		c.PageInfo.StartCursor, c.PageInfo.EndCursor = endsOf(c.Edges, func(e *ent.PaymentEdge) *ent.Cursor { return &e.Cursor })
		c.TotalCount = cappedTotal(req.ctx, totalOf(counts, id, len(c.Edges)), c)
		if req.pageless && req.counted {
			// What entgql answers a page of no edges: a next page if any.
			c.PageInfo.HasNextPage = c.TotalCount > 0
		}
	}
	return out, nil
}

// edgesOnly hides a connection's pageInfo and totalCount from entgql's
// Paginate, which would count the batch's rows for them: the batch makes
// each user's itself.
func edgesOnly(ctx context.Context) context.Context {
	fc := graphql.GetFieldContext(ctx)
	if fc == nil {
		return ctx
	}
	kept := make(ast.SelectionSet, 0, len(fc.Field.Selections))
	for _, sel := range fc.Field.Selections {
		if f, ok := sel.(*ast.Field); ok && (f.Name == "pageInfo" || f.Name == "totalCount") {
			continue
		}
		kept = append(kept, sel)
	}
	hidden := *fc
	hidden.Field.Selections = kept
	return graphql.WithFieldContext(ctx, &hidden)
}

// firstCreditTransactionEdges fills the users' pages with their first edges.
func (r *Resolver) firstCreditTransactionEdges(req pageRequest, userIDs []string, filter predicate.CreditTransaction, out map[string]*ent.CreditTransactionConnection) error {
	q := r.Client.CreditTransaction.Query().Where(func(s *sql.Selector) {
		s.Where(firstPerUser(s.Dialect(), s.C(credittransaction.FieldID), credittransaction.Table, userIDs, req.first+1, filter, newestFirst))
	})
	q.Modify(func(s *sql.Selector) { s.AppendSelectAs(s.C(credittransaction.FieldUserID), pageOwner) })
	all, err := q.Paginate(edgesOnly(req.ctx), nil, nil, nil, nil, ent.WithCreditTransactionOrder(&ent.CreditTransactionOrder{
		Direction: entgql.OrderDirectionDesc, Field: ent.CreditTransactionOrderFieldCreatedAt,
	}))
	if err != nil {
		return fmt.Errorf("graph: reading the first transactions of %d users: %w", len(userIDs), err)
	}
	for _, e := range all.Edges {
		owner, err := ownerOf(e.Node.Value(pageOwner))
		if err != nil {
			return err
		}
		if c := out[owner]; c != nil {
			c.Edges, c.PageInfo.HasNextPage = appendBelow(c.Edges, e, req.first)
		}
	}
	return nil
}

// firstPaymentEdges fills the users' pages with their first edges.
func (r *Resolver) firstPaymentEdges(req pageRequest, userIDs []string, filter predicate.Payment, out map[string]*ent.PaymentConnection) error {
	q := r.Client.Payment.Query().Where(func(s *sql.Selector) {
		s.Where(firstPerUser(s.Dialect(), s.C(payment.FieldID), payment.Table, userIDs, req.first+1, filter, newestFirst))
	})
	q.Modify(func(s *sql.Selector) { s.AppendSelectAs(s.C(payment.FieldUserID), pageOwner) })
	all, err := q.Paginate(edgesOnly(req.ctx), nil, nil, nil, nil, ent.WithPaymentOrder(&ent.PaymentOrder{
		Direction: entgql.OrderDirectionDesc, Field: ent.PaymentOrderFieldCreatedAt,
	}))
	if err != nil {
		return fmt.Errorf("graph: reading the first payments of %d users: %w", len(userIDs), err)
	}
	for _, e := range all.Edges {
		owner, err := ownerOf(e.Node.Value(pageOwner))
		if err != nil {
			return err
		}
		if c := out[owner]; c != nil {
			c.Edges, c.PageInfo.HasNextPage = appendBelow(c.Edges, e, req.first)
		}
	}
	return nil
}

// appendBelow adds e to a page of first edges; the row past them only says
// that there is a next page, as the per-user path's extra row does.
func appendBelow[E any](edges []E, e E, first int) ([]E, bool) {
	if len(edges) == first {
		return edges, true
	}
	return append(edges, e), false
}

// endsOf is a page's startCursor and endCursor (none for an empty page).
func endsOf[E any](edges []E, cursor func(E) *ent.Cursor) (*ent.Cursor, *ent.Cursor) {
	if len(edges) == 0 {
		return nil, nil
	}
	return cursor(edges[0]), cursor(edges[len(edges)-1])
}

// userCount is a row of a count grouped by user.
type userCount struct {
	UserID string `sql:"user_id"`
	Count  int    `sql:"count"`
}

func countsOf(rows []userCount) map[string]int {
	m := make(map[string]int, len(rows))
	for _, r := range rows {
		m[r.UserID] = r.Count
	}
	return m
}

// totalOf is the user's count when it was read, and otherwise what entgql
// sets when it did not count: the page's length (not shown, since
// totalCount was not asked).
func totalOf(counts map[string]int, userID string, onPage int) int {
	if counts == nil {
		return onPage
	}
	return counts[userID]
}

// pageOrder is a term of the order of a user's page.
type pageOrder struct {
	column string
	desc   bool
}

// newestFirst is the order of a user's transactions and payments.
var newestFirst = []pageOrder{{column: "created_at", desc: true}, {column: "id", desc: true}}

func orderTerms(t *sql.SelectTable, order []pageOrder) []string {
	terms := make([]string, len(order))
	for i, o := range order {
		if o.desc {
			terms[i] = sql.Desc(t.C(o.column))
		} else {
			terms[i] = sql.Asc(t.C(o.column))
		}
	}
	return terms
}

// firstPerUser is the condition that keeps each user's first n rows of
// table that pass filter in order, the per-user page's order (which ends
// with id, so that it is total), so the n kept are the ones its LIMIT
// would keep. col is the outer query's id column.
//
// PostgreSQL reads each user's rows with a LATERAL subquery: a range of an
// index led by user_id that stops after n rows when the index gives the
// order (as the per-user page does). SQLite has no LATERAL: it ranks the
// users' rows with ROW_NUMBER(), which reads all of them (an embedded
// database's lists are short).
func firstPerUser[P ~func(*sql.Selector)](dialectName, col, table string, userIDs []string, n int, filter P, order []pageOrder) *sql.Predicate {
	b := sql.Dialect(dialectName)
	src := b.Table(table).As("page_src")
	ids := make([]any, len(userIDs))
	for i, id := range userIDs {
		ids[i] = id
	}
	if dialectName == dialect.Postgres {
		pu := b.Table("users").As("page_users")
		first := b.Select(src.C("id")).From(src).
			Where(sql.ColumnsEQ(src.C("user_id"), pu.C("id"))).
			OrderBy(orderTerms(src, order)...).
			Limit(n)
		if filter != nil {
			filter(first)
		}
		return sql.P(func(w *sql.Builder) {
			w.Ident(col).WriteOp(sql.OpIn).Wrap(func(w *sql.Builder) {
				w.WriteString("SELECT page_rows.id FROM users AS page_users CROSS JOIN LATERAL ").
					Wrap(func(w *sql.Builder) { w.Join(first) }).
					WriteString(" AS page_rows WHERE page_users.id IN ").
					Wrap(func(w *sql.Builder) { w.Args(ids...) })
			})
		})
	}
	ranked := b.Select(src.C("id")).
		AppendSelectExprAs(sql.RowNumber().PartitionBy(src.C("user_id")).OrderBy(orderTerms(src, order)...), "page_rank").
		From(src).
		Where(sql.In(src.C("user_id"), ids...))
	if filter != nil {
		filter(ranked)
	}
	ranked.As("page_ranked")
	return sql.In(col, b.Select(ranked.C("id")).From(ranked).Where(sql.LTE(ranked.C("page_rank"), n)))
}

// ownerOf reads the pageOwner column, which the drivers hand back as text or
// bytes.
func ownerOf(v any, err error) (string, error) {
	if err != nil {
		return "", fmt.Errorf("graph: reading whose row it is: %w", err)
	}
	switch v := v.(type) {
	case string:
		return v, nil
	case []byte:
		return string(v), nil
	default:
		return "", fmt.Errorf("graph: a row's owner is %T, not text", v)
	}
}
