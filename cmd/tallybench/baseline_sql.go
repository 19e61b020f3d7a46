package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"entgo.io/ent/dialect"

	"github.com/tally-billing/tally/internal/database"
)

// sqlStore runs the baselines through database/sql with prepared
// statements: SQLite's, and PostgreSQL's when --baseline-driver sql asks
// for the driver Tally itself uses (pgx's stdlib adapter).
type sqlStore struct {
	db      *database.DB
	dialect string
	stmts   map[string]*sql.Stmt
}

func newSQLStore(ctx context.Context, db *database.DB) (*sqlStore, error) {
	s := &sqlStore{db: db, dialect: db.Dialect, stmts: map[string]*sql.Stmt{}}
	lock := sqlLock
	if db.Dialect == dialect.Postgres {
		// SQLite has no FOR UPDATE; its connections BEGIN IMMEDIATE (the
		// _txlock DSN setting), which takes the database's write lock at
		// BEGIN, as Tally's own transactions do.
		lock += ` FOR UPDATE`
	}
	queries := map[string]string{
		"lock": lock, "insertSpend": sqlInsertSpend, "insertPosting": sqlInsertPosting,
		"updateBalance": sqlUpdateBalance, "selectBalance": sqlSelectBalance,
		"pageFirst": sqlPageFirst, "pageAfter": sqlPageAfter,
		"insertEvent": sqlInsertEvent, "payPayment": sqlPayPayment, "credit": sqlCredit,
		"insertPurchase": sqlInsertPurchase, "insertLot": sqlInsertLot, "insertPurchasePostings": sqlInsertPurchasePostings,
	}
	if db.Dialect == dialect.Postgres {
		queries["spendCTE"] = sqlSpendCTE
	} else {
		queries["decrement"] = sqlDecrement
	}
	for name, q := range queries {
		stmt, err := db.SQL.PrepareContext(ctx, q)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("preparing the baseline's %s: %w", name, err)
		}
		s.stmts[name] = stmt
	}
	return s, nil
}

func (s *sqlStore) Close() {
	for _, st := range s.stmts {
		st.Close()
	}
}

func (s *sqlStore) in(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.db.SQL.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

func (s *sqlStore) st(ctx context.Context, tx *sql.Tx, name string) *sql.Stmt {
	return tx.StmtContext(ctx, s.stmts[name])
}

func (s *sqlStore) spendLocked(ctx context.Context, userID string) error {
	return s.in(ctx, func(tx *sql.Tx) error {
		var balance int64
		if err := s.st(ctx, tx, "lock").QueryRowContext(ctx, userID).Scan(&balance); err != nil {
			return err
		}
		if balance < 1 {
			return errEmpty
		}
		a := newSpendArgs()
		if _, err := s.st(ctx, tx, "insertSpend").ExecContext(ctx, a.txnID, a.now, userID); err != nil {
			return err
		}
		if _, err := s.st(ctx, tx, "insertPosting").ExecContext(ctx,
			a.led1, a.now, a.txnID, "user:"+userID, userID, balance-1, a.led2); err != nil {
			return err
		}
		_, err := s.st(ctx, tx, "updateBalance").ExecContext(ctx, balance-1, userID)
		return err
	})
}

func (s *sqlStore) spendStatement(ctx context.Context, userID string) error {
	a := newSpendArgs()
	if s.dialect == dialect.Postgres {
		res, err := s.stmts["spendCTE"].ExecContext(ctx, userID, a.txnID, a.led1, a.led2, a.now)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n != 2 {
			return errors.Join(errEmpty, err)
		}
		return nil
	}
	// SQLite cannot put DML in a CTE: the closest is one (immediate)
	// transaction whose guarded UPDATE … RETURNING both checks and takes
	// the credit, then the inserts: three statements instead of B1's four.
	return s.in(ctx, func(tx *sql.Tx) error {
		var after int64
		err := s.st(ctx, tx, "decrement").QueryRowContext(ctx, userID).Scan(&after)
		if errors.Is(err, sql.ErrNoRows) {
			return errEmpty
		}
		if err != nil {
			return err
		}
		if _, err := s.st(ctx, tx, "insertSpend").ExecContext(ctx, a.txnID, a.now, userID); err != nil {
			return err
		}
		_, err = s.st(ctx, tx, "insertPosting").ExecContext(ctx,
			a.led1, a.now, a.txnID, "user:"+userID, userID, after, a.led2)
		return err
	})
}

func (s *sqlStore) balance(ctx context.Context, userID string) (int64, error) {
	var b int64
	err := s.stmts["selectBalance"].QueryRowContext(ctx, userID).Scan(&b)
	return b, err
}

func (s *sqlStore) page(ctx context.Context, userID string, d depthCursor) ([]string, error) {
	var rows *sql.Rows
	var err error
	if d.depth == 0 {
		rows, err = s.stmts["pageFirst"].QueryContext(ctx, userID)
	} else {
		rows, err = s.stmts["pageAfter"].QueryContext(ctx, userID, d.rawAt, d.rawID)
	}
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return pageIDs(rows)
}

func (s *sqlStore) completeCheckout(ctx context.Context, eventID, paymentID string) (bool, error) {
	applied := false
	err := s.in(ctx, func(tx *sql.Tx) error {
		applied = false
		a := newPurchaseArgs()
		res, err := s.st(ctx, tx, "insertEvent").ExecContext(ctx, a.eventRowID, eventID, a.now, paymentID)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return err // a duplicate: recorded before, nothing to do
		}
		var userID string
		var credits, balance int64
		err = s.st(ctx, tx, "payPayment").QueryRowContext(ctx, paymentID, a.now).Scan(&userID, &credits)
		if errors.Is(err, sql.ErrNoRows) {
			return errNotPending
		}
		if err != nil {
			return err
		}
		if err := s.st(ctx, tx, "credit").QueryRowContext(ctx, userID, credits).Scan(&balance); err != nil {
			return err
		}
		if _, err := s.st(ctx, tx, "insertPurchase").ExecContext(ctx, a.txnID, a.now, credits, userID, paymentID); err != nil {
			return err
		}
		if _, err := s.st(ctx, tx, "insertLot").ExecContext(ctx, a.lotID, a.now, credits, a.txnID, paymentID, userID); err != nil {
			return err
		}
		if _, err := s.st(ctx, tx, "insertPurchasePostings").ExecContext(ctx,
			a.led1, a.now, a.txnID, "user:"+userID, credits, a.lotID, userID, balance, a.led2, -credits); err != nil {
			return err
		}
		applied = true
		return nil
	})
	return applied && err == nil, err
}
