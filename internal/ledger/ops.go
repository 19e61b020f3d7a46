package ledger

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"entgo.io/ent/dialect/sql"
	"go.opentelemetry.io/otel/trace"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/creditlot"
	"github.com/tally-billing/tally/ent/creditreservation"
	"github.com/tally-billing/tally/ent/credittransaction"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/pulid"
)

// GrantRequest adds credits to a user as a new lot.
type GrantRequest struct {
	UserID string
	Amount int64
	// Purchase grants come from a payment (PaymentID required); the others
	// are admin or promotional grants.
	Purchase  bool
	PaymentID *string
	ExpiresAt *time.Time
	// Priority orders spending: lower is spent first.
	Priority       int
	Reason         string
	Metadata       map[string]string
	IdempotencyKey string
}

// Grant adds credits in a transaction of its own.
func (s *Service) Grant(ctx context.Context, actor Actor, req GrantRequest) (*Result, error) {
	return s.do(ctx, "grant", actor, func(ctx context.Context, t *Tx) (*Result, error) { return t.Grant(ctx, actor, req) })
}

// Grant adds credits: a new lot, and postings from the purchases or grants
// account to the user's. A user in debt repays it from the new credits first.
func (t *Tx) Grant(ctx context.Context, actor Actor, req GrantRequest) (*Result, error) {
	if err := validateGrant(req); err != nil {
		return nil, err
	}
	return t.onceOptimistic(ctx, actor, req.IdempotencyKey, "grant", req, req.UserID, func(u *ent.User) (*Result, error) {
		m, lot, err := t.grantMovement(u, req)
		if err != nil {
			return nil, err
		}
		// The transaction, then the lot (which names it), then the postings
		// (which name the lot).
		txn, err := t.insertTransaction(ctx, actor, req.IdempotencyKey, u, m)
		if err != nil {
			return nil, err
		}
		if err := lot.Exec(ctx); err != nil {
			return nil, fmt.Errorf("ledger: creating lot: %w", err)
		}
		if err := t.writePostings(ctx, []keyed{{actor: actor, key: req.IdempotencyKey, u: u, m: m}}, []*ent.CreditTransaction{txn}); err != nil {
			return nil, err
		}
		return &Result{Transaction: txn, Amount: req.Amount}, nil
	})
}

// GrantMany makes several grants, each to a different user, in this
// transaction, with one statement per table (the payments package applies a
// batch of purchase webhooks with it). It is all or nothing: any refusal,
// or a key that already has a record, fails it, and the caller then makes
// the grants one by one with Grant, which replays known keys.
func (t *Tx) GrantMany(ctx context.Context, actor Actor, reqs []GrantRequest) ([]*Result, error) {
	if err := actor.validate(); err != nil {
		return nil, err
	}
	ids := make([]string, len(reqs))
	records := make([]remembered, len(reqs))
	for i, req := range reqs {
		if err := validateGrant(req); err != nil {
			return nil, err
		}
		if err := ValidateIdempotencyKey(req.IdempotencyKey); err != nil {
			return nil, err
		}
		fp, err := fingerprint("grant", req)
		if err != nil {
			return nil, err
		}
		ids[i] = req.UserID
		records[i] = remembered{actor: actor, key: req.IdempotencyKey, fp: fp}
	}
	if len(slices.Compact(slices.Sorted(slices.Values(ids)))) != len(ids) {
		// credit reads the balance each grant starts from: two grants of one
		// user would both start from the same one.
		return nil, errors.New("ledger: GrantMany takes one grant per user")
	}
	users, err := t.lockUsers(ctx, ids)
	if err != nil {
		return nil, err
	}
	if t.attempt > 1 {
		// The first attempt found a key taken: let Grant replay it.
		if err := t.noKnownKeys(ctx, records); err != nil {
			return nil, err
		}
	}
	ms := make([]keyed, len(reqs))
	lots := make([]*ent.CreditLotCreate, len(reqs))
	for i, req := range reqs {
		u := users[req.UserID]
		if u == nil {
			return nil, apperr.New(apperr.NotFound, "no user with id %q", req.UserID)
		}
		m, lot, err := t.grantMovement(u, req)
		if err != nil {
			return nil, err
		}
		ms[i], lots[i] = keyed{actor: actor, key: req.IdempotencyKey, u: u, m: m}, lot
	}
	if err := t.flushLots(ctx); err != nil {
		return nil, err
	}
	txns, err := t.insertTransactions(ctx, ms)
	if err != nil {
		return nil, err
	}
	if err := t.ent.CreditLot.CreateBulk(lots...).Exec(ctx); err != nil {
		return nil, fmt.Errorf("ledger: creating %d lots: %w", len(lots), err)
	}
	if err := t.writePostings(ctx, ms, txns); err != nil {
		return nil, err
	}
	results := make([]*Result, len(reqs))
	for i, req := range reqs {
		u := users[req.UserID]
		results[i] = &Result{Transaction: txns[i], Amount: req.Amount, Balance: u.CreditsBalance, User: u}
		records[i].res = results[i]
	}
	if err := t.rememberMany(ctx, records); err != nil {
		return nil, err
	}
	return results, nil
}

