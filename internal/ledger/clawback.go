package ledger

import (
	"context"
	"fmt"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/creditlot"
	"github.com/tally-billing/tally/ent/credittransaction"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/internal/apperr"
)

// ClawbackRequest takes back the credits of a refunded or lost-dispute payment.
type ClawbackRequest struct {
	PaymentID string
	Amount    int64
	// Dispute marks a lost dispute; otherwise it is a refund.
	Dispute        bool
	Reason         string
	IdempotencyKey string
}

// Clawback takes a payment's credits back in a transaction of its own.
func (s *Service) Clawback(ctx context.Context, actor Actor, req ClawbackRequest) (*Result, error) {
	return s.do(ctx, "clawback", actor, func(ctx context.Context, t *Tx) (*Result, error) { return t.Clawback(ctx, actor, req) })
}

// Clawback removes Amount credits because their payment was refunded or
// lost in a dispute: first what the payment's lot has on hold, then what it
// still holds, then other unspent credits; what is left becomes a debt (a
// negative balance). The total clawed back from one payment never exceeds
// the credits it bought.
func (t *Tx) Clawback(ctx context.Context, actor Actor, req ClawbackRequest) (*Result, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	p, err := t.payment(ctx, req.PaymentID)
	if err != nil {
		return nil, err
	}
	t.noRecharge(p.UserID)
	return t.once(ctx, actor, req.IdempotencyKey, "clawback", req, p.UserID, lookupFirst, func(u *ent.User) (*Result, error) {
		lot, err := t.paymentLot(ctx, p)
		if err != nil {
			return nil, err
		}
		byRefunds, byDisputes, err := t.ClawedBack(ctx, p.ID)
		if err != nil {
			return nil, err
		}
		before := byRefunds + byDisputes
		if req.Amount > lot.Original-before {
			return nil, apperr.New(apperr.InvalidArgument,
				"cannot claw back %d credits: the payment bought %d and %d were already clawed back",
				req.Amount, lot.Original, before)
		}
		kind := credittransaction.KindRefundClawback
		if req.Dispute {
			kind = credittransaction.KindDisputeClawback
		}
		m := newMovement(kind, req.Amount)
		m.reason, m.paymentID = req.Reason, &p.ID
		left := req.Amount
		if fromHeld := min(lot.Held, left); fromHeld > 0 {
			m.post(AccountHeld, false, &lot.ID, -fromHeld)
			if err := t.setLot(ctx, lot, lot.Remaining, lot.Held-fromHeld); err != nil {
				return nil, err
			}
			left -= fromHeld
		}
		others, err := t.lotsInSpendOrder(ctx, u.ID, false)
		if err != nil {
			return nil, err
		}
		order := []*ent.CreditLot{lot}
		for _, l := range others {
			if l.ID != lot.ID {
				order = append(order, l)
			}
		}
		taken := t.drawLots(u, m, order, left)
		if debt := left - taken; debt > 0 {
			m.post(UserAccount(u.ID), true, nil, -debt)
		}
		m.post(AccountClawback, false, nil, req.Amount)
		txn, err := t.write(ctx, actor, req.IdempotencyKey, u, m)
		if err != nil {
			return nil, err
		}
		return &Result{Transaction: txn, Amount: req.Amount}, nil
	})
}

// PaymentRequest names a payment for a dispute hold or release.
type PaymentRequest struct {
	PaymentID      string
	Reason         string
	IdempotencyKey string
}

// HoldPayment puts a disputed payment's unspent credits out of reach, in a
// transaction of its own.
func (s *Service) HoldPayment(ctx context.Context, actor Actor, req PaymentRequest) (*Result, error) {
	return s.do(ctx, "hold_payment", actor, func(ctx context.Context, t *Tx) (*Result, error) { return t.HoldPayment(ctx, actor, req) })
}

