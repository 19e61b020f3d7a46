package ledger

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"entgo.io/ent/dialect/sql"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/creditlot"
	"github.com/tally-billing/tally/ent/credittransaction"
	"github.com/tally-billing/tally/ent/idempotencykey"
	"github.com/tally-billing/tally/ent/predicate"
	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/pulid"
)

func userIDIs(id string) predicate.User { return user.ID(id) }

// Result is what an operation did.
type Result struct {
	// Transaction is the business event written, with its postings loaded
	// (Edges.Postings).
	Transaction *ent.CreditTransaction
	// Reservation is set by the reservation operations.
	Reservation *ent.CreditReservation
	// Balance is the user's balance right after the transaction.
	Balance int64
	// Amount is the credits moved; Revoke may move less than it was asked.
	Amount int64
	// Replayed is true when an earlier request with the same idempotency key
	// produced this result and nothing was done now.
	Replayed bool
}

// posting is one line of a movement.
type posting struct {
	account string
	onUser  bool // the account is the user's own
	lotID   *string
	amount  int64
}

// movement is a transaction about to be written.
type movement struct {
	id            string
	kind          credittransaction.Kind
	amount        int64
	reason        string
	metadata      map[string]string
	paymentID     *string
	reservationID *string
	postings      []posting
}

func newMovement(kind credittransaction.Kind, amount int64) *movement {
	return &movement{id: pulid.New("txn"), kind: kind, amount: amount}
}

func (m *movement) post(account string, onUser bool, lotID *string, amount int64) {
	if amount != 0 {
		m.postings = append(m.postings, posting{account: account, onUser: onUser, lotID: lotID, amount: amount})
	}
}

// write records the transaction and its postings and brings the user's
// cached balance along.
func (t *Tx) write(ctx context.Context, actor Actor, key string, u *ent.User, m *movement) (*ent.CreditTransaction, error) {
	txn, err := t.insertTransaction(ctx, actor, key, u, m)
	if err != nil {
		return nil, err
	}
	if err := t.writePostings(ctx, u, m, txn); err != nil {
		return nil, err
	}
	return txn, nil
}

// insertTransaction writes the transaction row alone, for movements that
// create rows referring to it (a grant's lot) before their postings.
func (t *Tx) insertTransaction(ctx context.Context, actor Actor, key string, u *ent.User, m *movement) (*ent.CreditTransaction, error) {
	create := t.ent.CreditTransaction.Create().
		SetID(m.id).
		SetUserID(u.ID).
		SetKind(m.kind).
		SetAmount(m.amount).
		SetActor(actor.String()).
		SetCreatedAt(t.now).
		SetNillablePaymentID(m.paymentID).
		SetNillableReservationID(m.reservationID)
	if m.reason != "" {
		create.SetReason(m.reason)
	}
	if key != "" {
		create.SetIdempotencyKey(key)
	}
	if len(m.metadata) > 0 {
		create.SetMetadata(m.metadata)
	}
	txn, err := create.Save(ctx)
	if err != nil {
		return nil, fmt.Errorf("ledger: writing %s transaction: %w", m.kind, err)
	}
	return txn, nil
}

// writePostings writes the movement's postings, with the running balance of
// the user's account, and the user's new cached balance. The postings must
// sum to zero: a movement that does not balance is a bug, refused (and the
// whole transaction rolled back).
func (t *Tx) writePostings(ctx context.Context, u *ent.User, m *movement, txn *ent.CreditTransaction) error {
	var sum int64
	for _, p := range m.postings {
		sum += p.amount
	}
	if sum != 0 {
		return fmt.Errorf("ledger: %s postings sum to %d, not zero", m.kind, sum)
	}
	balance := u.CreditsBalance
	builders := make([]*ent.CreditLedgerCreate, 0, len(m.postings))
	for _, p := range m.postings {
		b := t.ent.CreditLedger.Create().
			SetTransactionID(txn.ID).
			SetAccount(p.account).
			SetAmount(p.amount).
			SetNillableLotID(p.lotID).
			SetCreatedAt(t.now)
		if p.onUser {
			balance += p.amount
			b.SetUserID(u.ID).SetBalanceAfter(balance)
		}
		builders = append(builders, b)
	}
	if len(builders) > 0 {
		postings, err := t.ent.CreditLedger.CreateBulk(builders...).Save(ctx)
		if err != nil {
			return fmt.Errorf("ledger: writing postings: %w", err)
		}
		txn.Edges.Postings = postings
	}
	if balance != u.CreditsBalance {
		if err := t.ent.User.UpdateOneID(u.ID).SetCreditsBalance(balance).Exec(ctx); err != nil {
			return fmt.Errorf("ledger: updating the balance of %s: %w", u.ID, err)
		}
		u.CreditsBalance = balance
		t.changes = append(t.changes, BalanceChange{UserID: u.ID, Balance: balance, TransactionID: txn.ID, At: t.now})
	}
	return nil
}

