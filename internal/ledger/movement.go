package ledger

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

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
	// User is the user's row once the operation is done (for a replay: now).
	User *ent.User
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
	txns, err := t.writeMany(ctx, []keyed{{actor: actor, key: key, u: u, m: m}})
	if err != nil {
		return nil, err
	}
	return txns[0], nil
}

// keyed is a movement with who asked for it and the idempotency key of
// their request.
type keyed struct {
	actor Actor
	key   string
	u     *ent.User
	m     *movement
}

// writeMany records several movements, of one user or several, in order,
// with one statement per table (a batch of spends is written about as
// cheaply as one spend): the lots they drew from, the transactions, the
// postings, and the users' cached balances.
func (t *Tx) writeMany(ctx context.Context, ms []keyed) ([]*ent.CreditTransaction, error) {
	if err := t.flushLots(ctx); err != nil {
		return nil, err
	}
	txns, err := t.insertTransactions(ctx, ms)
	if err != nil {
		return nil, err
	}
	if err := t.writePostings(ctx, ms, txns); err != nil {
		return nil, err
	}
	return txns, nil
}

// insertTransactions writes the movements' transaction rows, in one
// statement.
func (t *Tx) insertTransactions(ctx context.Context, ms []keyed) ([]*ent.CreditTransaction, error) {
	creates := make([]*ent.CreditTransactionCreate, len(ms))
	for i, k := range ms {
		creates[i] = t.transactionCreate(k.actor, k.key, k.u, k.m)
	}
	txns, err := t.ent.CreditTransaction.CreateBulk(creates...).Save(ctx)
	if err != nil {
		return nil, fmt.Errorf("ledger: writing %s transactions: %w", ms[0].m.kind, err)
	}
	return txns, nil
}

// insertTransaction writes the transaction row alone, for movements that
// create rows referring to it (a grant's lot) before their postings.
func (t *Tx) insertTransaction(ctx context.Context, actor Actor, key string, u *ent.User, m *movement) (*ent.CreditTransaction, error) {
	txn, err := t.transactionCreate(actor, key, u, m).Save(ctx)
	if err != nil {
		return nil, fmt.Errorf("ledger: writing %s transaction: %w", m.kind, err)
	}
	return txn, nil
}

func (t *Tx) transactionCreate(actor Actor, key string, u *ent.User, m *movement) *ent.CreditTransactionCreate {
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
	return create
}

// writePostings writes the movements' postings, with the running balance
// of each user's account, and the users' new cached balances. Each
// movement's postings must sum to zero: one that does not balance is a bug,
// refused (and the whole transaction rolled back).
func (t *Tx) writePostings(ctx context.Context, ms []keyed, txns []*ent.CreditTransaction) error {
	var builders []*ent.CreditLedgerCreate
	owner := make([]int, 0, 2*len(ms)) // which transaction each posting belongs to
	var changed []*ent.User
	balances := map[string]int64{}
	for i, k := range ms {
		var sum int64
		for _, p := range k.m.postings {
			sum += p.amount
		}
		if sum != 0 {
			return fmt.Errorf("ledger: %s postings sum to %d, not zero", k.m.kind, sum)
		}
		balance, seen := balances[k.u.ID]
		if !seen {
			balance = k.u.CreditsBalance
		}
		before := balance
		for _, p := range k.m.postings {
			b := t.ent.CreditLedger.Create().
				SetTransactionID(txns[i].ID).
				SetAccount(p.account).
				SetAmount(p.amount).
				SetNillableLotID(p.lotID).
				SetCreatedAt(t.now)
			if p.onUser {
				balance += p.amount
				// credit keeps balances under MaxAmount; a debt, which only
				// clawbacks make, is bounded here, so that no balance is one
				// a client cannot read exactly (and sums of them stay far
				// from overflowing).
				if balance < -MaxAmount {
					return apperr.New(apperr.InvalidArgument, "the balance would fall below the smallest amount, -%d", MaxAmount)
				}
				b.SetUserID(k.u.ID).SetBalanceAfter(balance)
			}
			builders = append(builders, b)
			owner = append(owner, i)
		}
		balances[k.u.ID] = balance
		if balance != before {
			if !seen || !slices.Contains(changed, k.u) {
				changed = append(changed, k.u)
			}
			t.changes = append(t.changes, BalanceChange{UserID: k.u.ID, Balance: balance, TransactionID: txns[i].ID, At: t.now})
		}
	}
	if len(builders) > 0 {
		postings, err := t.ent.CreditLedger.CreateBulk(builders...).Save(ctx)
		if err != nil {
			return fmt.Errorf("ledger: writing postings: %w", err)
		}
		for j, p := range postings {
			txn := txns[owner[j]]
			txn.Edges.Postings = append(txn.Edges.Postings, p)
		}
	}
	for _, u := range changed {
		u.CreditsBalance = balances[u.ID]
	}
	return t.saveBalances(ctx, changed)
}

