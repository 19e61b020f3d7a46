package payments

import (
	"context"
	"fmt"
	"time"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/autorecharge"
	"github.com/tally-billing/tally/ent/creditpackage"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/idempotency"
	"github.com/tally-billing/tally/internal/ledger"
)

// AutoRechargeRequest is what setAutoRecharge asks for a user.
type AutoRechargeRequest struct {
	Enabled          bool
	ThresholdCredits int64
	PackageID        string
	// MonthlyLimitAmount caps what recharges charge in a calendar month
	// (UTC), in the pack's currency's minor units.
	MonthlyLimitAmount int64
	// IdempotencyKey, optional: the same key with the same request
	// changes nothing again and is answered as replayed.
	IdempotencyKey string
}

// AutoRechargeResult is a user's auto-recharge after setAutoRecharge.
type AutoRechargeResult struct {
	AutoRecharge *ent.AutoRecharge
	Replayed     bool
}

// autoRechargeOp names setAutoRecharge in idempotency fingerprints.
const autoRechargeOp = "set_auto_recharge"

// maxFailures is how many recharges in a row may fail before auto-recharge
// turns itself off (DISABLED).
const maxFailures = 3

// Validate checks the request on its own.
func (r AutoRechargeRequest) Validate() error {
	if r.ThresholdCredits < 0 || r.ThresholdCredits > ledger.MaxAmount {
		return apperr.Invalid("thresholdCredits", "thresholdCredits must be a whole number from 0 to %d", ledger.MaxAmount)
	}
	if r.MonthlyLimitAmount < 0 || r.MonthlyLimitAmount > ledger.MaxAmount {
		return apperr.Invalid("monthlyLimitAmount", "monthlyLimitAmount must be a whole number from 0 to %d", ledger.MaxAmount)
	}
	if !r.Enabled {
		return nil
	}
	if r.ThresholdCredits == 0 {
		return apperr.Invalid("thresholdCredits", "thresholdCredits must be positive to turn auto-recharge on")
	}
	if r.PackageID == "" {
		return apperr.Invalid("packageId", "packageId is required to turn auto-recharge on")
	}
	return nil
}

// SetAutoRecharge changes a user's auto-recharge settings under the user's
// lock; also, when given, runs in the same transaction (an admin's audit).
// Turning it on needs a saved card and a pack on sale whose price fits
// the monthly limit, and starts a recharge at once when the credits are
// already below the threshold. Turning it on again after failures starts
// afresh (ACTIVE); a recharge waiting for the customer stays so.
func (s *Service) SetAutoRecharge(ctx context.Context, userID string, req AutoRechargeRequest,
	also func(context.Context, *ledger.Tx, *ent.AutoRecharge) error,
) (*AutoRechargeResult, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	var key *idempotency.Request
	if req.IdempotencyKey != "" {
		scope := ledger.Actor{Kind: ledger.ActorUser, ID: userID}.String()
		k, err := idempotency.NewRequest(scope, req.IdempotencyKey, autoRechargeOp, struct {
			Enabled          bool
			Threshold, Limit int64
			PackageID        string
		}{req.Enabled, req.ThresholdCredits, req.MonthlyLimitAmount, req.PackageID})
		if err != nil {
			return nil, err
		}
		key = &k
	}
	var result AutoRechargeResult
	err := s.ledger.Within(ctx, func(ctx context.Context, t *ledger.Tx) error {
		u, err := t.LockUser(ctx, userID)
		if err != nil {
			return err
		}
		if key != nil {
			var stored struct{}
			found, err := idempotency.Find(ctx, t.Ent().Client(), *key, &stored)
			if err != nil {
				return err
			}
			if found {
				result.Replayed = true
				result.AutoRecharge, err = autoRechargeOf(ctx, t.Ent().Client(), userID)
				return err
			}
		}
		a, err := s.applySettings(ctx, t, u, req)
		if err != nil {
			return err
		}
		if key != nil {
			if err := idempotency.Store(ctx, t.Ent().IdempotencyKey, t.Now(), idempotency.Entry{Request: *key, Result: struct{}{}}); err != nil {
				return err
			}
		}
		if also != nil {
			if err := also(ctx, t, a); err != nil {
				return err
			}
		}
		result.AutoRecharge = a
		return nil
	})
	if err != nil {
		return nil, err
	}
	if result.AutoRecharge != nil {
		result.AutoRecharge = result.AutoRecharge.Unwrap()
	}
	return &result, nil
}

