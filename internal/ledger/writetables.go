package ledger

// On SQLite, in the process, a round trip costs nothing: the rows of a
// write go through ent's builders, one statement per table (PostgreSQL's
// single statement is in pgwrite.go).

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/internal/database"
)

// writeByTable writes the rows with one statement per table.
func (t *Tx) writeByTable(ctx context.Context, txns []*ent.CreditTransaction, w *written) error {
	if err := t.flushLots(ctx); err != nil {
		return err
	}
	if err := t.insertTransactions(ctx, txns); err != nil {
		return err
	}
	if len(w.newLots) > 0 {
		builders := make([]*ent.CreditLotCreate, len(w.newLots))
		for i, lot := range w.newLots {
			builders[i] = t.ent.CreditLot.Create().
				SetID(lot.ID).
				SetUserID(lot.UserID).
				SetSource(lot.Source).
				SetOriginal(lot.Original).
				SetRemaining(lot.Remaining).
				SetHeld(lot.Held).
				SetNillableExpiresAt(lot.ExpiresAt).
				SetPriority(lot.Priority).
				SetNillablePaymentID(lot.PaymentID).
				SetTransactionID(lot.TransactionID).
				SetCreatedAt(lot.CreatedAt).
				SetUpdatedAt(lot.UpdatedAt)
		}
		if err := t.ent.CreditLot.CreateBulk(builders...).Exec(ctx); err != nil {
			return fmt.Errorf("ledger: creating %d lots: %w", len(builders), err)
		}
	}
	if len(w.postings) > 0 {
		builders := make([]*ent.CreditLedgerCreate, len(w.postings))
		for i, p := range w.postings {
			builders[i] = t.ent.CreditLedger.Create().
				SetID(p.ID).
				SetTransactionID(p.TransactionID).
				SetAccount(p.Account).
				SetAmount(p.Amount).
				SetNillableLotID(p.LotID).
				SetNillableUserID(p.UserID).
				SetNillableBalanceAfter(p.BalanceAfter).
				SetCreatedAt(p.CreatedAt)
		}
		if err := t.ent.CreditLedger.CreateBulk(builders...).Exec(ctx); err != nil {
			return fmt.Errorf("ledger: writing postings: %w", err)
		}
	}
	return t.saveBalances(ctx, w)
}

// insertTransactions writes transaction rows, in one statement.
func (t *Tx) insertTransactions(ctx context.Context, txns []*ent.CreditTransaction) error {
	creates := make([]*ent.CreditTransactionCreate, len(txns))
	for i, txn := range txns {
		creates[i] = t.transactionCreate(txn)
	}
	if err := t.ent.CreditTransaction.CreateBulk(creates...).Exec(ctx); err != nil {
		return fmt.Errorf("ledger: writing %s transactions: %w", txns[0].Kind, keyTaken(err))
	}
	return nil
}

func (t *Tx) transactionCreate(txn *ent.CreditTransaction) *ent.CreditTransactionCreate {
	create := t.ent.CreditTransaction.Create().
		SetID(txn.ID).
		SetUserID(txn.UserID).
		SetKind(txn.Kind).
		SetAmount(txn.Amount).
		SetActor(txn.Actor).
		SetCreatedAt(txn.CreatedAt).
		SetNillablePaymentID(txn.PaymentID).
		SetNillableReservationID(txn.ReservationID).
		SetNillableIdempotencyKey(txn.IdempotencyKey)
	if txn.Reason != "" {
		create.SetReason(txn.Reason)
	}
	if txn.Fingerprint != nil {
		create.SetFingerprint(*txn.Fingerprint)
	}
	if len(txn.Metadata) > 0 {
		create.SetMetadata(txn.Metadata)
	}
	return create
}

// saveBalances writes the cached balances that changed and adds the users'
// new transactions to their counts, in one statement. The count is added,
// not set: it is right whichever columns the caller read of the row.
func (t *Tx) saveBalances(ctx context.Context, w *written) error {
	users, changed, counts := w.touched, w.changed, w.counts
	switch len(users) {
	case 0:
		return nil
	case 1:
		// Update, not UpdateOne: UpdateOne reads the row back, a round trip
		// made while every other writer of this account waits.
		u := users[0]
		update := t.ent.User.Update().Where(user.ID(u.ID)).AddTransactionCount(counts[u.ID]).SetUpdatedAt(t.now)
		if changed[u.ID] {
			update.SetCreditsBalance(w.balances[u.ID])
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
			values[u.ID] = w.balances[u.ID]
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
