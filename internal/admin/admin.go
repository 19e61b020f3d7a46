// Package admin performs admin operations and audits them: every operation
// writes an AdminAction (who, what, on whom, amount, reason, balance before
// and after, request id) in the same database transaction as its effect, so
// that there is never an effect without its audit record or the reverse.
package admin

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/adminaction"
	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/outbound"
)

// Actions recorded in AdminAction.action.
const (
	ActionGrantCredits  = "grant_credits"
	ActionRevokeCredits = "revoke_credits"
	ActionFreezeUser    = "freeze_user"
	ActionUnfreezeUser  = "unfreeze_user"
	ActionCreatePackage = "create_credit_package"
	ActionUpdatePackage = "update_credit_package"
	ActionRefundPayment = "refund_payment"
)

// Service runs admin operations.
type Service struct {
	ledger *ledger.Service
	policy outbound.Policy   // the endpoint URLs allowed
	queue  outbound.Inserter // redeliveries' jobs
}

// New returns the admin service.
func New(l *ledger.Service) *Service { return &Service{ledger: l} }

// Admin is the admin acting and the request they act in.
type Admin struct {
	User      *ent.User
	RequestID string
}

func (a Admin) actor() ledger.Actor { return ledger.Actor{Kind: ledger.ActorAdmin, ID: a.User.ID} }

// record is the audit row of one operation.
type record struct {
	action        string
	targetID      string
	targetUserID  *string
	amount        *int64
	reason        string
	before, after *int64
	transactionID *string
}

func (a Admin) write(ctx context.Context, tx *ent.Tx, r record) (*ent.AdminAction, error) {
	create := tx.AdminAction.Create().
		SetAdminID(a.User.ID).
		SetAction(r.action).
		SetTargetID(r.targetID).
		SetNillableTargetUserID(r.targetUserID).
		SetNillableAmount(r.amount).
		SetNillableBalanceBefore(r.before).
		SetNillableBalanceAfter(r.after).
		SetNillableTransactionID(r.transactionID).
		SetRequestID(a.RequestID)
	if r.reason != "" {
		create.SetReason(r.reason)
	}
	action, err := create.Save(ctx)
	if err != nil {
		return nil, fmt.Errorf("admin: recording %s: %w", r.action, err)
	}
	return action, nil
}

// moved audits a ledger operation; a replayed request returns the audit
// record of its first run instead of writing another.
func (a Admin) moved(ctx context.Context, tx *ent.Tx, action string, target *ent.User, res *ledger.Result, delta int64, reason string) (*ent.AdminAction, error) {
	if res.Replayed {
		found, err := tx.AdminAction.Query().Where(adminaction.TransactionID(res.Transaction.ID)).Only(ctx)
		if err != nil {
			return nil, fmt.Errorf("admin: reading the audit record of %s: %w", res.Transaction.ID, err)
		}
		return found, nil
	}
	before, after := res.Balance-delta, res.Balance
	return a.write(ctx, tx, record{
		action: action, targetID: target.ID, targetUserID: &target.ID,
		amount: &res.Amount, reason: reason, before: &before, after: &after,
		transactionID: &res.Transaction.ID,
	})
}

func requireReason(reason string) error {
	if strings.TrimSpace(reason) == "" {
		return apperr.Invalid("reason", "reason is required for admin operations")
	}
	return nil
}