// applySettings writes the settings and what follows from them.
func (s *Service) applySettings(ctx context.Context, t *ledger.Tx, u *ent.User, req AutoRechargeRequest) (*ent.AutoRecharge, error) {
	a, err := ensureAutoRecharge(ctx, t.Ent().Client(), u.ID)
	if err != nil {
		return nil, err
	}
	update := a.Update().
		SetEnabled(req.Enabled).
		SetThresholdCredits(req.ThresholdCredits).
		SetMonthlyLimitAmount(req.MonthlyLimitAmount)
	if req.PackageID != "" {
		update.SetPackageID(req.PackageID)
	}
	if req.Enabled {
		if a.StripePaymentMethodID == "" {
			return nil, apperr.New(apperr.InvalidArgument, "save a card first (createCardSetupSession, or a purchase with saveCard)")
		}
		pkg, err := t.Ent().CreditPackage.Query().Where(creditpackage.ID(req.PackageID)).Only(ctx)
		if ent.IsNotFound(err) {
			return nil, apperr.New(apperr.NotFound, "no credit package with id %q", req.PackageID)
		}
		if err != nil {
			return nil, fmt.Errorf("payments: reading credit package %s: %w", req.PackageID, err)
		}
		if !pkg.Active {
			return nil, apperr.Invalid("packageId", "credit package %q is no longer on sale", req.PackageID)
		}
		if pkg.PriceAmount > req.MonthlyLimitAmount {
			return nil, apperr.Invalid("monthlyLimitAmount",
				"monthlyLimitAmount %d is less than the pack's price %d: no recharge could ever be made", req.MonthlyLimitAmount, pkg.PriceAmount)
		}
		// Turned on (again): a fresh start, unless a recharge waits for
		// the customer. Settings changed while on leave the wait after a
		// decline as it is: calling again is not a way around it.
		if (!a.Enabled || a.Status == autorecharge.StatusDisabled) && a.Status != autorecharge.StatusActionRequired {
			update.SetStatus(autorecharge.StatusActive).SetConsecutiveFailures(0).ClearRetryAfter().SetLastError("")
		}
	}
	if a, err = update.Save(ctx); err != nil {
		return nil, fmt.Errorf("payments: saving the auto-recharge of %s: %w", u.ID, err)
	}
	if err := syncRechargeBelow(ctx, t, u, a); err != nil {
		return nil, err
	}
	// Turned on below the threshold: the need is there already.
	t.LookForRecharge(u)
	return a, nil
}

// ensureAutoRecharge returns the user's settings row, making an empty one
// (off) on first use. Called under the user's lock.
func ensureAutoRecharge(ctx context.Context, c *ent.Client, userID string) (*ent.AutoRecharge, error) {
	a, err := c.AutoRecharge.Query().Where(autorecharge.UserID(userID)).Only(ctx)
	if ent.IsNotFound(err) {
		a, err = c.AutoRecharge.Create().SetUserID(userID).Save(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("payments: reading the auto-recharge of %s: %w", userID, err)
	}
	return a, nil
}

// autoRechargeOf is the user's settings, nil if they never had any.
func autoRechargeOf(ctx context.Context, c *ent.Client, userID string) (*ent.AutoRecharge, error) {
	a, err := c.AutoRecharge.Query().Where(autorecharge.UserID(userID)).Only(ctx)
	if ent.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("payments: reading the auto-recharge of %s: %w", userID, err)
	}
	return a, nil
}

// AutoRechargeOf is the user's settings, nil if they never had any.
func (s *Service) AutoRechargeOf(ctx context.Context, userID string) (*ent.AutoRecharge, error) {
	return autoRechargeOf(ctx, s.db.Ent, userID)
}

