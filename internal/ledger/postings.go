package ledger

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/credittransaction"
	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/idempotency"
	"github.com/tally-billing/tally/internal/pulid"
)

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
	txns, err := t.writeMany(ctx, []pendingMovement{{actor: actor, key: key, u: u, m: m}})
	if err != nil {
		return nil, err
	}
	return txns[0], nil
}

// pendingMovement is a movement with who asked for it and the idempotency key of
// their request.
type pendingMovement struct {
	actor Actor
	key   string
	u     *ent.User
	m     *movement
}

// writeMany records several movements, of one user or several, in order,
// with one statement per table (a batch of spends is written about as
// cheaply as one spend): the lots they drew from, the transactions, the
// postings, and the users' cached balances.
func (t *Tx) writeMany(ctx context.Context, ms []pendingMovement) ([]*ent.CreditTransaction, error) {
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
func (t *Tx) insertTransactions(ctx context.Context, ms []pendingMovement) ([]*ent.CreditTransaction, error) {
	creates := make([]*ent.CreditTransactionCreate, len(ms))
	for i, k := range ms {
		creates[i] = t.transactionCreate(k.actor, k.key, k.u, k.m)
		t.movedUser(k.u)
	}
	txns, err := t.ent.CreditTransaction.CreateBulk(creates...).Save(ctx)
	if err != nil {
		err = keyTaken(err)
		return nil, fmt.Errorf("ledger: writing %s transactions: %w", ms[0].m.kind, err)
	}
	return txns, nil
}

func (t *Tx) movedUser(u *ent.User) {
	if t.moved == nil {
		t.moved = map[string]*ent.User{}
	}
	t.moved[u.ID] = u
}

// insertTransaction writes the transaction row alone, for movements that
// create rows referring to it (a grant's lot) before their postings.
func (t *Tx) insertTransaction(ctx context.Context, actor Actor, key string, u *ent.User, m *movement) (*ent.CreditTransaction, error) {
	t.movedUser(u)
	txn, err := t.transactionCreate(actor, key, u, m).Save(ctx)
	if err != nil {
		err = keyTaken(err)
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
		if fp := t.fingerprints[idempotency.Key{Scope: actor.String(), Key: key}]; fp != nil {
			create.SetFingerprint(fp)
		}
	}
	if len(m.metadata) > 0 {
		create.SetMetadata(m.metadata)
	}
	return create
}

// writePostings writes the movements' postings, with the running balance
// of each user's account, and the users' new cached balances and
// transaction counts (every movement is one more transaction of its user's,
// even one that leaves the balance as it was: a hold). Each
// movement's postings must sum to zero: one that does not balance is a bug,
// refused (and the whole transaction rolled back).
func (t *Tx) writePostings(ctx context.Context, ms []pendingMovement, txns []*ent.CreditTransaction) error {
	var builders []*ent.CreditLedgerCreate
	owner := make([]int, 0, 2*len(ms)) // which transaction each posting belongs to
	var touched []*ent.User
	balances := map[string]int64{}
	counts := map[string]int64{}
	changed := map[string]bool{} // whose balance moved
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
		if counts[k.u.ID]++; !seen {
			touched = append(touched, k.u)
		}
		if balance != before {
			changed[k.u.ID] = true
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
	for _, u := range touched {
		u.CreditsBalance = balances[u.ID]
		u.TransactionCount += counts[u.ID]
	}
	return t.saveBalances(ctx, touched, changed, counts)
}

// saveBalances writes the cached balances that changed and adds the users'
// new transactions to their counts, in one statement. The count is added,
// not set: it is right whichever columns the caller read of the row.
func (t *Tx) saveBalances(ctx context.Context, users []*ent.User, changed map[string]bool, counts map[string]int64) error {
	switch len(users) {
	case 0:
		return nil
	case 1:
		// Update, not UpdateOne: UpdateOne reads the row back, a round trip
		// made while every other writer of this account waits.
		u := users[0]
		update := t.ent.User.Update().Where(user.ID(u.ID)).AddTransactionCount(counts[u.ID]).SetUpdatedAt(t.now)
		if changed[u.ID] {
			update.SetCreditsBalance(u.CreditsBalance)
		}
		err := update.Exec(ctx)
		if err != nil {
			return fmt.Errorf("ledger: updating the balance of %s: %w", u.ID, err)
		}
		return nil
	}
	values := make(map[string]any, len(users))
	added := make(map[string]any, len(users))
	for _, u := range users {
		if changed[u.ID] {
			values[u.ID] = u.CreditsBalance
		}
		added[u.ID] = counts[u.ID]
	}
	err := database.UpdateRows(user.Table, slices.Sorted(maps.Keys(added))).
		SetEach(user.FieldCreditsBalance, "BIGINT", values).
		AddEach(user.FieldTransactionCount, "BIGINT", added).
		Set(user.FieldUpdatedAt, t.now).
		Exec(ctx, t.s.db, t.ent)
	if err != nil {
		return fmt.Errorf("ledger: updating the balances of %d users: %w", len(users), err)
	}
	return nil
}