// HoldPayment moves what the payment's lot still holds to system:held. The
// credits leave the balance until ReleasePayment (dispute won) or Clawback
// (dispute lost).
func (t *Tx) HoldPayment(ctx context.Context, actor Actor, req PaymentRequest) (*Result, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	p, err := t.payment(ctx, req.PaymentID)
	if err != nil {
		return nil, err
	}
	t.noRecharge(p.UserID)
	return t.once(ctx, actor, req.IdempotencyKey, "hold_payment", req, p.UserID, lookupFirst, func(u *ent.User) (*Result, error) {
		lot, err := t.paymentLot(ctx, p)
		if err != nil {
			return nil, err
		}
		amount := lot.Remaining
		m := newMovement(credittransaction.KindDisputeHold, amount)
		m.reason, m.paymentID = req.Reason, &p.ID
		m.post(UserAccount(u.ID), true, &lot.ID, -amount)
		m.post(AccountHeld, false, &lot.ID, amount)
		if err := t.setLot(ctx, lot, 0, lot.Held+amount); err != nil {
			return nil, err
		}
		txn, err := t.write(ctx, actor, req.IdempotencyKey, u, m)
		if err != nil {
			return nil, err
		}
		return &Result{Transaction: txn, Amount: amount}, nil
	})
}

// ReleasePayment returns a disputed payment's held credits, in a
// transaction of its own.
func (s *Service) ReleasePayment(ctx context.Context, actor Actor, req PaymentRequest) (*Result, error) {
	return s.do(ctx, "release_payment", actor, func(ctx context.Context, t *Tx) (*Result, error) { return t.ReleasePayment(ctx, actor, req) })
}

// ReleasePayment moves the payment's held credits back to its lot (repaying
// any debt first).
func (t *Tx) ReleasePayment(ctx context.Context, actor Actor, req PaymentRequest) (*Result, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	p, err := t.payment(ctx, req.PaymentID)
	if err != nil {
		return nil, err
	}
	return t.once(ctx, actor, req.IdempotencyKey, "release_payment", req, p.UserID, lookupFirst, func(u *ent.User) (*Result, error) {
		lot, err := t.paymentLot(ctx, p)
		if err != nil {
			return nil, err
		}
		amount := lot.Held
		m := newMovement(credittransaction.KindDisputeRelease, amount)
		m.reason, m.paymentID = req.Reason, &p.ID
		if amount > 0 {
			m.post(AccountHeld, false, &lot.ID, -amount)
			if err := t.creditLot(ctx, u, m, lot, amount, true); err != nil {
				return nil, err
			}
		}
		txn, err := t.write(ctx, actor, req.IdempotencyKey, u, m)
		if err != nil {
			return nil, err
		}
		return &Result{Transaction: txn, Amount: amount}, nil
	})
}

func (t *Tx) payment(ctx context.Context, id string) (*ent.Payment, error) {
	p, err := t.ent.Payment.Query().Where(payment.ID(id)).Only(ctx)
	if ent.IsNotFound(err) {
		return nil, apperr.New(apperr.NotFound, "no payment with id %q", id)
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: reading payment %s: %w", id, err)
	}
	return p, nil
}

// paymentLot is the lot a payment's credits entered through.
func (t *Tx) paymentLot(ctx context.Context, p *ent.Payment) (*ent.CreditLot, error) {
	lot, err := t.ent.CreditLot.Query().Where(creditlot.PaymentID(p.ID)).Only(ctx)
	if ent.IsNotFound(err) {
		return nil, apperr.New(apperr.Conflict, "payment %s has not granted credits", p.ID)
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: reading the lot of payment %s: %w", p.ID, err)
	}
	return lot, nil
}

// ClawedBack sums what was already clawed back from a payment, by refunds
// and by lost disputes.
func (t *Tx) ClawedBack(ctx context.Context, paymentID string) (byRefunds, byDisputes int64, err error) {
	var sums []struct {
		Kind credittransaction.Kind `json:"kind"`
		Sum  int64                  `json:"sum"`
	}
	err = t.ent.CreditTransaction.Query().
		Where(credittransaction.PaymentID(paymentID),
			credittransaction.KindIn(credittransaction.KindRefundClawback, credittransaction.KindDisputeClawback)).
		GroupBy(credittransaction.FieldKind).
		Aggregate(ent.Sum(credittransaction.FieldAmount)).
		Scan(ctx, &sums)
	if err != nil {
		return 0, 0, fmt.Errorf("ledger: summing clawbacks of %s: %w", paymentID, err)
	}
	for _, s := range sums {
		if s.Kind == credittransaction.KindRefundClawback {
			byRefunds = s.Sum
		} else {
			byDisputes = s.Sum
		}
	}
	return byRefunds, byDisputes, nil
}