// saveBalances writes users' cached balances, in one statement.
func (t *Tx) saveBalances(ctx context.Context, users []*ent.User) error {
	switch len(users) {
	case 0:
		return nil
	case 1:
		// Update, not UpdateOne: UpdateOne reads the row back, a round trip
		// made while every other writer of this account waits.
		u := users[0]
		err := t.ent.User.Update().Where(user.ID(u.ID)).SetCreditsBalance(u.CreditsBalance).SetUpdatedAt(t.now).Exec(ctx)
		if err != nil {
			return fmt.Errorf("ledger: updating the balance of %s: %w", u.ID, err)
		}
		return nil
	}
	values := make(map[string]int64, len(users))
	for _, u := range users {
		values[u.ID] = u.CreditsBalance
	}
	if err := t.setColumnByID(ctx, "users", "credits_balance", values); err != nil {
		return fmt.Errorf("ledger: updating the balances of %d users: %w", len(users), err)
	}
	return nil
}

// setColumnByID sets an integer column of several rows, each to its own
// value, in one statement: UPDATE … SET col = CASE id WHEN … END. (The
// casts make PostgreSQL type the parameters as integers.)
func (t *Tx) setColumnByID(ctx context.Context, table, column string, values map[string]int64) error {
	var q strings.Builder
	args := make([]any, 0, 3*len(values)+1)
	fmt.Fprintf(&q, "UPDATE %s SET %s = CASE id", table, column)
	ids := slices.Sorted(maps.Keys(values))
	for _, id := range ids {
		q.WriteString(" WHEN ? THEN CAST(? AS BIGINT)")
		args = append(args, id, values[id])
	}
	q.WriteString(" END, updated_at = ? WHERE id IN (")
	args = append(args, t.now)
	for i, id := range ids {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString("?")
		args = append(args, id)
	}
	q.WriteString(")")
	res, err := t.ent.ExecContext(ctx, t.s.db.Rebind(q.String()), args...)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err == nil && n != int64(len(ids)) {
		return fmt.Errorf("%d of %d rows of %s updated", n, len(ids), table)
	}
	return nil
}

// setLot writes a lot's new remaining and held credits now.
func (t *Tx) setLot(ctx context.Context, lot *ent.CreditLot, remaining, held int64) error {
	lot.Remaining, lot.Held = remaining, held
	return t.saveLot(ctx, lot)
}

func (t *Tx) saveLot(ctx context.Context, lot *ent.CreditLot) error {
	// Update, not UpdateOne, which would read the row back.
	err := t.ent.CreditLot.Update().
		Where(creditlot.ID(lot.ID)).
		SetRemaining(lot.Remaining).
		SetHeld(lot.Held).
		SetUpdatedAt(t.now).
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("ledger: updating lot %s: %w", lot.ID, err)
	}
	delete(t.dirtyLots, lot.ID)
	return nil
}

// drawLot takes credits from a lot in memory; the lot is written once, by
// the next write of movements (or flushLots), however many draws it had.
func (t *Tx) drawLot(lot *ent.CreditLot, take int64) {
	lot.Remaining -= take
	if t.dirtyLots == nil {
		t.dirtyLots = map[string]*ent.CreditLot{}
	}
	t.dirtyLots[lot.ID] = lot
}

