package payments

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/stripe/stripe-go/v76"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/idempotency"
	"github.com/tally-billing/tally/internal/ledger"
)

// maxRefundReason is Stripe's limit on a metadata value, where the reason
// goes.
const maxRefundReason = 500

// CreateRefund asks Stripe to refund amount (minor units) of a succeeded or
// partially refunded payment. It changes nothing in Tally: the
// charge.refunded event that follows records the refund and claws the
// credits back, once, whoever started the refund (here or in Stripe's
// dashboard).
//
// reason is free text kept in the refund's metadata; when it is one of
// Stripe's reasons (duplicate, fraudulent, requested_by_customer) it is also
// sent as the refund's reason.
//
// The Stripe idempotency key derives from the payment and idempotencyKey, so
// a retried request gets the same refund from Stripe, and the key with
// another amount is IDEMPOTENCY_KEY_REUSED (Stripe keeps keys for 24 hours;
// after that, Stripe's own check that refunds never exceed the charge is what
// stops a late duplicate from refunding more than was paid). The amount is
// checked against what Tally knows was refunded; Stripe refuses a refund that
// refunds in flight would push past the charge, as INVALID_ARGUMENT.
func (s *Service) CreateRefund(ctx context.Context, paymentID string, amount int64, reason, idempotencyKey string) (*stripe.Refund, error) {
	if s.stripe == nil {
		return nil, errStripeDisabled()
	}
	req := RefundRequest{PaymentID: paymentID, Amount: &amount, Reason: reason, IdempotencyKey: idempotencyKey}
	if err := apperr.First(idempotency.ValidateKey(idempotencyKey), req.Validate()); err != nil {
		return nil, err
	}

	p, err := s.db.Ent.Payment.Get(ctx, paymentID)
	if ent.IsNotFound(err) {
		return nil, apperr.New(apperr.NotFound, "no payment with id %q", paymentID)
	}
	if err != nil {
		return nil, fmt.Errorf("payments: reading payment %s: %w", paymentID, err)
	}
	if p.Status != payment.StatusSucceeded && p.Status != payment.StatusPartiallyRefunded {
		return nil, apperr.New(apperr.InvalidArgument,
			"payment %s is %s; only succeeded or partially refunded payments can be refunded", p.ID, p.Status)
	}
	if p.StripePaymentIntentID == nil || *p.StripePaymentIntentID == "" {
		return nil, apperr.New(apperr.InvalidArgument, "payment %s has no Stripe PaymentIntent to refund", p.ID)
	}
	if left := p.Amount - p.AmountRefunded; amount > left {
		return nil, apperr.Invalid("amount",
			"the refund amount %d is more than the %d %s left to refund on payment %s", amount, left, p.Currency, p.ID)
	}

	params := &stripe.RefundParams{
		PaymentIntent: p.StripePaymentIntentID,
		Amount:        stripe.Int64(amount),
		Metadata:      map[string]string{"payment_id": p.ID, "user_id": p.UserID},
	}
	if reason != "" {
		params.Metadata["reason"] = reason
	}
	switch stripe.RefundReason(reason) {
	case stripe.RefundReasonDuplicate, stripe.RefundReasonFraudulent, stripe.RefundReasonRequestedByCustomer:
		params.Reason = stripe.String(reason)
	}
	params.Context = ctx
	params.SetIdempotencyKey(refundIdempotencyKey(p.ID, idempotencyKey))
	r, err := s.stripe.Refunds.New(params)
	if err != nil {
		return nil, stripeError("refunding payment "+p.ID, err)
	}
	return r, nil
}

// refundIdempotencyKey is the Stripe idempotency key of a refund request.
// Stripe takes at most 255 characters; a caller's key too long to fit is
// replaced by its hash.
func refundIdempotencyKey(paymentID, key string) string {
	k := "tally-refund-" + paymentID + "-" + key
	if len(k) <= 255 {
		return k
	}
	sum := sha256.Sum256([]byte(key))
	return "tally-refund-" + paymentID + "-sha256-" + hex.EncodeToString(sum[:])
}

