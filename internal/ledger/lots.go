package ledger

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"entgo.io/ent/dialect/sql"
	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/creditlot"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/database"
)

// setLot writes a lot's new remaining and held credits now.
func (t *Tx) setLot(ctx context.Context, lot *ent.CreditLot, remaining, held int64) error {
	lot.Remaining, lot.Held = remaining, held
	return t.saveLot(ctx, lot)
}

func (t *Tx) saveLot(ctx context.Context, lot *ent.CreditLot) error {
	clear(t.prefetched)
	// Update, not UpdateOne, which would read the row back.
	err := t.ent.CreditLot.Update().
		Where(creditlot.ID(lot.ID)).
		SetRemaining(lot.Remaining).
		SetHeld(lot.Held).
		SetUpdatedAt(t.now).
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("ledger: updating lot %s: %w", lot.ID, err)
	}
	delete(t.dirtyLots, lot.ID)
	return nil
}

// drawLot takes credits from a lot in memory; the lot is written once, by
// the next write of movements (or flushLots), however many draws it had.
func (t *Tx) drawLot(lot *ent.CreditLot, take int64) {
	lot.Remaining -= take
	if t.dirtyLots == nil {
		t.dirtyLots = map[string]*ent.CreditLot{}
	}
	t.dirtyLots[lot.ID] = lot
}

// flushLots writes the lots drawn from in memory (their held credits do
// not change by drawing).
func (t *Tx) flushLots(ctx context.Context) error {
	switch len(t.dirtyLots) {
	case 0:
		return nil
	case 1:
		for _, lot := range t.dirtyLots {
			return t.saveLot(ctx, lot)
		}
	}
	values := make(map[string]any, len(t.dirtyLots))
	for id, lot := range t.dirtyLots {
		values[id] = lot.Remaining
	}
	// In id order, so that concurrent batches lock rows in one order.
	ids := slices.Sorted(maps.Keys(values))
	err := database.UpdateRows(creditlot.Table, ids).
		SetEach(creditlot.FieldRemaining, "BIGINT", values).
		Set(creditlot.FieldUpdatedAt, t.now).
		Exec(ctx, t.s.db, t.ent)
	if err != nil {
		return fmt.Errorf("ledger: updating %d lots: %w", len(values), err)
	}
	clear(t.dirtyLots)
	return nil
}

// creditLot adds amount to the user's account through lot, repaying any debt
// first (see credit), and writes the lot.
func (t *Tx) creditLot(ctx context.Context, u *ent.User, m *movement, lot *ent.CreditLot, amount int64, fromHeld bool) error {
	kept, err := credit(u, m, lot.ID, amount)
	if err != nil {
		return err
	}
	held := lot.Held
	if fromHeld {
		held -= amount
	}
	return t.setLot(ctx, lot, lot.Remaining+kept, held)
}

// credit posts amount to the user's account through the lot, repaying any
// debt first: the repaid part moves from the lot to the lot-less (debt)
// postings, so that the lot keeps only credits the user can spend. It
// returns what the lot keeps.
func credit(u *ent.User, m *movement, lotID string, amount int64) (kept int64, err error) {
	if u.CreditsBalance+amount > MaxAmount {
		return 0, apperr.New(apperr.InvalidArgument, "the balance would exceed the largest amount, %d", MaxAmount)
	}
	account := UserAccount(u.ID)
	m.post(account, true, &lotID, amount)
	repaid := int64(0)
	if u.CreditsBalance < 0 {
		repaid = min(amount, -u.CreditsBalance)
		m.post(account, true, &lotID, -repaid)
		m.post(account, true, nil, repaid)
	}
	return amount - repaid, nil
}

// drawLots takes up to amount credits from lots, in the order given, and
// posts them off the user's account; it returns what it took. The lots are
// written with the movement.
func (t *Tx) drawLots(u *ent.User, m *movement, lots []*ent.CreditLot, amount int64) int64 {
	taken := int64(0)
	for _, lot := range lots {
		if taken == amount {
			break
		}
		take := min(lot.Remaining, amount-taken)
		if take <= 0 {
			continue
		}
		m.post(UserAccount(u.ID), true, &lot.ID, -take)
		t.drawLot(lot, take)
		taken += take
	}
	return taken
}

// lotsInSpendOrder are the user's lots that hold credits, in the order
// spends draw from them: priority, then soonest expiry (never-expiring
// last), then oldest. With unexpiredOnly, lots past their expiry that the
// sweep has not reached yet are left out.
func (t *Tx) lotsInSpendOrder(ctx context.Context, userID string, unexpiredOnly bool) ([]*ent.CreditLot, error) {
	q := t.ent.CreditLot.Query().Where(creditlot.UserID(userID), creditlot.RemainingGT(0))
	if unexpiredOnly {
		q = q.Where(creditlot.Or(creditlot.ExpiresAtIsNil(), creditlot.ExpiresAtGT(t.now)))
	}
	lots, err := q.Order(spendOrder...).All(ctx)
	if err != nil {
		return nil, fmt.Errorf("ledger: reading the lots of %s: %w", userID, err)
	}
	return lots, nil
}

var spendOrder = []creditlot.OrderOption{
	creditlot.ByPriority(),
	creditlot.ByExpiresAt(sql.OrderNullsLast()),
	creditlot.ByCreatedAt(),
	creditlot.ByID(),
}
