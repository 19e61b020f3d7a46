package ledger

import (
	"context"
	"fmt"

	"entgo.io/ent/dialect/sql"
	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/creditlot"
	"github.com/tally-billing/tally/ent/creditreservation"
	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/internal/apperr"
	"go.opentelemetry.io/otel/trace"
)

// SpendRequest uses credits.
type SpendRequest struct {
	UserID         string
	Amount         int64
	Reason         string
	Metadata       map[string]string
	IdempotencyKey string
}

// Spend uses credits in a transaction of its own. Concurrent spends are
// coalesced (see batch.Batcher): each keeps its own transaction, postings,
// idempotency record and refusal; a batch shares the locks (taken in id
// order, so batches never deadlock), the reads, one statement per table,
// and the commit.
func (s *Service) Spend(ctx context.Context, actor Actor, req SpendRequest) (_ *Result, err error) {
	ctx, span := s.startOp(ctx, "spend", actor.Kind)
	defer func() { endSpan(span, err) }()
	call, err := newSpendCall(actor, req)
	if err != nil {
		return nil, err
	}
	call.parent = trace.SpanContextFromContext(ctx)
	s.spends.Do(call)
	return call.res, call.err
}

// Spend takes credits from the user's lots in spend order. It refuses, and
// changes nothing, when the user is frozen, in debt, or has fewer available
// credits (balance minus open reservations) than the amount.
func (t *Tx) Spend(ctx context.Context, actor Actor, req SpendRequest) (*Result, error) {
	call, err := newSpendCall(actor, req)
	if err != nil {
		return nil, err
	}
	if err := t.spendMany(ctx, []*spendCall{call}); err != nil {
		return nil, err
	}
	return call.res, call.err
}

// spendFromLots checks that the user may spend amount (leaving aside the
// reservation being captured, if any: an open one) and draws it from the
// lots.
func (t *Tx) spendFromLots(ctx context.Context, u *ent.User, m *movement, amount int64, capturing *ent.CreditReservation) error {
	if err := spendable(u); err != nil {
		return err
	}
	available, lots, err := t.available(ctx, u, capturing)
	if err != nil {
		return err
	}
	if amount > available {
		return apperr.New(apperr.InsufficientCredits, "%d credits needed, %d available", amount, available)
	}
	t.drawLots(u, m, lots, amount)
	m.post(AccountSpent, false, nil, amount)
	return nil
}

// spendable refuses a spend from a frozen account or one in debt.
func spendable(u *ent.User) error {
	if u.Status == user.StatusFrozen {
		return apperr.New(apperr.AccountFrozen, "the account is frozen")
	}
	if u.CreditsBalance < 0 {
		return apperr.New(apperr.InsufficientCredits, "the account has a debt of %d credits to repay first", -u.CreditsBalance)
	}
	return nil
}

// available is what the user may spend or reserve now: the balance less
// open reservations (leaving out except, an open, unexpired reservation
// being captured, if any), and never more than the unexpired lots hold. It
// returns those lots in spend order. The lots the user's lock read, if it
// did (see lockUserWithLots), are used once, instead of reading them again.
func (t *Tx) available(ctx context.Context, u *ent.User, except *ent.CreditReservation) (int64, []*ent.CreditLot, error) {
	if read, ok := t.prefetched[u.ID]; ok {
		delete(t.prefetched, u.ID)
		reserved := read.reserved
		if except != nil {
			reserved -= except.Amount // counted: it is open and unexpired
		}
		return availableOf(u.CreditsBalance, reserved, sumRemaining(read.lots)), read.lots, nil
	}
	exceptID := ""
	if except != nil {
		exceptID = except.ID
	}
	lots, reserved, err := t.lotsAndReserved(ctx, []string{u.ID}, exceptID)
	if err != nil {
		return 0, nil, err
	}
	return availableOf(u.CreditsBalance, reserved[u.ID], sumRemaining(lots[u.ID])), lots[u.ID], nil
}

// lotsAndReserved reads the users' unexpired lots in spend order and, in
// the same statement (one round trip fewer under the accounts' locks), the
// sum of each user's open reservations (leaving out one). A user without
// lots has no row to carry the sum; it has nothing available anyway.
func (t *Tx) lotsAndReserved(ctx context.Context, userIDs []string, except string) (map[string][]*ent.CreditLot, map[string]int64, error) {
	const column = "reserved_sum"
	lots := map[string][]*ent.CreditLot{}
	reserved := map[string]int64{}
	if len(userIDs) == 0 {
		return lots, reserved, nil
	}
	found, err := t.ent.CreditLot.Query().
		Where(creditlot.UserIDIn(userIDs...), creditlot.RemainingGT(0),
			creditlot.Or(creditlot.ExpiresAtIsNil(), creditlot.ExpiresAtGT(t.now))).
		Order(spendOrder...).
		Modify(func(s *sql.Selector) {
			r := sql.Table(creditreservation.Table)
			sum := sql.Select("CAST(COALESCE(SUM(" + r.C(creditreservation.FieldAmount) + "), 0) AS BIGINT)").
				From(r).
				Where(sql.And(
					sql.ColumnsEQ(r.C(creditreservation.FieldUserID), s.C(creditlot.FieldUserID)),
					sql.EQ(r.C(creditreservation.FieldStatus), creditreservation.StatusOpen),
					sql.GT(r.C(creditreservation.FieldExpiresAt), t.now),
				))
			if except != "" {
				sum.Where(sql.NEQ(r.C(creditreservation.FieldID), except))
			}
			s.AppendSelectExprAs(sum, column)
		}).
		All(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("ledger: reading the lots of %d users: %w", len(userIDs), err)
	}
	for _, l := range found {
		if _, ok := reserved[l.UserID]; !ok {
			v, err := l.Value(column)
			if err != nil {
				return nil, nil, fmt.Errorf("ledger: reading the reservations of %s: %w", l.UserID, err)
			}
			sum, ok := v.(int64)
			if !ok {
				return nil, nil, fmt.Errorf("ledger: the reservations of %s sum to a %T", l.UserID, v)
			}
			reserved[l.UserID] = sum
		}
		lots[l.UserID] = append(lots[l.UserID], l)
	}
	return lots, reserved, nil
}

// availableOf is what a user may spend: the balance less reservations, and
// never more than the unexpired lots hold.
func availableOf(balance, reserved, spendable int64) int64 {
	return max(0, min(balance-reserved, spendable))
}
