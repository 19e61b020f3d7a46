package graph

import (
	"context"
	"fmt"

	"entgo.io/contrib/entgql"
	"entgo.io/ent/dialect/sql"
	"github.com/vikstrous/dataloadgen"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/creditlot"
	"github.com/tally-billing/tally/ent/creditreservation"
	"github.com/tally-billing/tally/ent/predicate"
)

// A user's lots and reservations are fields of their own, not ent's edges:
// entgql loaded an edge for a whole list of users while it collected the
// list's fields, before pageArgs checked or defaulted the page size (every
// lot of every user without first, first: 100000 read before it was
// refused). Here the page is read by the field's resolver, after pageArgs:
// a first page forward of each user of a list joins one statement per
// place of the response (firstLotPages), any other page is a query of the
// user's own, without the DISTINCT of ent's edge queries (for which
// PostgreSQL read every lot of the user first: 30 ms for a page of ten of a
// user with 90,000 lots, 0.1 ms from a range of the (user_id, id) index;
// reservations have no such index, and a page of them sorts the user's).
// Both order as the edges did (by id unless ordered) and count every item
// for totalCount, as entgql did.

func (r *Resolver) userLots(ctx context.Context, u *ent.User, after *entgql.Cursor[string], first *int, before *entgql.Cursor[string], last *int, orderBy *ent.CreditLotOrder) (*ent.CreditLotConnection, error) {
	if _, ok := lotPageOrder(orderBy); ok {
		conn, batched, err := firstPageFrom(ctx, u.ID, after, before, first, last,
			func(l *loaders) *dataloadgen.Loader[pageKey, *ent.CreditLotConnection] { return l.lots },
			func(req *pageRequest) { req.order = orderBy })
		if batched {
			return conn, err
		}
	}
	return r.Client.CreditLot.Query().Where(creditlot.UserID(u.ID)).
		Paginate(ctx, after, first, before, last, ent.WithCreditLotOrder(orderBy))
}

func (r *Resolver) userReservations(ctx context.Context, u *ent.User, after *entgql.Cursor[string], first *int, before *entgql.Cursor[string], last *int, orderBy *ent.CreditReservationOrder) (*ent.CreditReservationConnection, error) {
	if _, ok := reservationPageOrder(orderBy); ok {
		conn, batched, err := firstPageFrom(ctx, u.ID, after, before, first, last,
			func(l *loaders) *dataloadgen.Loader[pageKey, *ent.CreditReservationConnection] { return l.reservations },
			func(req *pageRequest) { req.order = orderBy })
		if batched {
			return conn, err
		}
	}
	return r.Client.CreditReservation.Query().Where(creditreservation.UserID(u.ID)).
		Paginate(ctx, after, first, before, last, ent.WithCreditReservationOrder(orderBy))
}

// The columns of the orders whose pages can be batched, by the order
// field's name. An order added to the schema and not here is read per
// user until it is added.
var (
	lotOrderColumns = map[string]string{
		"ID": creditlot.FieldID, "CREATED_AT": creditlot.FieldCreatedAt, "EXPIRES_AT": creditlot.FieldExpiresAt,
	}
	reservationOrderColumns = map[string]string{
		"ID": creditreservation.FieldID, "CREATED_AT": creditreservation.FieldCreatedAt,
		"STATUS": creditreservation.FieldStatus, "EXPIRES_AT": creditreservation.FieldExpiresAt,
	}
)

func lotPageOrder(o *ent.CreditLotOrder) ([]pageOrder, bool) {
	if o == nil {
		o = ent.DefaultCreditLotOrder
	}
	field := ent.DefaultCreditLotOrder.Field
	if o.Field != nil {
		field = o.Field
	}
	return entgqlOrder(lotOrderColumns, field.String(), o.Direction)
}

func reservationPageOrder(o *ent.CreditReservationOrder) ([]pageOrder, bool) {
	if o == nil {
		o = ent.DefaultCreditReservationOrder
	}
	field := ent.DefaultCreditReservationOrder.Field
	if o.Field != nil {
		field = o.Field
	}
	return entgqlOrder(reservationOrderColumns, field.String(), o.Direction)
}

// entgqlOrder is the order entgql's Paginate gives a page: the field, then
// the id, both in the direction asked.
func entgqlOrder(columns map[string]string, field string, dir entgql.OrderDirection) ([]pageOrder, bool) {
	column, ok := columns[field]
	if !ok || dir.Validate() != nil {
		return nil, false
	}
	desc := dir == entgql.OrderDirectionDesc
	order := []pageOrder{{column: column, desc: desc}}
	if column != "id" {
		order = append(order, pageOrder{column: "id", desc: desc})
	}
	return order, true
}

