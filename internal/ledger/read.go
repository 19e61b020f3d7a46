package ledger

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	"entgo.io/ent/dialect/sql"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/creditlot"
	"github.com/tally-billing/tally/ent/creditreservation"
	"github.com/tally-billing/tally/ent/credittransaction"
	"github.com/tally-billing/tally/internal/apperr"
)

// Balance is a user's credits at one moment.
type Balance struct {
	// Balance is the cached sum of the user's postings; negative is a debt.
	Balance int64
	// Reserved is the sum of open, unexpired reservations.
	Reserved int64
	// Available is what the user can spend or reserve now.
	Available int64
	// Held is what disputes keep out of reach (not in Balance).
	Held int64
}

// read runs fn in a transaction so that its reads see one state.
func (s *Service) read(ctx context.Context, fn func(ctx context.Context, t *Tx) error) error {
	return s.Within(ctx, fn)
}

// Page asks for one page of a keyset-paginated list.
type Page struct {
	// First is the page size, 1 to MaxPageSize.
	First int
	// After is the cursor of the last item of the previous page ("" for
	// the first page).
	After string
}

// MaxPageSize bounds a page.
const MaxPageSize = 100

// Validate checks a page request.
func (p Page) Validate() error {
	if p.First < 1 || p.First > MaxPageSize {
		return apperr.Invalid("first", "first must be from 1 to %d, not %d", MaxPageSize, p.First)
	}
	return nil
}

// TransactionPage is a page of a user's history, newest first.
type TransactionPage struct {
	Transactions []*ent.CreditTransaction
	// EndCursor continues after the last transaction; HasNext says whether
	// there is more.
	EndCursor string
	HasNext   bool
}

// Cursor is the keyset position of a transaction in a user's history.
func Cursor(t *ent.CreditTransaction) string {
	return base64.RawURLEncoding.EncodeToString([]byte(t.CreatedAt.UTC().Format(time.RFC3339Nano) + "|" + t.ID))
}

func parseCursor(c string) (time.Time, string, error) {
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err == nil {
		at, id, ok := strings.Cut(string(raw), "|")
		if ts, perr := time.Parse(time.RFC3339Nano, at); ok && perr == nil && id != "" {
			return ts, id, nil
		}
	}
	return time.Time{}, "", apperr.New(apperr.InvalidArgument, "after is not a cursor from this list")
}

// Transactions reads a page of the user's transactions, newest first, with
// their postings. Keyset pagination on (created_at, id): every page costs
// the same however deep it is.
func (s *Service) Transactions(ctx context.Context, userID string, p Page) (TransactionPage, error) {
	if err := p.Validate(); err != nil {
		return TransactionPage{}, err
	}
	q := s.db.Ent.CreditTransaction.Query().Where(credittransaction.UserID(userID))
	if p.After != "" {
		at, id, err := parseCursor(p.After)
		if err != nil {
			return TransactionPage{}, err
		}
		// A row comparison, which both databases answer with a range of the
		// (user_id, created_at, id) index: the page costs the same at any depth.
		q = q.Where(func(s *sql.Selector) {
			s.Where(sql.CompositeLT([]string{s.C(credittransaction.FieldCreatedAt), s.C(credittransaction.FieldID)}, at, id))
		})
	}
	txns, err := q.Order(
		credittransaction.ByCreatedAt(sql.OrderDesc()),
		credittransaction.ByID(sql.OrderDesc()),
	).Limit(p.First + 1).WithPostings().All(ctx)
	if err != nil {
		return TransactionPage{}, fmt.Errorf("ledger: reading transactions of %s: %w", userID, err)
	}
	page := TransactionPage{Transactions: txns}
	if len(txns) > p.First {
		page.Transactions, page.HasNext = txns[:p.First], true
	}
	if n := len(page.Transactions); n > 0 {
		page.EndCursor = Cursor(page.Transactions[n-1])
	}
	return page, nil
}

// Lots reads the user's lots that still hold or have on hold credits, in
// spend order.
func (s *Service) Lots(ctx context.Context, userID string) ([]*ent.CreditLot, error) {
	lots, err := s.db.Ent.CreditLot.Query().
		Where(creditlot.UserID(userID), creditlot.Or(creditlot.RemainingGT(0), creditlot.HeldGT(0))).
		Order(spendOrder...).
		All(ctx)
	if err != nil {
		return nil, fmt.Errorf("ledger: reading lots of %s: %w", userID, err)
	}
	return lots, nil
}

// OpenReservations reads the user's open reservations, soonest expiry first.
func (s *Service) OpenReservations(ctx context.Context, userID string) ([]*ent.CreditReservation, error) {
	res, err := s.db.Ent.CreditReservation.Query().
		Where(creditreservation.UserID(userID), creditreservation.StatusEQ(creditreservation.StatusOpen)).
		Order(creditreservation.ByExpiresAt(), creditreservation.ByID()).
		All(ctx)
	if err != nil {
		return nil, fmt.Errorf("ledger: reading reservations of %s: %w", userID, err)
	}
	return res, nil
}