// setLot writes a lot's new remaining and held credits.
func (t *Tx) setLot(ctx context.Context, lot *ent.CreditLot, remaining, held int64) error {
	err := t.ent.CreditLot.UpdateOneID(lot.ID).
		SetRemaining(remaining).
		SetHeld(held).
		SetUpdatedAt(t.now).
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("ledger: updating lot %s: %w", lot.ID, err)
	}
	lot.Remaining, lot.Held = remaining, held
	return nil
}

// creditLot adds amount to the user's account through lot, repaying any debt
// first: the repaid part moves from the lot to the lot-less (debt) postings,
// so that the lot keeps only credits the user can spend.
func (t *Tx) creditLot(ctx context.Context, u *ent.User, m *movement, lot *ent.CreditLot, amount int64, fromHeld bool) error {
	account := UserAccount(u.ID)
	m.post(account, true, &lot.ID, amount)
	balanceAfter := u.CreditsBalance + amount
	repaid := int64(0)
	if u.CreditsBalance < 0 {
		repaid = min(amount, -u.CreditsBalance)
		m.post(account, true, &lot.ID, -repaid)
		m.post(account, true, nil, repaid)
	}
	if balanceAfter > MaxAmount {
		return apperr.New(apperr.InvalidArgument, "the balance would exceed the largest amount, %d", MaxAmount)
	}
	held := lot.Held
	if fromHeld {
		held -= amount
	}
	return t.setLot(ctx, lot, lot.Remaining+amount-repaid, held)
}

// drawLots takes up to amount credits from lots, in the order given, and
// posts them off the user's account; it returns what it took.
func (t *Tx) drawLots(ctx context.Context, u *ent.User, m *movement, lots []*ent.CreditLot, amount int64) (int64, error) {
	taken := int64(0)
	for _, lot := range lots {
		if taken == amount {
			break
		}
		take := min(lot.Remaining, amount-taken)
		if take <= 0 {
			continue
		}
		m.post(UserAccount(u.ID), true, &lot.ID, -take)
		if err := t.setLot(ctx, lot, lot.Remaining-take, lot.Held); err != nil {
			return 0, err
		}
		taken += take
	}
	return taken, nil
}

// lotsInSpendOrder are the user's lots that hold credits, in the order
// spends draw from them: priority, then soonest expiry (never-expiring
// last), then oldest. With unexpiredOnly, lots past their expiry that the
// sweep has not reached yet are left out.
func (t *Tx) lotsInSpendOrder(ctx context.Context, userID string, unexpiredOnly bool) ([]*ent.CreditLot, error) {
	q := t.ent.CreditLot.Query().Where(creditlot.UserID(userID), creditlot.RemainingGT(0))
	if unexpiredOnly {
		q = q.Where(creditlot.Or(creditlot.ExpiresAtIsNil(), creditlot.ExpiresAtGT(t.now)))
	}
	lots, err := q.Order(spendOrder...).All(ctx)
	if err != nil {
		return nil, fmt.Errorf("ledger: reading the lots of %s: %w", userID, err)
	}
	return lots, nil
}

var spendOrder = []creditlot.OrderOption{
	creditlot.ByPriority(),
	creditlot.ByExpiresAt(sql.OrderNullsLast()),
	creditlot.ByCreatedAt(),
	creditlot.ByID(),
}

// storedResult is what an idempotency record remembers of a result.
type storedResult struct {
	TransactionID string `json:"transaction_id,omitempty"`
	ReservationID string `json:"reservation_id,omitempty"`
	Balance       int64  `json:"balance"`
	Amount        int64  `json:"amount"`
}

