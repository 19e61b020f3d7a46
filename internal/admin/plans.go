package admin

import (
	"context"
	"fmt"
	"strings"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/creditplan"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/ledger"
)

// Actions on plans and subscriptions recorded in AdminAction.action.
const (
	ActionCreatePlan         = "create_plan"
	ActionUpdatePlan         = "update_plan"
	ActionCancelSubscription = "cancel_subscription"
)

// PlanFields are the editable fields of a plan; nil leaves a field as it
// is (on create, required fields must be set). RolloverCap is the one that
// can be cleared: ClearRolloverCap sets it to nil.
type PlanFields struct {
	Name             *string
	Description      *string
	CreditsPerPeriod *int64
	Interval         *creditplan.Interval
	PriceAmount      *int64
	Currency         *string
	StripePriceID    *string
	Rollover         *creditplan.Rollover
	RolloverCap      *int64
	ClearRolloverCap bool
	SortOrder        *int
	Active           *bool
}

// Validate checks a plan's fields one by one; creating requires the ones a
// plan cannot be without. The rule tying rolloverCap to rollover is
// checkRollover's, on the plan as a change leaves it.
func (f PlanFields) Validate(creating bool) error {
	if creating && (f.Name == nil || f.CreditsPerPeriod == nil || f.Interval == nil || f.PriceAmount == nil || f.Currency == nil) {
		return apperr.New(apperr.InvalidArgument, "name, creditsPerPeriod, interval, priceAmount and currency are required")
	}
	if f.Name != nil && strings.TrimSpace(*f.Name) == "" {
		return apperr.Invalid("name", "name must be 1 to 100 characters")
	}
	for _, text := range []struct {
		name  string
		value *string
		max   int
	}{{"name", f.Name, 100}, {"description", f.Description, 1000}, {"stripePriceId", f.StripePriceID, 255}} {
		if text.value == nil {
			continue
		}
		if err := ledger.ValidateText(text.name, *text.value, text.max); err != nil {
			return err
		}
	}
	for _, amount := range []struct {
		name  string
		value *int64
	}{{"creditsPerPeriod", f.CreditsPerPeriod}, {"priceAmount", f.PriceAmount}, {"rolloverCap", f.RolloverCap}} {
		if amount.value != nil && (*amount.value <= 0 || *amount.value > ledger.MaxAmount) {
			return apperr.Invalid(amount.name, "%s must be a positive whole number up to %d", amount.name, ledger.MaxAmount)
		}
	}
	if f.Currency != nil && !currencyCode.MatchString(*f.Currency) {
		return apperr.Invalid("currency", "currency must be a lower-case ISO 4217 code such as usd")
	}
	if f.Interval != nil && creditplan.IntervalValidator(*f.Interval) != nil {
		return apperr.Invalid("interval", "interval must be MONTH or YEAR")
	}
	if f.Rollover != nil && creditplan.RolloverValidator(*f.Rollover) != nil {
		return apperr.Invalid("rollover", "rollover must be NONE, CAPPED or ALL")
	}
	return nil
}

// checkRollover holds a plan to the rollover rule: a CAPPED plan has a cap,
// any other has none (a cap it does not apply would read as a promise).
func checkRollover(p *ent.CreditPlan) error {
	if p.Rollover == creditplan.RolloverCapped && p.RolloverCap == nil {
		return apperr.Invalid("rolloverCap", "rolloverCap is required when rollover is CAPPED")
	}
	if p.Rollover != creditplan.RolloverCapped && p.RolloverCap != nil {
		return apperr.Invalid("rolloverCap", "rolloverCap applies only when rollover is CAPPED (send rolloverCap: null to clear it)")
	}
	return nil
}

func (f *PlanFields) normalize() {
	if f.Currency != nil {
		lower := strings.ToLower(*f.Currency)
		f.Currency = &lower
	}
}

