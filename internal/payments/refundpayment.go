package payments

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/idempotencykey"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/ledger"
)

// RefundRequest is an admin's refund of a payment.
type RefundRequest struct {
	PaymentID string
	// Amount in minor units; 0 refunds everything not yet refunded.
	Amount         int64
	Reason         string
	IdempotencyKey string
}

// RefundResult is what a refund did.
type RefundResult struct {
	RefundID string
	Payment  *ent.Payment
	// Replayed is true when an earlier request with the key made the refund.
	Replayed bool
}

type refundRecord struct {
	RefundID string `json:"refund_id"`
}

// RefundPayment refunds a payment in Stripe and claws its credits back at
// once (see ApplyRefund), running audit in the same transaction. Tally keeps
// its own idempotency record (scope, key) for it, written in that
// transaction too: Stripe remembers idempotency keys for 24 hours only, and a
// retry after that must not refund twice.
func (s *Service) RefundPayment(ctx context.Context, scope string, req RefundRequest,
	audit func(ctx context.Context, tx *ent.Tx, p *ent.Payment, amount int64, refundID string) error,
) (*RefundResult, error) {
	if err := ledger.ValidateIdempotencyKey(req.IdempotencyKey); err != nil {
		return nil, err
	}
	p, err := s.db.Ent.Payment.Get(ctx, req.PaymentID)
	if ent.IsNotFound(err) {
		return nil, apperr.New(apperr.NotFound, "no payment with id %q", req.PaymentID)
	}
	if err != nil {
		return nil, fmt.Errorf("payments: reading payment %s: %w", req.PaymentID, err)
	}
	sum := sha256.Sum256(fmt.Appendf(nil, "refund\x00%s\x00%d\x00%s", req.PaymentID, req.Amount, req.Reason))
	fingerprint := hex.EncodeToString(sum[:])
	prior, err := s.db.Ent.IdempotencyKey.Query().
		Where(idempotencykey.Scope(scope), idempotencykey.Key(req.IdempotencyKey)).Only(ctx)
	switch {
	case err == nil && prior.Fingerprint != fingerprint:
		return nil, apperr.New(apperr.IdempotencyKeyReused, "idempotency key %q was already used for a different request", req.IdempotencyKey)
	case err == nil:
		var rec refundRecord
		if err := json.Unmarshal(prior.Result, &rec); err != nil {
			return nil, fmt.Errorf("payments: decoding the result of key %q: %w", req.IdempotencyKey, err)
		}
		return &RefundResult{RefundID: rec.RefundID, Payment: p, Replayed: true}, nil
	case !ent.IsNotFound(err):
		return nil, fmt.Errorf("payments: reading idempotency key: %w", err)
	}

	amount := req.Amount
	if amount == 0 {
		amount = p.Amount - p.AmountRefunded
	}
	refund, err := s.CreateRefund(ctx, p.ID, amount, req.Reason, req.IdempotencyKey)
	if err != nil {
		return nil, err
	}
	result, err := json.Marshal(refundRecord{RefundID: refund.ID})
	if err != nil {
		return nil, fmt.Errorf("payments: encoding refund result: %w", err)
	}
	outcome, err := s.ApplyRefund(ctx, p, refund, amount, func(ctx context.Context, tx *ent.Tx) error {
		err := tx.IdempotencyKey.Create().
			SetScope(scope).SetKey(req.IdempotencyKey).SetFingerprint(fingerprint).SetResult(result).
			Exec(ctx)
		if ent.IsConstraintError(err) {
			return fmt.Errorf("payments: refund key %q taken concurrently: %w", req.IdempotencyKey, ledger.ErrRetry)
		}
		if err != nil {
			return fmt.Errorf("payments: recording refund key: %w", err)
		}
		return audit(ctx, tx, p, amount, refund.ID)
	})
	if err != nil {
		return nil, err
	}
	if p, err = s.db.Ent.Payment.Get(ctx, p.ID); err != nil {
		return nil, fmt.Errorf("payments: reading payment %s: %w", p.ID, err)
	}
	return &RefundResult{RefundID: refund.ID, Payment: p, Replayed: outcome == OutcomeDuplicate}, nil
}