// GrantCredits gives credits to target and audits it.
func (s *Service) GrantCredits(ctx context.Context, a Admin, target *ent.User, req ledger.GrantRequest) (*ledger.Result, *ent.AdminAction, error) {
	if err := requireReason(req.Reason); err != nil {
		return nil, nil, err
	}
	req.UserID, req.Purchase, req.PaymentID = target.ID, false, nil
	var res *ledger.Result
	var action *ent.AdminAction
	err := s.ledger.Within(ctx, func(ctx context.Context, t *ledger.Tx) error {
		var err error
		if res, err = t.Grant(ctx, a.actor(), req); err != nil {
			return err
		}
		action, err = a.moved(ctx, t.Ent(), ActionGrantCredits, target, res, res.Amount, req.Reason)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return res.Unwrap(), action.Unwrap(), nil
}

// RevokeCredits takes credits back from target and audits it.
func (s *Service) RevokeCredits(ctx context.Context, a Admin, target *ent.User, req ledger.RevokeRequest) (*ledger.Result, *ent.AdminAction, error) {
	if err := requireReason(req.Reason); err != nil {
		return nil, nil, err
	}
	req.UserID = target.ID
	var res *ledger.Result
	var action *ent.AdminAction
	err := s.ledger.Within(ctx, func(ctx context.Context, t *ledger.Tx) error {
		var err error
		if res, err = t.Revoke(ctx, a.actor(), req); err != nil {
			return err
		}
		action, err = a.moved(ctx, t.Ent(), ActionRevokeCredits, target, res, -res.Amount, req.Reason)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return res.Unwrap(), action.Unwrap(), nil
}

// SetFrozen freezes or unfreezes target and audits it. A frozen user keeps
// their credits but can neither spend nor reserve them.
func (s *Service) SetFrozen(ctx context.Context, a Admin, target *ent.User, frozen bool, reason string) (*ent.User, *ent.AdminAction, error) {
	if err := requireReason(reason); err != nil {
		return nil, nil, err
	}
	status, name := user.StatusActive, ActionUnfreezeUser
	if frozen {
		status, name = user.StatusFrozen, ActionFreezeUser
	}
	var updated *ent.User
	var action *ent.AdminAction
	err := s.ledger.Within(ctx, func(ctx context.Context, t *ledger.Tx) error {
		var err error
		updated, err = t.Ent().User.UpdateOneID(target.ID).SetStatus(status).Save(ctx)
		if err != nil {
			return fmt.Errorf("admin: setting the status of %s: %w", target.ID, err)
		}
		balance := updated.CreditsBalance
		action, err = a.write(ctx, t.Ent(), record{
			action: name, targetID: target.ID, targetUserID: &target.ID,
			reason: reason, before: &balance, after: &balance,
		})
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return updated.Unwrap(), action.Unwrap(), nil
}

var currencyCode = regexp.MustCompile(`^[a-z]{3}$`)

// PackageFields are the editable fields of a credit pack; nil leaves a field
// as it is (on create, required fields must be set).
type PackageFields struct {
	Name          *string
	Description   *string
	Credits       *int64
	PriceAmount   *int64
	Currency      *string
	StripePriceID *string
	SortOrder     *int
	Active        *bool
}

// Validate checks a packs fields; creating requires the ones a pack
// cannot be without.
func (f PackageFields) Validate(creating bool) error {
	if creating && (f.Name == nil || f.Credits == nil || f.PriceAmount == nil || f.Currency == nil) {
		return apperr.New(apperr.InvalidArgument, "name, credits, priceAmount and currency are required")
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
	for name, v := range map[string]*int64{"credits": f.Credits, "priceAmount": f.PriceAmount} {
		if v != nil && (*v <= 0 || *v > ledger.MaxAmount) {
			return apperr.Invalid(name, "%s must be a positive whole number up to %d", name, ledger.MaxAmount)
		}
	}
	if f.Currency != nil && !currencyCode.MatchString(*f.Currency) {
		return apperr.Invalid("currency", "currency must be a lower-case ISO 4217 code such as usd")
	}
	return nil
}

// CreatePackage puts a new credit pack on sale and audits it.
func (s *Service) CreatePackage(ctx context.Context, a Admin, f PackageFields) (*ent.CreditPackage, *ent.AdminAction, error) {
	if f.Currency != nil {
		lower := strings.ToLower(*f.Currency)
		f.Currency = &lower
	}
	if err := f.Validate(true); err != nil {
		return nil, nil, err
	}
	var pkg *ent.CreditPackage
	var action *ent.AdminAction
	err := s.ledger.Within(ctx, func(ctx context.Context, t *ledger.Tx) error {
		var err error
		pkg, err = t.Ent().CreditPackage.Create().
			SetName(*f.Name).
			SetNillableDescription(f.Description).
			SetCredits(*f.Credits).
			SetPriceAmount(*f.PriceAmount).
			SetCurrency(*f.Currency).
			SetNillableStripePriceID(f.StripePriceID).
			SetNillableSortOrder(f.SortOrder).
			SetNillableActive(f.Active).
			Save(ctx)
		if err != nil {
			return packageError(err)
		}
		action, err = a.write(ctx, t.Ent(), record{action: ActionCreatePackage, targetID: pkg.ID, reason: "created " + pkg.Name})
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return pkg.Unwrap(), action.Unwrap(), nil
}

// UpdatePackage changes a credit pack and audits it.
func (s *Service) UpdatePackage(ctx context.Context, a Admin, id string, f PackageFields) (*ent.CreditPackage, *ent.AdminAction, error) {
	if f.Currency != nil {
		lower := strings.ToLower(*f.Currency)
		f.Currency = &lower
	}
	if err := f.Validate(false); err != nil {
		return nil, nil, err
	}
	var pkg *ent.CreditPackage
	var action *ent.AdminAction
	err := s.ledger.Within(ctx, func(ctx context.Context, t *ledger.Tx) error {
		update := t.Ent().CreditPackage.UpdateOneID(id).
			SetNillableName(f.Name).
			SetNillableDescription(f.Description).
			SetNillableCredits(f.Credits).
			SetNillablePriceAmount(f.PriceAmount).
			SetNillableCurrency(f.Currency).
			SetNillableStripePriceID(f.StripePriceID).
			SetNillableSortOrder(f.SortOrder).
			SetNillableActive(f.Active)
		var err error
		pkg, err = update.Save(ctx)
		if ent.IsNotFound(err) {
			return apperr.New(apperr.NotFound, "no credit pack with id %q", id)
		}
		if err != nil {
			return packageError(err)
		}
		action, err = a.write(ctx, t.Ent(), record{action: ActionUpdatePackage, targetID: pkg.ID, reason: "updated " + pkg.Name})
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return pkg.Unwrap(), action.Unwrap(), nil
}

func packageError(err error) error {
	switch {
	case ent.IsConstraintError(err):
		return apperr.New(apperr.Conflict, "a credit pack with this name exists already")
	case ent.IsValidationError(err):
		return apperr.New(apperr.InvalidArgument, "invalid credit pack: %s", strings.TrimPrefix(err.Error(), "ent: "))
	}
	return fmt.Errorf("admin: writing credit pack: %w", err)
}

// RefundAudit writes the audit record of a refund made in Stripe, in the
// transaction that claws its credits back (see payments.ApplyRefund).
func (a Admin) RefundAudit(ctx context.Context, tx *ent.Tx, p *ent.Payment, amount int64, reason, refundID string) (*ent.AdminAction, error) {
	return a.write(ctx, tx, record{
		action: ActionRefundPayment, targetID: p.ID, targetUserID: &p.UserID,
		amount: &amount, reason: reason + " (Stripe refund " + refundID + ")",
	})
}

// FindRefundAudit returns the audit record of a refund already applied, for
// a retried request.
func (s *Service) FindRefundAudit(ctx context.Context, client *ent.Client, paymentID, refundID string) (*ent.AdminAction, error) {
	action, err := client.AdminAction.Query().Where(
		adminaction.Action(ActionRefundPayment),
		adminaction.TargetID(paymentID),
		adminaction.ReasonContains("(Stripe refund "+refundID+")"),
	).First(ctx)
	if err != nil {
		return nil, fmt.Errorf("admin: reading the audit record of refund %s: %w", refundID, err)
	}
	return action, nil
}