func validateGrant(req GrantRequest) error {
	if err := validateAmount("amount", req.Amount); err != nil {
		return err
	}
	if err := ValidateText("reason", req.Reason, 1000); err != nil {
		return err
	}
	if err := validateMetadata(req.Metadata); err != nil {
		return err
	}
	if req.Purchase != (req.PaymentID != nil) {
		return fmt.Errorf("ledger: a purchase grant needs a payment, and only a purchase has one")
	}
	return nil
}

// grantMovement is a grant's movement and its new lot, not yet written.
func (t *Tx) grantMovement(u *ent.User, req GrantRequest) (*movement, *ent.CreditLotCreate, error) {
	// Checked after the key: a retry of a grant that succeeded returns its
	// result even once its expiry has passed.
	if req.ExpiresAt != nil && !req.ExpiresAt.After(t.now) {
		return nil, nil, apperr.New(apperr.InvalidArgument, "expiresAt must be in the future")
	}
	kind, source, from := credittransaction.KindGrant, creditlot.SourceGrant, AccountGrants
	if req.Purchase {
		kind, source, from = credittransaction.KindPurchase, creditlot.SourcePurchase, AccountPurchases
	}
	m := newMovement(kind, req.Amount)
	m.reason, m.metadata, m.paymentID = req.Reason, req.Metadata, req.PaymentID
	lotID := pulid.New("lot")
	m.post(from, false, &lotID, -req.Amount)
	kept, err := credit(u, m, lotID, req.Amount)
	if err != nil {
		return nil, nil, err
	}
	lot := t.ent.CreditLot.Create().
		SetID(lotID).
		SetUserID(u.ID).
		SetSource(source).
		SetOriginal(req.Amount).
		SetRemaining(kept).
		SetNillableExpiresAt(utc(req.ExpiresAt)).
		SetPriority(req.Priority).
		SetNillablePaymentID(req.PaymentID).
		SetTransactionID(m.id).
		SetCreatedAt(t.now).
		SetUpdatedAt(t.now)
	return m, lot, nil
}

// SpendRequest uses credits.
type SpendRequest struct {
	UserID         string
	Amount         int64
	Reason         string
	Metadata       map[string]string
	IdempotencyKey string
}

// Spend uses credits in a transaction of its own. Concurrent spends are
// coalesced (see batch.Batcher): each keeps its own transaction, postings,
// idempotency record and refusal; a batch shares the locks (taken in id
// order, so batches never deadlock), the reads, one statement per table,
// and the commit.
func (s *Service) Spend(ctx context.Context, actor Actor, req SpendRequest) (_ *Result, err error) {
	ctx, span := s.startOp(ctx, "spend", actor.Kind)
	defer func() { endSpan(span, err) }()
	call, err := newSpendCall(actor, req)
	if err != nil {
		return nil, err
	}
	call.parent = trace.SpanContextFromContext(ctx)
	s.spends.Do(call)
	return call.res, call.err
}

