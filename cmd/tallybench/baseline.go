package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"entgo.io/ent/dialect"

	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/pulid"
)

// rawStore runs the baselines: the least SQL a correct operation needs,
// through database/sql with prepared statements, on the benchmark's
// database but on a pool of its own (same size as the server's), so that
// the baseline neither borrows nor starves the server's connections.
type rawStore struct {
	db                             *sql.DB
	lock, insertTxn, insertPosting *sql.Stmt
	updateBalance, selectBalance   *sql.Stmt
}

// rawActor is recorded on the baseline's transactions, so that they can be
// told apart from Tally's.
const rawActor = "service:bench-raw"

func newRawStore(ctx context.Context, db *database.DB) (*rawStore, error) {
	// B1 locks the row first on PostgreSQL. SQLite has no FOR UPDATE; its
	// connections BEGIN IMMEDIATE (the _txlock DSN setting), which takes the
	// database's write lock at BEGIN, as Tally's own transactions do.
	lock := `SELECT credits_balance FROM users WHERE id = $1`
	if db.Dialect == dialect.Postgres {
		lock += ` FOR UPDATE`
	}
	r := &rawStore{db: db.SQL}
	for _, s := range []struct {
		into  **sql.Stmt
		query string
	}{
		{&r.lock, lock},
		{&r.insertTxn, `INSERT INTO credit_transactions (id, created_at, kind, amount, actor, user_id) VALUES ($1, $2, 'SPEND', 1, '` + rawActor + `', $3)`},
		// Both postings in one statement: the transaction stays balanced
		// (double entry, checked after every run) at the cost of the single
		// round trip the baseline is allowed for its posting.
		{&r.insertPosting, `INSERT INTO credit_ledgers (id, created_at, transaction_id, account, amount, user_id, balance_after) VALUES ($1, $2, $3, $4, -1, $5, $6), ($7, $2, $3, 'system:spent', 1, NULL, NULL)`},
		{&r.updateBalance, `UPDATE users SET credits_balance = $1 WHERE id = $2`},
		{&r.selectBalance, `SELECT credits_balance FROM users WHERE id = $1`},
	} {
		stmt, err := db.SQL.PrepareContext(ctx, s.query)
		if err != nil {
			r.Close()
			return nil, fmt.Errorf("preparing %q: %w", s.query, err)
		}
		*s.into = stmt
	}
	return r, nil
}

func (r *rawStore) Close() {
	for _, s := range []*sql.Stmt{r.lock, r.insertTxn, r.insertPosting, r.updateBalance, r.selectBalance} {
		if s != nil {
			s.Close()
		}
	}
}

// errEmpty is a baseline spend refused for want of credits: it must never
// happen in a run (the account is granted far more than a run can spend).
var errEmpty = errors.New("baseline account is empty")

// spend is B1: BEGIN; lock the user; insert a transaction and its
// postings; update the balance; COMMIT.
func (r *rawStore) spend(ctx context.Context, userID string) error {
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var balance int64
	if err := tx.StmtContext(ctx, r.lock).QueryRowContext(ctx, userID).Scan(&balance); err != nil {
		return err
	}
	if balance < 1 {
		return errEmpty
	}
	now := time.Now().UTC()
	txnID := pulid.New("txn")
	if _, err := tx.StmtContext(ctx, r.insertTxn).ExecContext(ctx, txnID, now, userID); err != nil {
		return err
	}
	if _, err := tx.StmtContext(ctx, r.insertPosting).ExecContext(ctx,
		pulid.New("led"), now, txnID, "user:"+userID, userID, balance-1, pulid.New("led")); err != nil {
		return err
	}
	if _, err := tx.StmtContext(ctx, r.updateBalance).ExecContext(ctx, balance-1, userID); err != nil {
		return err
	}
	return tx.Commit()
}

// rawSpendOp and rawReadOp adapt the baselines to the runner.
func rawSpendOp(r *rawStore, userID string) op {
	return func(ctx context.Context) error { return r.spend(ctx, userID) }
}

// rawReadOp is W3's baseline: the raw balance read.
func rawReadOp(r *rawStore, userID string, want int64) op {
	return func(ctx context.Context) error {
		var balance int64
		if err := r.selectBalance.QueryRowContext(ctx, userID).Scan(&balance); err != nil {
			return err
		}
		if balance != want {
			return fmt.Errorf("raw balance %d, want %d", balance, want)
		}
		return nil
	}
}