// fingerprint identifies a request independently of its idempotency key.
func fingerprint(op string, req any) (string, error) {
	b, err := json.Marshal(struct {
		Op  string
		Req any
	}{op, req})
	if err != nil {
		return "", fmt.Errorf("ledger: fingerprinting %s: %w", op, err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// prior returns the result of an earlier request with this key, nil if there
// was none, or IDEMPOTENCY_KEY_REUSED if that request was a different one.
func (t *Tx) prior(ctx context.Context, actor Actor, key, fp string) (*Result, error) {
	rec, err := t.ent.IdempotencyKey.Query().
		Where(idempotencykey.Scope(actor.String()), idempotencykey.Key(key)).
		Only(ctx)
	if ent.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: reading idempotency key: %w", err)
	}
	if rec.Fingerprint != fp {
		return nil, apperr.New(apperr.IdempotencyKeyReused,
			"idempotency key %q was already used for a different request", key)
	}
	var stored storedResult
	if err := json.Unmarshal(rec.Result, &stored); err != nil {
		return nil, fmt.Errorf("ledger: decoding the stored result of key %q: %w", key, err)
	}
	res := &Result{Balance: stored.Balance, Amount: stored.Amount, Replayed: true}
	if stored.TransactionID != "" {
		res.Transaction, err = t.ent.CreditTransaction.Query().
			Where(credittransaction.ID(stored.TransactionID)).
			WithPostings().
			Only(ctx)
		if err != nil {
			return nil, fmt.Errorf("ledger: reading the transaction of key %q: %w", key, err)
		}
	}
	if stored.ReservationID != "" {
		res.Reservation, err = t.ent.CreditReservation.Get(ctx, stored.ReservationID)
		if err != nil {
			return nil, fmt.Errorf("ledger: reading the reservation of key %q: %w", key, err)
		}
	}
	return res, nil
}

// remember records the key with the result, in the transaction of the effect.
// A concurrent request with the same key that committed first makes this
// insert fail; the retry then finds that request's result.
func (t *Tx) remember(ctx context.Context, actor Actor, key, fp string, res *Result) error {
	stored := storedResult{Balance: res.Balance, Amount: res.Amount}
	if res.Transaction != nil {
		stored.TransactionID = res.Transaction.ID
	}
	if res.Reservation != nil {
		stored.ReservationID = res.Reservation.ID
	}
	b, err := json.Marshal(stored)
	if err != nil {
		return fmt.Errorf("ledger: encoding result: %w", err)
	}
	err = t.ent.IdempotencyKey.Create().
		SetScope(actor.String()).
		SetKey(key).
		SetFingerprint(fp).
		SetResult(b).
		SetCreatedAt(t.now).
		Exec(ctx)
	if ent.IsConstraintError(err) {
		return fmt.Errorf("ledger: idempotency key %q taken concurrently: %w", key, ErrRetry)
	}
	if err != nil {
		return fmt.Errorf("ledger: recording idempotency key: %w", err)
	}
	return nil
}

// once runs op on the locked user unless the key already has a result. req
// (with the name of the operation) is what the key's fingerprint covers.
func (t *Tx) once(ctx context.Context, actor Actor, key, opName string, req any, userID string,
	op func(u *ent.User) (*Result, error),
) (*Result, error) {
	if err := actor.validate(); err != nil {
		return nil, err
	}
	if err := ValidateIdempotencyKey(key); err != nil {
		return nil, err
	}
	fp, err := fingerprint(opName, req)
	if err != nil {
		return nil, err
	}
	u, err := t.lockUser(ctx, userID)
	if err != nil {
		return nil, err
	}
	if res, err := t.prior(ctx, actor, key, fp); res != nil || err != nil {
		return res, err
	}
	res, err := op(u)
	if err != nil {
		return nil, err
	}
	res.Balance = u.CreditsBalance
	if err := t.remember(ctx, actor, key, fp, res); err != nil {
		return nil, err
	}
	return res, nil
}

// do runs a Tx operation in a transaction of its own.
func (s *Service) do(ctx context.Context, op func(ctx context.Context, t *Tx) (*Result, error)) (*Result, error) {
	var res *Result
	err := s.Within(ctx, func(ctx context.Context, t *Tx) error {
		var err error
		res, err = op(ctx, t)
		return err
	})
	if err != nil {
		return nil, err
	}
	return res.Unwrap(), nil
}

// Unwrap detaches the result's entities from the committed transaction that
// made them, so that reading their edges afterwards (as GraphQL does) runs
// on the database rather than on a closed transaction. Call it once the
// transaction of Within has committed.
func (r *Result) Unwrap() *Result {
	if r.Transaction != nil {
		postings := r.Transaction.Edges.Postings
		r.Transaction = r.Transaction.Unwrap()
		for i, p := range postings {
			postings[i] = p.Unwrap()
		}
		r.Transaction.Edges.Postings = postings
	}
	if r.Reservation != nil {
		r.Reservation = r.Reservation.Unwrap()
	}
	return r
}