// Spend takes credits from the user's lots in spend order. It refuses, and
// changes nothing, when the user is frozen, in debt, or has fewer available
// credits (balance minus open reservations) than the amount.
func (t *Tx) Spend(ctx context.Context, actor Actor, req SpendRequest) (*Result, error) {
	call, err := newSpendCall(actor, req)
	if err != nil {
		return nil, err
	}
	if err := t.spendMany(ctx, []*spendCall{call}); err != nil {
		return nil, err
	}
	return call.res, call.err
}

// spendFromLots checks that the user may spend amount (leaving aside the
// reservation being captured, if any) and draws it from the lots.
func (t *Tx) spendFromLots(ctx context.Context, u *ent.User, m *movement, amount int64, capturing string) error {
	if err := spendable(u); err != nil {
		return err
	}
	available, lots, err := t.available(ctx, u, capturing)
	if err != nil {
		return err
	}
	if amount > available {
		return apperr.New(apperr.InsufficientCredits, "%d credits needed, %d available", amount, available)
	}
	t.drawLots(u, m, lots, amount)
	m.post(AccountSpent, false, nil, amount)
	return nil
}

// spendable refuses a spend from a frozen account or one in debt.
func spendable(u *ent.User) error {
	if u.Status == user.StatusFrozen {
		return apperr.New(apperr.AccountFrozen, "the account is frozen")
	}
	if u.CreditsBalance < 0 {
		return apperr.New(apperr.InsufficientCredits, "the account has a debt of %d credits to repay first", -u.CreditsBalance)
	}
	return nil
}

// available is what the user may spend or reserve now: the balance less
// open reservations (leaving out the one being captured, if any), and never
// more than the unexpired lots hold. It returns those lots in spend order.
func (t *Tx) available(ctx context.Context, u *ent.User, except string) (int64, []*ent.CreditLot, error) {
	lots, reserved, err := t.lotsAndReserved(ctx, []string{u.ID}, except)
	if err != nil {
		return 0, nil, err
	}
	return availableOf(u.CreditsBalance, reserved[u.ID], sumRemaining(lots[u.ID])), lots[u.ID], nil
}

// lotsAndReserved reads the users' unexpired lots in spend order and, in
// the same statement (one round trip fewer under the accounts' locks), the
// sum of each user's open reservations (leaving out one). A user without
// lots has no row to carry the sum; it has nothing available anyway.
func (t *Tx) lotsAndReserved(ctx context.Context, userIDs []string, except string) (map[string][]*ent.CreditLot, map[string]int64, error) {
	const column = "reserved_sum"
	lots := map[string][]*ent.CreditLot{}
	reserved := map[string]int64{}
	if len(userIDs) == 0 {
		return lots, reserved, nil
	}
	found, err := t.ent.CreditLot.Query().
		Where(creditlot.UserIDIn(userIDs...), creditlot.RemainingGT(0),
			creditlot.Or(creditlot.ExpiresAtIsNil(), creditlot.ExpiresAtGT(t.now))).
		Order(spendOrder...).
		Modify(func(s *sql.Selector) {
			r := sql.Table(creditreservation.Table)
			sum := sql.Select("CAST(COALESCE(SUM(" + r.C(creditreservation.FieldAmount) + "), 0) AS BIGINT)").
				From(r).
				Where(sql.And(
					sql.ColumnsEQ(r.C(creditreservation.FieldUserID), s.C(creditlot.FieldUserID)),
					sql.EQ(r.C(creditreservation.FieldStatus), creditreservation.StatusOpen),
					sql.GT(r.C(creditreservation.FieldExpiresAt), t.now),
				))
			if except != "" {
				sum.Where(sql.NEQ(r.C(creditreservation.FieldID), except))
			}
			s.AppendSelectExprAs(sum, column)
		}).
		All(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("ledger: reading the lots of %d users: %w", len(userIDs), err)
	}
	for _, l := range found {
		if _, ok := reserved[l.UserID]; !ok {
			v, err := l.Value(column)
			if err != nil {
				return nil, nil, fmt.Errorf("ledger: reading the reservations of %s: %w", l.UserID, err)
			}
			sum, ok := v.(int64)
			if !ok {
				return nil, nil, fmt.Errorf("ledger: the reservations of %s sum to a %T", l.UserID, v)
			}
			reserved[l.UserID] = sum
		}
		lots[l.UserID] = append(lots[l.UserID], l)
	}
	return lots, reserved, nil
}

