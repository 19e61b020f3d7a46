package payments

import (
	"context"
	"fmt"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/idempotency"
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
	key, err := idempotency.NewRequest(scope, req.IdempotencyKey, "refund", req)
	if err != nil {
		return nil, err
	}
	p, err := s.db.Ent.Payment.Get(ctx, req.PaymentID)
	if ent.IsNotFound(err) {
		return nil, apperr.New(apperr.NotFound, "no payment with id %q", req.PaymentID)
	}
	if err != nil {
		return nil, fmt.Errorf("payments: reading payment %s: %w", req.PaymentID, err)
	}
	var prior refundRecord
	if found, err := idempotency.Find(ctx, s.db.Ent.IdempotencyKey, key, &prior); found || err != nil {
		if err != nil {
			return nil, err
		}
		return &RefundResult{RefundID: prior.RefundID, Payment: p, Replayed: true}, nil
	}

	amount := req.Amount
	if amount == 0 {
		amount = p.Amount - p.AmountRefunded
	}
	refund, err := s.CreateRefund(ctx, p.ID, amount, req.Reason, req.IdempotencyKey)
	if err != nil {
		return nil, err
	}
	outcome, err := s.ApplyRefund(ctx, p, refund, amount, func(ctx context.Context, tx *ent.Tx) error {
		// A concurrent request with the key got the same refund from
		// Stripe (its key derives from ours) and applied it first: the
		// refund's event is then a duplicate and this does not run.
		if err := idempotency.Store(ctx, tx.IdempotencyKey, s.now(), idempotency.Entry{Request: key, Result: refundRecord{RefundID: refund.ID}}); err != nil {
			return err
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
