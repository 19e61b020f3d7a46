package ledger

import (
	"context"
	"fmt"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/creditlot"
	"github.com/tally-billing/tally/ent/creditreservation"
	"github.com/tally-billing/tally/ent/credittransaction"
)

// sweepBatch bounds how many expired items one sweep pass reads.
const sweepBatch = 500

var systemExpiry = Actor{Kind: ActorSystem, ID: "expiry"}

// ExpireLots expires every lot past its expiry that still holds credits,
// each in a transaction of its own (an EXPIRY transaction moving the rest to
// system:expired). It returns how many lots it expired.
func (s *Service) ExpireLots(ctx context.Context) (int, error) {
	done := 0
	for {
		due, err := s.db.Ent.CreditLot.Query().
			Where(creditlot.RemainingGT(0), creditlot.ExpiresAtLTE(s.now().UTC())).
			Limit(sweepBatch).
			IDs(ctx)
		if err != nil {
			return done, fmt.Errorf("ledger: finding expired lots: %w", err)
		}
		for _, id := range due {
			expired, err := s.expireLot(ctx, id)
			if err != nil {
				return done, err
			}
			if expired {
				done++
			}
		}
		if len(due) < sweepBatch {
			return done, nil
		}
	}
}

func (s *Service) expireLot(ctx context.Context, lotID string) (bool, error) {
	expired := false
	err := s.Within(ctx, func(ctx context.Context, t *Tx) error {
		expired = false
		lot, u, err := t.lotUnderLock(ctx, lotID)
		if err != nil {
			return err
		}
		if lot.Remaining == 0 || lot.ExpiresAt == nil || lot.ExpiresAt.After(t.now) {
			return nil
		}
		if err := t.expireRest(ctx, u, lot, "lot "+lot.ID+" expired"); err != nil {
			return err
		}
		expired = true
		return nil
	})
	return expired, err
}

// expireRest moves what a lot still holds to system:expired, as an EXPIRY
// transaction of its own: the sweep does it once the lot's time is up, and
// a subscription's renewal for the period that ended (see EndPeriod), so
// that whichever comes first, the other finds nothing left.
func (t *Tx) expireRest(ctx context.Context, u *ent.User, lot *ent.CreditLot, reason string) error {
	m := newMovement(credittransaction.KindExpiry, lot.Remaining)
	m.reason = reason
	m.paymentID = lot.PaymentID
	m.post(UserAccount(u.ID), true, &lot.ID, -lot.Remaining)
	m.post(AccountExpired, false, &lot.ID, lot.Remaining)
	lost := lot.Remaining
	if err := t.setLot(ctx, lot, 0, lot.Held); err != nil {
		return err
	}
	if _, err := t.write(ctx, systemExpiry, "", u, m); err != nil {
		return err
	}
	t.Emit(Event{Type: EventCreditsExpired, User: u, Data: map[string]any{"lot": lotData(lot, lost)}})
	return nil
}

// lotUnderLock locks the user of a lot and reads the lot under that lock:
// read before it, a spend may have emptied the lot since.
func (t *Tx) lotUnderLock(ctx context.Context, lotID string) (*ent.CreditLot, *ent.User, error) {
	lot, err := t.ent.CreditLot.Get(ctx, lotID)
	if err != nil {
		return nil, nil, fmt.Errorf("ledger: reading lot %s: %w", lotID, err)
	}
	u, err := t.lockUser(ctx, lot.UserID)
	if err != nil {
		return nil, nil, err
	}
	if lot, err = t.ent.CreditLot.Get(ctx, lotID); err != nil {
		return nil, nil, fmt.Errorf("ledger: reading lot %s: %w", lotID, err)
	}
	return lot, u, nil
}

// ExpireReservations closes every open reservation past its expiry, each in
// a transaction of its own. Their credits were available again from the
// moment they expired; this records it.
func (s *Service) ExpireReservations(ctx context.Context) (int, error) {
	done := 0
	for {
		due, err := s.db.Ent.CreditReservation.Query().
			Where(creditreservation.StatusEQ(creditreservation.StatusOpen),
				creditreservation.ExpiresAtLTE(s.now().UTC())).
			Limit(sweepBatch).
			All(ctx)
		if err != nil {
			return done, fmt.Errorf("ledger: finding expired reservations: %w", err)
		}
		for _, r := range due {
			expired := false
			err := s.Within(ctx, func(ctx context.Context, t *Tx) error {
				expired = false
				u, err := t.lockUser(ctx, r.UserID)
				if err != nil {
					return err
				}
				res, err := t.ent.CreditReservation.Get(ctx, r.ID)
				if err != nil {
					return fmt.Errorf("ledger: reading reservation %s: %w", r.ID, err)
				}
				if res.Status != creditreservation.StatusOpen {
					return nil
				}
				if _, err := t.release(ctx, systemExpiry, "", u, res, creditreservation.StatusExpired, "reservation expired"); err != nil {
					return err
				}
				expired = true
				return nil
			})
			if err != nil {
				return done, err
			}
			if expired {
				done++
			}
		}
		if len(due) < sweepBatch {
			return done, nil
		}
	}
}
