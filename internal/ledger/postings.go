package ledger

import (
	"context"
	"errors"
	"fmt"

	"entgo.io/ent/dialect"
	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/creditledger"
	"github.com/tally-billing/tally/ent/creditlot"
	"github.com/tally-billing/tally/ent/credittransaction"
	"github.com/tally-billing/tally/internal/apperr"
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
	// lot is the lot the movement creates (a grant's, a rollover's),
	// written after its transaction, which it names, and before its
	// postings, which name it.
	lot *ent.CreditLot
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

// writeMany records several movements, of one user or several, in order:
// the lots they drew from, the transactions, the lots they create, the
// postings with the running balance of each user's account, the users' new
// cached balances and transaction counts, and on PostgreSQL the
// notifications of the balances that moved. PostgreSQL takes it all as one
// statement (one round trip while the accounts are locked, see
// pgwrite.go); SQLite, in process, as one statement per table.
func (t *Tx) writeMany(ctx context.Context, ms []pendingMovement) ([]*ent.CreditTransaction, error) {
	clear(t.prefetched)
	txns, err := t.transactionRows(ms)
	if err != nil {
		return nil, err
	}
	w, err := t.postingsOf(ms, txns)
	if err != nil {
		return nil, err
	}
	if t.s.db.Dialect == dialect.Postgres {
		err = t.writeStatement(ctx, txns, w)
	} else {
		err = t.writeByTable(ctx, txns, w)
	}
	if err != nil {
		return nil, err
	}
	w.apply(t, txns)
	return txns, nil
}

func (t *Tx) movedUser(u *ent.User) {
	if t.moved == nil {
		t.moved = map[string]*ent.User{}
	}
	t.moved[u.ID] = u
	delete(t.standing, u.ID)
}

// transactionRows are the movements' transactions as they will be
// written, checked as ent's builders check them (the PostgreSQL statement
// does not go through the builders).
func (t *Tx) transactionRows(ms []pendingMovement) ([]*ent.CreditTransaction, error) {
	txns := make([]*ent.CreditTransaction, len(ms))
	for i, k := range ms {
		txn := &ent.CreditTransaction{
			ID:            k.m.id,
			CreatedAt:     t.now,
			UserID:        k.u.ID,
			Kind:          k.m.kind,
			Amount:        k.m.amount,
			Reason:        k.m.reason,
			Actor:         k.actor.String(),
			PaymentID:     k.m.paymentID,
			ReservationID: k.m.reservationID,
		}
		if k.key != "" {
			txn.IdempotencyKey = &k.key
			if fp := t.fingerprints[idempotency.Key{Scope: txn.Actor, Key: k.key}]; fp != nil {
				txn.Fingerprint = &fp
			}
		}
		if len(k.m.metadata) > 0 {
			txn.Metadata = k.m.metadata
		}
		if err := checkTransaction(txn); err != nil {
			return nil, err
		}
		txns[i] = t.ent.CreditTransaction.Attach(txn)
		t.movedUser(k.u)
	}
	return txns, nil
}

// checkTransaction runs the schema's validators on a transaction row.
func checkTransaction(txn *ent.CreditTransaction) error {
	checks := []error{
		credittransaction.IDValidator(txn.ID),
		credittransaction.KindValidator(txn.Kind),
		credittransaction.ActorValidator(txn.Actor),
	}
	if txn.Reason != "" {
		checks = append(checks, credittransaction.ReasonValidator(txn.Reason))
	}
	if txn.IdempotencyKey != nil {
		checks = append(checks, credittransaction.IdempotencyKeyValidator(*txn.IdempotencyKey))
	}
	if txn.Fingerprint != nil {
		checks = append(checks, credittransaction.FingerprintValidator(*txn.Fingerprint))
	}
	if err := errors.Join(checks...); err != nil {
		return fmt.Errorf("ledger: a %s transaction: %w", txn.Kind, err)
	}
	return nil
}

// checkLot runs the schema's validators on a new lot.
func checkLot(lot *ent.CreditLot) error {
	err := errors.Join(
		creditlot.IDValidator(lot.ID),
		creditlot.SourceValidator(lot.Source),
		creditlot.OriginalValidator(lot.Original),
		creditlot.RemainingValidator(lot.Remaining),
		creditlot.HeldValidator(lot.Held),
	)
	if err != nil {
		return fmt.Errorf("ledger: a new lot: %w", err)
	}
	return nil
}

// written is what a write of movements puts in the database besides the
// transactions: computed first, written by one of the executors, and
// applied to the ledger's in-memory copies once written.
type written struct {
	newLots  []*ent.CreditLot
	postings []*ent.CreditLedger
	owner    []int       // which transaction each posting belongs to
	touched  []*ent.User // in the order first moved
	balances map[string]int64
	counts   map[string]int64 // transactions added per user
	changed  map[string]bool  // whose balance moved
	changes  []BalanceChange
}

// postingsOf computes the movements' postings, with the running balance
// of each user's account, and the users' new cached balances and
// transaction counts (every movement is one more transaction of its
// user's, even one that leaves the balance as it was: a hold). Each
// movement's postings must sum to zero: one that does not balance is a
// bug, refused (and the whole transaction rolled back).
func (t *Tx) postingsOf(ms []pendingMovement, txns []*ent.CreditTransaction) (*written, error) {
	w := &written{
		owner:    make([]int, 0, 2*len(ms)),
		balances: map[string]int64{},
		counts:   map[string]int64{},
		changed:  map[string]bool{},
	}
	for i, k := range ms {
		var sum int64
		for _, p := range k.m.postings {
			sum += p.amount
		}
		if sum != 0 {
			return nil, fmt.Errorf("ledger: %s postings sum to %d, not zero", k.m.kind, sum)
		}
		balance, seen := w.balances[k.u.ID]
		if !seen {
			balance = k.u.CreditsBalance
		}
		before := balance
		if lot := k.m.lot; lot != nil {
			if err := checkLot(lot); err != nil {
				return nil, err
			}
			w.newLots = append(w.newLots, lot)
		}
		for _, p := range k.m.postings {
			if err := creditledger.AccountValidator(p.account); err != nil {
				return nil, fmt.Errorf("ledger: a posting of a %s transaction: %w", k.m.kind, err)
			}
			row := &ent.CreditLedger{
				ID:            pulid.New("led"),
				CreatedAt:     t.now,
				TransactionID: txns[i].ID,
				Account:       p.account,
				LotID:         p.lotID,
				Amount:        p.amount,
			}
			if p.onUser {
				balance += p.amount
				// credit keeps balances under MaxAmount; a debt, which only
				// clawbacks make, is bounded here, so that no balance is one
				// a client cannot read exactly (and sums of them stay far
				// from overflowing).
				if balance < -MaxAmount {
					return nil, apperr.New(apperr.InvalidArgument, "the balance would fall below the smallest amount, -%d", MaxAmount)
				}
				after := balance
				row.UserID, row.BalanceAfter = &k.u.ID, &after
			}
			w.postings = append(w.postings, t.ent.CreditLedger.Attach(row))
			w.owner = append(w.owner, i)
		}
		w.balances[k.u.ID] = balance
		if w.counts[k.u.ID]++; !seen {
			w.touched = append(w.touched, k.u)
		}
		if balance != before {
			w.changed[k.u.ID] = true
			w.changes = append(w.changes, BalanceChange{UserID: k.u.ID, Balance: balance, TransactionID: txns[i].ID, At: t.now})
		}
	}
	return w, nil
}

// apply brings the ledger's copies of what was written along: the
// transactions' postings, the users' balances and counts, and the balance
// changes to publish.
func (w *written) apply(t *Tx, txns []*ent.CreditTransaction) {
	for j, p := range w.postings {
		txn := txns[w.owner[j]]
		txn.Edges.Postings = append(txn.Edges.Postings, p)
	}
	for _, u := range w.touched {
		u.CreditsBalance = w.balances[u.ID]
		u.TransactionCount += w.counts[u.ID]
	}
	t.changes = append(t.changes, w.changes...)
}
