package ledger

import (
	"context"
	"fmt"
	"time"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/creditlot"
)

// NoticeExpiringLots tells the application (credits.expiring) of every lot
// with credits left that expires within notice, once per lot: the lot
// records that it was told, under its user's lock, whichever replica's
// sweep gets there. It returns how many it told of.
func (s *Service) NoticeExpiringLots(ctx context.Context, notice time.Duration) (int, error) {
	if s.events == nil || notice <= 0 {
		return 0, nil
	}
	done := 0
	for {
		now := s.now().UTC()
		due, err := s.db.Ent.CreditLot.Query().
			Where(creditlot.RemainingGT(0), creditlot.ExpiresAtGT(now), creditlot.ExpiresAtLTE(now.Add(notice)),
				creditlot.ExpiryNoticedAtIsNil()).
			Limit(sweepBatch).
			IDs(ctx)
		if err != nil {
			return done, fmt.Errorf("ledger: finding lots about to expire: %w", err)
		}
		for _, id := range due {
			told, err := s.noticeLot(ctx, id, notice)
			if err != nil {
				return done, err
			}
			if told {
				done++
			}
		}
		if len(due) < sweepBatch {
			return done, nil
		}
	}
}

func (s *Service) noticeLot(ctx context.Context, lotID string, notice time.Duration) (bool, error) {
	told := false
	err := s.Within(ctx, func(ctx context.Context, t *Tx) error {
		told = false
		// Another sweep may have told of it since it was found.
		lot, u, err := t.lotUnderLock(ctx, lotID)
		if err != nil {
			return err
		}
		if lot.Remaining == 0 || lot.ExpiresAt == nil || lot.ExpiryNoticedAt != nil ||
			!lot.ExpiresAt.After(t.now) || lot.ExpiresAt.After(t.now.Add(notice)) {
			return nil
		}
		if err := t.ent.CreditLot.UpdateOneID(lotID).SetExpiryNoticedAt(t.now).Exec(ctx); err != nil {
			return fmt.Errorf("ledger: recording the notice of lot %s: %w", lotID, err)
		}
		t.Emit(Event{Type: EventCreditsExpiring, User: u, Data: map[string]any{"lot": lotData(lot, lot.Remaining)}})
		told = true
		return nil
	})
	return told, err
}

// lotData is what an event says of a lot: amount is the credits it is
// about (expiring or expired).
func lotData(lot *ent.CreditLot, amount int64) map[string]any {
	return map[string]any{"id": lot.ID, "credits": amount, "expiresAt": lot.ExpiresAt, "source": lot.Source}
}