// CreatePlan puts a new plan on sale and audits it.
func (s *Service) CreatePlan(ctx context.Context, a Admin, f PlanFields) (*ent.CreditPlan, *ent.AdminAction, error) {
	f.normalize()
	if err := f.Validate(true); err != nil {
		return nil, nil, err
	}
	var plan *ent.CreditPlan
	var action *ent.AdminAction
	err := s.ledger.Within(ctx, func(ctx context.Context, t *ledger.Tx) error {
		var err error
		plan, err = t.Ent().CreditPlan.Create().
			SetName(*f.Name).
			SetNillableDescription(f.Description).
			SetCreditsPerPeriod(*f.CreditsPerPeriod).
			SetInterval(*f.Interval).
			SetPriceAmount(*f.PriceAmount).
			SetCurrency(*f.Currency).
			SetNillableStripePriceID(f.StripePriceID).
			SetNillableRollover(f.Rollover).
			SetNillableRolloverCap(f.RolloverCap).
			SetNillableSortOrder(f.SortOrder).
			SetNillableActive(f.Active).
			Save(ctx)
		if err != nil {
			return planError(err)
		}
		if err := checkRollover(plan); err != nil {
			return err
		}
		action, err = a.write(ctx, t.Ent(), record{action: ActionCreatePlan, targetID: plan.ID, reason: "created " + plan.Name})
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return plan.Unwrap(), action.Unwrap(), nil
}

// UpdatePlan changes a plan and audits it. The rollover rule is checked on
// the row the update leaves, in its transaction: two admins' changes of
// the rollover and the cap, each valid alone, cannot add up to a plan that
// breaks it.
func (s *Service) UpdatePlan(ctx context.Context, a Admin, id string, f PlanFields) (*ent.CreditPlan, *ent.AdminAction, error) {
	f.normalize()
	if err := f.Validate(false); err != nil {
		return nil, nil, err
	}
	var plan *ent.CreditPlan
	var action *ent.AdminAction
	err := s.ledger.Within(ctx, func(ctx context.Context, t *ledger.Tx) error {
		update := t.Ent().CreditPlan.UpdateOneID(id).
			SetNillableName(f.Name).
			SetNillableDescription(f.Description).
			SetNillableCreditsPerPeriod(f.CreditsPerPeriod).
			SetNillableInterval(f.Interval).
			SetNillablePriceAmount(f.PriceAmount).
			SetNillableCurrency(f.Currency).
			SetNillableStripePriceID(f.StripePriceID).
			SetNillableRollover(f.Rollover).
			SetNillableRolloverCap(f.RolloverCap).
			SetNillableSortOrder(f.SortOrder).
			SetNillableActive(f.Active)
		if f.ClearRolloverCap {
			update.ClearRolloverCap()
		}
		var err error
		plan, err = update.Save(ctx)
		if ent.IsNotFound(err) {
			return apperr.New(apperr.NotFound, "no credit plan with id %q", id)
		}
		if err != nil {
			return planError(err)
		}
		if err := checkRollover(plan); err != nil {
			return err
		}
		action, err = a.write(ctx, t.Ent(), record{action: ActionUpdatePlan, targetID: plan.ID, reason: "updated " + plan.Name})
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return plan.Unwrap(), action.Unwrap(), nil
}

func planError(err error) error {
	switch {
	case ent.IsConstraintError(err):
		return apperr.New(apperr.Conflict, "a credit plan with this name exists already")
	case ent.IsValidationError(err):
		return apperr.New(apperr.InvalidArgument, "invalid credit plan: %s", strings.TrimPrefix(err.Error(), "ent: "))
	}
	return fmt.Errorf("admin: writing credit plan: %w", err)
}

// CancelAudit writes the audit record of an admin's cancellation of a
// subscription, in the transaction that records it (see
// payments.CancelSubscription).
func (a Admin) CancelAudit(ctx context.Context, tx *ent.Tx, sub *ent.CreditSubscription, atPeriodEnd bool) error {
	when := "now"
	if atPeriodEnd {
		when = "at the end of the period"
	}
	_, err := a.write(ctx, tx, record{
		action: ActionCancelSubscription, targetID: sub.ID, targetUserID: &sub.UserID,
		reason: fmt.Sprintf("cancelled subscription %s to plan %s %s", sub.ID, sub.PlanID, when),
	})
	return err
}
