package ledger

import (
	"context"

	"github.com/tally-billing/tally/ent"
)

// Result is what an operation did.
type Result struct {
	// Transaction is the business event written, with its postings loaded
	// (Edges.Postings).
	Transaction *ent.CreditTransaction
	// Reservation is set by the reservation operations.
	Reservation *ent.CreditReservation
	// Balance is the user's balance right after the transaction.
	Balance int64
	// User is the user's row once the operation is done (for a replay: now).
	User *ent.User
	// Amount is the credits moved; Revoke may move less than it was asked.
	Amount int64
	// Replayed is true when an earlier request with the same idempotency key
	// produced this result and nothing was done now.
	Replayed bool
}

// do runs a Tx operation in a transaction of its own, in the span of the
// operation (name, a constant, see tracing.go).
func (s *Service) do(ctx context.Context, name string, actor Actor, op func(ctx context.Context, t *Tx) (*Result, error)) (_ *Result, err error) {
	ctx, span := s.startOp(ctx, name, actor.Kind)
	defer func() { endSpan(span, err) }()
	var res *Result
	err = s.Within(ctx, func(ctx context.Context, t *Tx) error {
		var err error
		res, err = op(ctx, t)
		return err
	})
	if err != nil {
		return nil, err
	}
	return res.Unwrap(), nil
}

// Unwrap detaches the result's entities from the committed transaction that
// made them, so that reading their edges afterwards (as GraphQL does) runs
// on the database rather than on a closed transaction. Call it once the
// transaction of Within has committed.
func (r *Result) Unwrap() *Result {
	if r.Transaction != nil {
		postings := r.Transaction.Edges.Postings
		r.Transaction = r.Transaction.Unwrap()
		for i, p := range postings {
			postings[i] = p.Unwrap()
		}
		r.Transaction.Edges.Postings = postings
	}
	if r.Reservation != nil {
		r.Reservation = r.Reservation.Unwrap()
	}
	if r.User != nil {
		r.User = r.User.Unwrap()
	}
	return r
}
