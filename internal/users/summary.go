package users

import (
	"context"
	"fmt"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/ledger"
)

// Summary is what support looks at first about one user.
type Summary struct {
	User    *ent.User
	Balance ledger.Balance
	// Lots still holding (or holding on hold) credits, in spend order.
	Lots []*ent.CreditLot
	// Reservations still open, soonest expiry first.
	Reservations []*ent.CreditReservation
	// Recent transactions, newest first.
	Recent []*ent.CreditTransaction
}

// MaxRecent bounds how many recent transactions a summary lists (a page).
const MaxRecent = ledger.MaxPageSize

// Summarize reads the summary of the user with the external id, with the
// last recent transactions. An unknown user is NOT_FOUND: support looks
// users up, it never creates them.
func (s *Service) Summarize(ctx context.Context, l *ledger.Service, externalID string, recent int) (Summary, error) {
	if recent < 1 || recent > MaxRecent {
		return Summary{}, apperr.New(apperr.InvalidArgument, "the number of recent transactions must be from 1 to %d, not %d", MaxRecent, recent)
	}
	u, err := s.ByExternalID(ctx, externalID)
	if err != nil {
		return Summary{}, err
	}
	sum := Summary{User: u}
	if sum.Balance, err = l.Balance(ctx, u.ID); err != nil {
		return Summary{}, err
	}
	if sum.Lots, err = l.Lots(ctx, u.ID); err != nil {
		return Summary{}, err
	}
	if sum.Reservations, err = l.OpenReservations(ctx, u.ID); err != nil {
		return Summary{}, err
	}
	page, err := l.Transactions(ctx, u.ID, ledger.Page{First: recent})
	if err != nil {
		return Summary{}, err
	}
	sum.Recent = page.Transactions
	return sum, nil
}

// ByExternalID reads the user with the external id, never creating one: an
// unknown user is NOT_FOUND.
func (s *Service) ByExternalID(ctx context.Context, externalID string) (*ent.User, error) {
	if err := auth.CheckExternalID("the external id", externalID); err != nil {
		return nil, err
	}
	u, err := s.client.User.Query().Where(user.ExternalID(externalID)).Only(ctx)
	if ent.IsNotFound(err) {
		return nil, apperr.New(apperr.NotFound, "no user with external id %q", externalID)
	}
	if err != nil {
		return nil, fmt.Errorf("users: reading %s: %w", externalID, err)
	}
	return u, nil
}