// flushLots writes the lots drawn from in memory (their held credits do
// not change by drawing).
func (t *Tx) flushLots(ctx context.Context) error {
	switch len(t.dirtyLots) {
	case 0:
		return nil
	case 1:
		for _, lot := range t.dirtyLots {
			return t.saveLot(ctx, lot)
		}
	}
	values := make(map[string]int64, len(t.dirtyLots))
	for id, lot := range t.dirtyLots {
		values[id] = lot.Remaining
	}
	if err := t.setColumnByID(ctx, "credit_lots", "remaining", values); err != nil {
		return fmt.Errorf("ledger: updating %d lots: %w", len(values), err)
	}
	clear(t.dirtyLots)
	return nil
}

// creditLot adds amount to the user's account through lot, repaying any debt
// first (see credit), and writes the lot.
func (t *Tx) creditLot(ctx context.Context, u *ent.User, m *movement, lot *ent.CreditLot, amount int64, fromHeld bool) error {
	kept, err := credit(u, m, lot.ID, amount)
	if err != nil {
		return err
	}
	held := lot.Held
	if fromHeld {
		held -= amount
	}
	return t.setLot(ctx, lot, lot.Remaining+kept, held)
}

// credit posts amount to the user's account through the lot, repaying any
// debt first: the repaid part moves from the lot to the lot-less (debt)
// postings, so that the lot keeps only credits the user can spend. It
// returns what the lot keeps.
func credit(u *ent.User, m *movement, lotID string, amount int64) (kept int64, err error) {
	if u.CreditsBalance+amount > MaxAmount {
		return 0, apperr.New(apperr.InvalidArgument, "the balance would exceed the largest amount, %d", MaxAmount)
	}
	account := UserAccount(u.ID)
	m.post(account, true, &lotID, amount)
	repaid := int64(0)
	if u.CreditsBalance < 0 {
		repaid = min(amount, -u.CreditsBalance)
		m.post(account, true, &lotID, -repaid)
		m.post(account, true, nil, repaid)
	}
	return amount - repaid, nil
}

// drawLots takes up to amount credits from lots, in the order given, and
// posts them off the user's account; it returns what it took. The lots are
// written with the movement.
func (t *Tx) drawLots(u *ent.User, m *movement, lots []*ent.CreditLot, amount int64) int64 {
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
		t.drawLot(lot, take)
		taken += take
	}
	return taken
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
	return t.replay(ctx, rec, fp)
}

// replay is the result recorded with a key, or IDEMPOTENCY_KEY_REUSED if
// the request that recorded it was not the one with fingerprint fp.
func (t *Tx) replay(ctx context.Context, rec *ent.IdempotencyKey, fp string) (*Result, error) {
	if rec.Fingerprint != fp {
		return nil, apperr.New(apperr.IdempotencyKeyReused,
			"idempotency key %q was already used for a different request", rec.Key)
	}
	var stored storedResult
	if err := json.Unmarshal(rec.Result, &stored); err != nil {
		return nil, fmt.Errorf("ledger: decoding the stored result of key %q: %w", rec.Key, err)
	}
	res := &Result{Balance: stored.Balance, Amount: stored.Amount, Replayed: true}
	var err error
	if stored.TransactionID != "" {
		res.Transaction, err = t.ent.CreditTransaction.Query().
			Where(credittransaction.ID(stored.TransactionID)).
			WithPostings().
			Only(ctx)
		if err != nil {
			return nil, fmt.Errorf("ledger: reading the transaction of key %q: %w", rec.Key, err)
		}
	}
	if stored.ReservationID != "" {
		res.Reservation, err = t.ent.CreditReservation.Get(ctx, stored.ReservationID)
		if err != nil {
			return nil, fmt.Errorf("ledger: reading the reservation of key %q: %w", rec.Key, err)
		}
	}
	return res, nil
}

// remembered is a result to record under its request's key.
type remembered struct {
	actor   Actor
	key, fp string
	res     *Result
}

// remember records the key with the result, in the transaction of the effect.
func (t *Tx) remember(ctx context.Context, actor Actor, key, fp string, res *Result) error {
	return t.rememberMany(ctx, []remembered{{actor: actor, key: key, fp: fp, res: res}})
}