// RefundRequest is an admin's refund of a payment.
type RefundRequest struct {
	PaymentID string
	// Amount in minor units; nil refunds everything not yet refunded.
	Amount         *int64
	Reason         string
	IdempotencyKey string
}

// Validate checks a refund; what is left to refund is the payment's to say.
func (r RefundRequest) Validate() error {
	if r.PaymentID == "" {
		return apperr.Invalid("paymentId", "paymentId is required")
	}
	if r.Amount != nil && (*r.Amount <= 0 || *r.Amount > ledger.MaxAmount) {
		return apperr.Invalid("amount", "the refund amount must be a positive whole number of minor units, not %d", *r.Amount)
	}
	return ledger.ValidateText("reason", r.Reason, maxRefundReason)
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
	if err := req.Validate(); err != nil {
		return nil, err
	}
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
	if found, err := idempotency.Find(ctx, s.db.Ent, key, &prior); found || err != nil {
		if err != nil {
			return nil, err
		}
		return &RefundResult{RefundID: prior.RefundID, Payment: p, Replayed: true}, nil
	}

	amount := p.Amount - p.AmountRefunded
	if req.Amount != nil {
		amount = *req.Amount
	} else if amount <= 0 {
		return nil, apperr.Invalid("paymentId", "payment %s is %s; nothing is left to refund", p.ID, p.Status)
	}
	refund, err := s.CreateRefund(ctx, p.ID, amount, req.Reason, req.IdempotencyKey)
	if err != nil {
		return nil, err
	}
	outcome, err := s.ApplyRefund(ctx, p, refund, amount, func(ctx context.Context, tx *ent.Tx) error {
		// A concurrent request with the key and this request got the same
		// refund from Stripe (its key derives from ours) and applied it
		// first: the refund's event is then a duplicate and this does not
		// run. One with the key and another request (another payment) may
		// have recorded the key since it was looked up: this attempt's
		// store then fails, and the retry finds that record here and
		// answers IDEMPOTENCY_KEY_REUSED rather than retrying until
		// CONFLICT (the refund Stripe made is applied by its own event).
		var recorded refundRecord
		if found, err := idempotency.Find(ctx, tx.Client(), key, &recorded); found || err != nil {
			return err
		}
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

// ApplyRefund claws back, at once, the credits of a refund Tally just made
// in Stripe, as the charge.refunded event will (with the cumulative amount
// refunded as far as Tally knows). The event's own delivery then finds the
// credits clawed back already: refunds are applied by cumulative total, so
// whichever comes first, the credits go exactly once. audit runs in the same
// transaction, unless this refund was applied before (a retried request);
// the outcome is then OutcomeDuplicate.
func (s *Service) ApplyRefund(ctx context.Context, p *ent.Payment, refund *stripe.Refund, amount int64,
	audit func(context.Context, *ent.Tx) error,
) (string, error) {
	chargeID := unknownChargePrefix + p.ID
	if p.StripeChargeID != nil {
		chargeID = *p.StripeChargeID
	} else if refund.Charge != nil && refund.Charge.ID != "" {
		chargeID = refund.Charge.ID
	}
	intent := ""
	if p.StripePaymentIntentID != nil {
		intent = *p.StripePaymentIntentID
	}
	ev, payload, err := s.syntheticEvent("refund_"+refund.ID, "charge.refunded", map[string]any{
		"id": chargeID, "object": "charge", "amount": p.Amount, "currency": p.Currency,
		"amount_refunded": min(p.AmountRefunded+amount, p.Amount), "payment_intent": intent,
	})
	if err != nil {
		return "", err
	}
	return s.handle(ctx, ev, payload, audit)
}

// unknownChargePrefix names the charge of a refund Stripe answered without
// one: the charge of the payment's next refund event replaces it.
const unknownChargePrefix = "ch_unknown_"