// availableOf is what a user may spend: the balance less reservations, and
// never more than the unexpired lots hold.
func availableOf(balance, reserved, spendable int64) int64 {
	return max(0, min(balance-reserved, spendable))
}

// RevokeRequest takes credits back (admins).
type RevokeRequest struct {
	UserID string
	// Amount is the most to take: Revoke takes what the lots hold, up to it.
	Amount int64
	// LotIDs, when given, are the lots to take from, in this order;
	// otherwise lots are taken in spend order.
	LotIDs         []string
	Reason         string
	IdempotencyKey string
}

// Revoke takes credits back in a transaction of its own.
func (s *Service) Revoke(ctx context.Context, actor Actor, req RevokeRequest) (*Result, error) {
	return s.do(ctx, "revoke", actor, func(ctx context.Context, t *Tx) (*Result, error) { return t.Revoke(ctx, actor, req) })
}

// Revoke removes up to Amount unspent credits from the user's lots. It never
// creates a debt; Result.Amount says how much it took.
func (t *Tx) Revoke(ctx context.Context, actor Actor, req RevokeRequest) (*Result, error) {
	if err := validateAmount("amount", req.Amount); err != nil {
		return nil, err
	}
	if err := ValidateText("reason", req.Reason, 1000); err != nil {
		return nil, err
	}
	return t.once(ctx, actor, req.IdempotencyKey, "revoke", req, req.UserID, func(u *ent.User) (*Result, error) {
		var lots []*ent.CreditLot
		var err error
		if len(req.LotIDs) > 0 {
			lots, err = t.chosenLots(ctx, u.ID, req.LotIDs)
		} else {
			lots, err = t.lotsInSpendOrder(ctx, u.ID, false)
		}
		if err != nil {
			return nil, err
		}
		m := newMovement(credittransaction.KindRevoke, 0)
		m.reason = req.Reason
		taken := t.drawLots(u, m, lots, req.Amount)
		if taken == 0 {
			return nil, apperr.New(apperr.InsufficientCredits, "there are no unspent credits to revoke")
		}
		m.amount = taken
		m.post(AccountRevoked, false, nil, taken)
		txn, err := t.write(ctx, actor, req.IdempotencyKey, u, m)
		if err != nil {
			return nil, err
		}
		return &Result{Transaction: txn, Amount: taken}, nil
	})
}

func (t *Tx) chosenLots(ctx context.Context, userID string, ids []string) ([]*ent.CreditLot, error) {
	found, err := t.ent.CreditLot.Query().Where(creditlot.UserID(userID), creditlot.IDIn(ids...)).All(ctx)
	if err != nil {
		return nil, fmt.Errorf("ledger: reading lots: %w", err)
	}
	byID := make(map[string]*ent.CreditLot, len(found))
	for _, l := range found {
		byID[l.ID] = l
	}
	lots := make([]*ent.CreditLot, 0, len(ids))
	seen := map[string]bool{}
	for _, id := range ids {
		l, ok := byID[id]
		if !ok {
			return nil, apperr.New(apperr.NotFound, "the user has no lot %q", id)
		}
		if !seen[id] {
			lots = append(lots, l)
			seen[id] = true
		}
	}
	return lots, nil
}

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
	if err := validateAmount("amount", req.Amount); err != nil {
		return nil, err
	}
	if err := ValidateText("reason", req.Reason, 1000); err != nil {
		return nil, err
	}
	p, err := t.payment(ctx, req.PaymentID)
	if err != nil {
		return nil, err
	}
	return t.once(ctx, actor, req.IdempotencyKey, "clawback", req, p.UserID, func(u *ent.User) (*Result, error) {
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
	p, err := t.payment(ctx, req.PaymentID)
	if err != nil {
		return nil, err
	}
	return t.once(ctx, actor, req.IdempotencyKey, "hold_payment", req, p.UserID, func(u *ent.User) (*Result, error) {
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
	p, err := t.payment(ctx, req.PaymentID)
	if err != nil {
		return nil, err
	}
	return t.once(ctx, actor, req.IdempotencyKey, "release_payment", req, p.UserID, func(u *ent.User) (*Result, error) {
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

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