// ChargedThisMonth is what the user's recharges of this calendar month
// (UTC) charged or are charging, in the currency of their pack (that of
// the monthly limit); 0 without a pack.
func (s *Service) ChargedThisMonth(ctx context.Context, a *ent.AutoRecharge) (int64, error) {
	if a.PackageID == nil {
		return 0, nil
	}
	pkg, err := s.db.Ent.CreditPackage.Get(ctx, *a.PackageID)
	if err != nil {
		return 0, fmt.Errorf("payments: reading the recharge pack of %s: %w", a.UserID, err)
	}
	return chargedThisMonth(ctx, s.db.Ent, a.UserID, pkg.Currency, s.now())
}

// canCharge says whether a recharge may be started for these settings at
// all (the trigger also checks what is in flight, the wait after a
// decline and the month's limit).
func canCharge(a *ent.AutoRecharge) bool {
	return a.Enabled && a.PackageID != nil && a.StripePaymentMethodID != "" && a.StripeCustomerID != "" &&
		(a.Status == autorecharge.StatusActive || a.Status == autorecharge.StatusFailing)
}

// syncRechargeBelow keeps users.recharge_below, which the ledger reads
// from the row it locks, in step with the settings.
func syncRechargeBelow(ctx context.Context, t *ledger.Tx, u *ent.User, a *ent.AutoRecharge) error {
	var below *int64
	if canCharge(a) {
		below = &a.ThresholdCredits
	}
	if (below == nil) == (u.RechargeBelow == nil) && (below == nil || *below == *u.RechargeBelow) {
		return nil
	}
	return t.SetRechargeBelow(ctx, u.ID, below)
}

// Card is a saved card as Tally keeps it: Stripe's ids and what its owner
// may see of it.
type Card struct {
	CustomerID, PaymentMethodID string
	Brand, Last4                string
	ExpMonth, ExpYear           int
}

// SaveCard keeps a card for the user's recharges, replacing the one
// before. A recharge waiting for the customer to authenticate the old card
// is given up (FAILED; should they complete it after all, it is granted
// like any paid recharge), and auto-recharge is ACTIVE again.
func (s *Service) SaveCard(ctx context.Context, userID string, c Card) error {
	return s.ledger.Within(ctx, func(ctx context.Context, t *ledger.Tx) error {
		u, err := t.LockUser(ctx, userID)
		if err != nil {
			return err
		}
		a, err := ensureAutoRecharge(ctx, t.Ent().Client(), userID)
		if err != nil {
			return err
		}
		update := a.Update().SetStripeCustomerID(c.CustomerID).SetStripePaymentMethodID(c.PaymentMethodID).
			SetCardBrand(apperr.Clip(c.Brand, 32)).SetCardLast4(apperr.Clip(c.Last4, 4)).
			SetCardExpMonth(c.ExpMonth).SetCardExpYear(c.ExpYear)
		switch a.Status {
		case autorecharge.StatusActionRequired:
			if a.InFlightPaymentID != nil {
				if err := s.giveUpAwaiting(ctx, t, *a.InFlightPaymentID); err != nil {
					return err
				}
				update.ClearInFlightPaymentID()
			}
			update.SetStatus(autorecharge.StatusActive).SetLastError("")
		case autorecharge.StatusFailing:
			// Another card: no reason to wait after the old one's decline.
			update.SetStatus(autorecharge.StatusActive).SetConsecutiveFailures(0).ClearRetryAfter().SetLastError("")
		}
		if a, err = update.Save(ctx); err != nil {
			return fmt.Errorf("payments: saving the card of %s: %w", userID, err)
		}
		// A user already below the threshold (out of credits while the
		// old card failed) is recharged with the new one at once.
		t.LookForRecharge(u)
		return syncRechargeBelow(ctx, t, u, a)
	})
}

// monthStart is the start of the calendar month (UTC) of now, from which
// the monthly limit counts.
func monthStart(now time.Time) time.Time {
	now = now.UTC()
	return time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
}