// firstLotPages reads the first page of several users' lots in one
// statement (and one more per nested edge the selection loads, and one for
// the counts when they are needed, for all of them); each user's edges,
// cursors, pageInfo and totalCount are what their own page would give.
func (r *Resolver) firstLotPages(req pageRequest, userIDs []string) (map[string]*ent.CreditLotConnection, error) {
	out := make(map[string]*ent.CreditLotConnection, len(userIDs))
	for _, id := range userIDs {
		out[id] = &ent.CreditLotConnection{Edges: []*ent.CreditLotEdge{}}
	}
	if !req.pageless {
		order, _ := req.order.(*ent.CreditLotOrder)
		terms, _ := lotPageOrder(order) // known: userLots batches no other
		q := r.Client.CreditLot.Query().Where(func(s *sql.Selector) {
			s.Where(firstPerUser(s.Dialect(), s.C(creditlot.FieldID), creditlot.Table, userIDs, req.first+1, predicate.CreditLot(nil), terms))
		})
		q.Modify(func(s *sql.Selector) { s.AppendSelectAs(s.C(creditlot.FieldUserID), pageOwner) })
		all, err := q.Paginate(edgesOnly(req.ctx), nil, nil, nil, nil, ent.WithCreditLotOrder(order))
		if err != nil {
			return nil, fmt.Errorf("graph: reading the first lots of %d users: %w", len(userIDs), err)
		}
		for _, e := range all.Edges {
			owner, err := ownerOf(e.Node.Value(pageOwner))
			if err != nil {
				return nil, err
			}
			if c := out[owner]; c != nil {
				c.Edges, c.PageInfo.HasNextPage = appendBelow(c.Edges, e, req.first)
			}
		}
	}
	counts, err := r.userCounts(req, userIDs, creditlot.Table)
	if err != nil {
		return nil, err
	}
	for id, c := range out {
		c.PageInfo.StartCursor, c.PageInfo.EndCursor = endsOf(c.Edges, func(e *ent.CreditLotEdge) *ent.Cursor { return &e.Cursor })
		c.TotalCount = totalOf(counts, id, len(c.Edges))
		c.PageInfo.HasNextPage = c.PageInfo.HasNextPage || req.pageless && c.TotalCount > 0
	}
	return out, nil
}

// firstReservationPages is firstLotPages for reservations.
func (r *Resolver) firstReservationPages(req pageRequest, userIDs []string) (map[string]*ent.CreditReservationConnection, error) {
	out := make(map[string]*ent.CreditReservationConnection, len(userIDs))
	for _, id := range userIDs {
		out[id] = &ent.CreditReservationConnection{Edges: []*ent.CreditReservationEdge{}}
	}
	if !req.pageless {
		order, _ := req.order.(*ent.CreditReservationOrder)
		terms, _ := reservationPageOrder(order) // known: userReservations batches no other
		q := r.Client.CreditReservation.Query().Where(func(s *sql.Selector) {
			s.Where(firstPerUser(s.Dialect(), s.C(creditreservation.FieldID), creditreservation.Table, userIDs, req.first+1, predicate.CreditReservation(nil), terms))
		})
		q.Modify(func(s *sql.Selector) { s.AppendSelectAs(s.C(creditreservation.FieldUserID), pageOwner) })
		all, err := q.Paginate(edgesOnly(req.ctx), nil, nil, nil, nil, ent.WithCreditReservationOrder(order))
		if err != nil {
			return nil, fmt.Errorf("graph: reading the first reservations of %d users: %w", len(userIDs), err)
		}
		for _, e := range all.Edges {
			owner, err := ownerOf(e.Node.Value(pageOwner))
			if err != nil {
				return nil, err
			}
			if c := out[owner]; c != nil {
				c.Edges, c.PageInfo.HasNextPage = appendBelow(c.Edges, e, req.first)
			}
		}
	}
	counts, err := r.userCounts(req, userIDs, creditreservation.Table)
	if err != nil {
		return nil, err
	}
	for id, c := range out {
		c.PageInfo.StartCursor, c.PageInfo.EndCursor = endsOf(c.Edges, func(e *ent.CreditReservationEdge) *ent.Cursor { return &e.Cursor })
		c.TotalCount = totalOf(counts, id, len(c.Edges))
		c.PageInfo.HasNextPage = c.PageInfo.HasNextPage || req.pageless && c.TotalCount > 0
	}
	return out, nil
}

// userCounts is, when the request needs it, each user's count of all their
// rows of table; nil otherwise.
func (r *Resolver) userCounts(req pageRequest, userIDs []string, table string) (map[string]int, error) {
	if !req.counted {
		return nil, nil
	}
	return r.countsOfUsers(req.ctx, userIDs, countsPerUser(table))
}
