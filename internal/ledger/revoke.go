package ledger

import (
	"context"
	"fmt"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/creditlot"
	"github.com/tally-billing/tally/ent/credittransaction"
	"github.com/tally-billing/tally/internal/apperr"
)

// RevokeRequest takes credits back (admins).
type RevokeRequest struct {
	UserID string
	// Amount is the most to take: Revoke takes what the lots hold, up to it.
	Amount int64
	// LotIDs, when given, are the lots to take from, in this order;
	// otherwise lots are taken in spend order.
	LotIDs         []string
	Reason         string
	IdempotencyKey string
}

// Revoke takes credits back in a transaction of its own.
func (s *Service) Revoke(ctx context.Context, actor Actor, req RevokeRequest) (*Result, error) {
	return s.do(ctx, "revoke", actor, func(ctx context.Context, t *Tx) (*Result, error) { return t.Revoke(ctx, actor, req) })
}

// Revoke removes up to Amount unspent credits from the user's lots. It never
// creates a debt; Result.Amount says how much it took.
func (t *Tx) Revoke(ctx context.Context, actor Actor, req RevokeRequest) (*Result, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	return t.once(ctx, actor, req.IdempotencyKey, "revoke", req, req.UserID, lookupFirst, func(u *ent.User) (*Result, error) {
		var lots []*ent.CreditLot
		var err error
		if len(req.LotIDs) > 0 {
			lots, err = t.chosenLots(ctx, u.ID, req.LotIDs)
		} else {
			lots, err = t.lotsInSpendOrder(ctx, u.ID, false)
		}
		if err != nil {
			return nil, err
		}
		m := newMovement(credittransaction.KindRevoke, 0)
		m.reason = req.Reason
		taken := t.drawLots(u, m, lots, req.Amount)
		if taken == 0 {
			return nil, apperr.New(apperr.InsufficientCredits, "there are no unspent credits to revoke")
		}
		m.amount = taken
		m.post(AccountRevoked, false, nil, taken)
		txn, err := t.write(ctx, actor, req.IdempotencyKey, u, m)
		if err != nil {
			return nil, err
		}
		return &Result{Transaction: txn, Amount: taken}, nil
	})
}

func (t *Tx) chosenLots(ctx context.Context, userID string, ids []string) ([]*ent.CreditLot, error) {
	found, err := t.ent.CreditLot.Query().Where(creditlot.UserID(userID), creditlot.IDIn(ids...)).All(ctx)
	if err != nil {
		return nil, fmt.Errorf("ledger: reading lots: %w", err)
	}
	byID := make(map[string]*ent.CreditLot, len(found))
	for _, l := range found {
		byID[l.ID] = l
	}
	lots := make([]*ent.CreditLot, 0, len(ids))
	seen := map[string]bool{}
	for _, id := range ids {
		l, ok := byID[id]
		if !ok {
			return nil, apperr.New(apperr.NotFound, "the user has no lot %q", id)
		}
		if !seen[id] {
			lots = append(lots, l)
			seen[id] = true
		}
	}
	return lots, nil
}