// rememberMany records several keys in one statement. A concurrent request
// with one of the keys that committed first makes it fail; the retry then
// finds that request's result.
func (t *Tx) rememberMany(ctx context.Context, rs []remembered) error {
	creates := make([]*ent.IdempotencyKeyCreate, len(rs))
	for i, r := range rs {
		stored := storedResult{Balance: r.res.Balance, Amount: r.res.Amount}
		if r.res.Transaction != nil {
			stored.TransactionID = r.res.Transaction.ID
		}
		if r.res.Reservation != nil {
			stored.ReservationID = r.res.Reservation.ID
		}
		b, err := json.Marshal(stored)
		if err != nil {
			return fmt.Errorf("ledger: encoding result: %w", err)
		}
		creates[i] = t.ent.IdempotencyKey.Create().
			SetScope(r.actor.String()).
			SetKey(r.key).
			SetFingerprint(r.fp).
			SetResult(b).
			SetCreatedAt(t.now)
	}
	err := t.ent.IdempotencyKey.CreateBulk(creates...).Exec(ctx)
	if ent.IsConstraintError(err) {
		return fmt.Errorf("ledger: an idempotency key was taken concurrently: %w", ErrRetry)
	}
	if err != nil {
		return fmt.Errorf("ledger: recording idempotency keys: %w", err)
	}
	return nil
}

// noKnownKeys fails, for the caller to fall back to operations that
// replay, when one of the keys already has a record.
func (t *Tx) noKnownKeys(ctx context.Context, rs []remembered) error {
	matches := make([]predicate.IdempotencyKey, len(rs))
	for i, r := range rs {
		matches[i] = idempotencykey.And(idempotencykey.Scope(r.actor.String()), idempotencykey.Key(r.key))
	}
	n, err := t.ent.IdempotencyKey.Query().Where(idempotencykey.Or(matches...)).Count(ctx)
	if err != nil {
		return fmt.Errorf("ledger: reading idempotency keys: %w", err)
	}
	if n > 0 {
		return ErrKnownKey
	}
	return nil
}

// ErrKnownKey says a batch met an idempotency key that already has a
// record; its operations are to be made one by one, which replay it.
var ErrKnownKey = errors.New("ledger: an idempotency key of the batch already has a record")

// once runs op on the locked user unless the key already has a result. req
// (with the name of the operation) is what the key's fingerprint covers.
func (t *Tx) once(ctx context.Context, actor Actor, key, opName string, req any, userID string,
	op func(u *ent.User) (*Result, error),
) (*Result, error) {
	return t.keyed(ctx, actor, key, opName, req, userID, false, op)
}

// onceOptimistic is once for an operation that refuses only before its
// first write. On a first attempt its key is looked up only if it refuses
// (see spendMany): a key that exists makes the insert of its record fail,
// which rolls back and retries with the lookup.
func (t *Tx) onceOptimistic(ctx context.Context, actor Actor, key, opName string, req any, userID string,
	op func(u *ent.User) (*Result, error),
) (*Result, error) {
	return t.keyed(ctx, actor, key, opName, req, userID, true, op)
}

func (t *Tx) keyed(ctx context.Context, actor Actor, key, opName string, req any, userID string,
	optimistic bool, op func(u *ent.User) (*Result, error),
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
	replayed := func() (*Result, error) {
		res, err := t.prior(ctx, actor, key, fp)
		if res != nil {
			res.User = u
		}
		return res, err
	}
	lookedUp := !optimistic || t.attempt > 1
	if lookedUp {
		if res, err := replayed(); res != nil || err != nil {
			return res, err
		}
	}
	res, err := op(u)
	if err != nil {
		if _, refused := apperr.As(err); refused && !lookedUp {
			if res, perr := replayed(); res != nil || perr != nil {
				return res, perr
			}
		}
		return nil, err
	}
	res.Balance = u.CreditsBalance
	res.User = u
	if err := t.remember(ctx, actor, key, fp, res); err != nil {
		return nil, err
	}
	return res, nil
}

// do runs a Tx operation in a transaction of its own, in the span of the
// operation (name, a constant, see tracing.go).
func (s *Service) do(ctx context.Context, name string, actor Actor, op func(ctx context.Context, t *Tx) (*Result, error)) (_ *Result, err error) {
	ctx, span := s.startOp(ctx, name, actor.Kind)
	defer func() { endSpan(span, err) }()
	var res *Result
	err = s.Within(ctx, func(ctx context.Context, t *Tx) error {
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
	if r.User != nil {
		r.User = r.User.Unwrap()
	}
	return r
}
