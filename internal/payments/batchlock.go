package payments

import (
	"context"
	"encoding/json"
	"fmt"

	"entgo.io/ent/dialect"
	"entgo.io/ent/dialect/sql"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/internal/ledger"
)

// lockedPayment is the column the locking statement reads each payment
// into, as JSON (the row is a user's: ent reads only users from it).
const lockedPayment = "locked_payment"

// lockPurchases locks the users of the payments that named matches and
// returns those payments as the locks protect them. On PostgreSQL that is
// one statement: the payments are joined to their users and locked with
// them, so a payment changed while the statement waited comes back
// changed. Elsewhere (SQLite: one writer at a time) the users are locked,
// then the payments read.
func (s *Service) lockPurchases(ctx context.Context, t *ledger.Tx, named func(id, sessionID string) *sql.Predicate) ([]*ent.Payment, error) {
	if s.db.Dialect != dialect.Postgres {
		if _, err := t.LockUsersWhere(ctx, func(sel *sql.Selector) {
			sel.Where(sql.In(sel.C(user.FieldID), sql.Select(payment.FieldUserID).From(sql.Table(payment.Table)).
				Where(named(payment.FieldID, payment.FieldStripeCheckoutSessionID))))
		}); err != nil {
			return nil, err
		}
		return t.Ent().Payment.Query().Where(func(sel *sql.Selector) {
			sel.Where(named(sel.C(payment.FieldID), sel.C(payment.FieldStripeCheckoutSessionID)))
		}).All(ctx)
	}
	rows, err := t.LockUsersJoining(ctx, func(sel *sql.Selector) {
		p := sql.Table(payment.Table).As(lockedPayment)
		sel.Join(p).On(sel.C(user.FieldID), p.C(payment.FieldUserID)).
			Where(named(p.C(payment.FieldID), p.C(payment.FieldStripeCheckoutSessionID))).
			AppendSelectExprAs(sql.Raw("CAST(row_to_json("+lockedPayment+") AS TEXT)"), lockedPayment).
			OrderBy(p.C(payment.FieldID))
	})
	if err != nil {
		return nil, err
	}
	ps := make([]*ent.Payment, 0, len(rows))
	for _, u := range rows {
		v, err := u.Value(lockedPayment)
		if err != nil {
			return nil, err
		}
		text, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("payments: a payment of %s read as %T", u.ID, v)
		}
		var p ent.Payment
		if err := json.Unmarshal([]byte(text), &p); err != nil {
			return nil, fmt.Errorf("payments: decoding a payment of %s: %w", u.ID, err)
		}
		ps = append(ps, &p)
	}
	return ps, nil
}
