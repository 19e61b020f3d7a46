package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tally-billing/tally/internal/database"
)

// pgxStore runs PostgreSQL's baselines through pgx directly, as the issue
// asks: a pgxpool whose connections prepare each statement on first use
// and keep it (pgx's default QueryExecModeCacheStatement), so every later
// execution is a bind and execute of a prepared statement, without
// database/sql's layer.
type pgxStore struct {
	pool *pgxpool.Pool
}

func newPgxStore(ctx context.Context, url string, maxConns int) (*pgxStore, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parsing the baseline's PostgreSQL URL: %w", err)
	}
	cfg.MaxConns = int32(maxConns)
	cfg.MinConns = int32(maxConns)
	// The planner settings of Tally's own sessions, so that a baseline and
	// its workload are planned alike (with PostgreSQL's default
	// random_page_cost the first history page walks everyone's newer rows).
	if _, set := cfg.ConnConfig.RuntimeParams["random_page_cost"]; !set {
		cfg.ConnConfig.RuntimeParams["random_page_cost"] = database.DefaultRandomPageCost
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("opening the baseline's pgx pool: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("reaching PostgreSQL for the baselines: %w", err)
	}
	return &pgxStore{pool: pool}, nil
}

func (s *pgxStore) Close() { s.pool.Close() }

func (s *pgxStore) spendLocked(ctx context.Context, userID string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var balance int64
		if err := tx.QueryRow(ctx, sqlLock+` FOR UPDATE`, userID).Scan(&balance); err != nil {
			return err
		}
		if balance < 1 {
			return errEmpty
		}
		a := newSpendArgs()
		if _, err := tx.Exec(ctx, sqlInsertSpend, a.txnID, a.now, userID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, sqlInsertPosting, a.led1, a.now, a.txnID, "user:"+userID, userID, balance-1, a.led2); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, sqlUpdateBalance, balance-1, userID)
		return err
	})
}

func (s *pgxStore) spendStatement(ctx context.Context, userID string) error {
	a := newSpendArgs()
	tag, err := s.pool.Exec(ctx, sqlSpendCTE, userID, a.txnID, a.led1, a.led2, a.now)
	if err != nil {
		return err
	}
	if tag.RowsAffected() != 2 {
		return errEmpty
	}
	return nil
}

func (s *pgxStore) balance(ctx context.Context, userID string) (int64, error) {
	var b int64
	err := s.pool.QueryRow(ctx, sqlSelectBalance, userID).Scan(&b)
	return b, err
}

func (s *pgxStore) page(ctx context.Context, userID string, d depthCursor) ([]string, error) {
	var rows pgx.Rows
	var err error
	if d.depth == 0 {
		rows, err = s.pool.Query(ctx, sqlPageFirst, userID)
	} else {
		rows, err = s.pool.Query(ctx, sqlPageAfter, userID, d.rawAt, d.rawID)
	}
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return pageIDs(rows)
}

func (s *pgxStore) completeCheckout(ctx context.Context, eventID, paymentID string) (bool, error) {
	applied := false
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		applied = false
		a := newPurchaseArgs()
		tag, err := tx.Exec(ctx, sqlInsertEvent, a.eventRowID, eventID, a.now, paymentID)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return nil // a duplicate: recorded before, nothing to do
		}
		var userID string
		var credits, balance int64
		err = tx.QueryRow(ctx, sqlPayPayment, paymentID, a.now).Scan(&userID, &credits)
		if errors.Is(err, pgx.ErrNoRows) {
			return errNotPending
		}
		if err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, sqlCredit, userID, credits).Scan(&balance); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, sqlInsertPurchase, a.txnID, a.now, credits, userID, paymentID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, sqlInsertLot, a.lotID, a.now, credits, a.txnID, paymentID, userID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, sqlInsertPurchasePostings,
			a.led1, a.now, a.txnID, "user:"+userID, credits, a.lotID, userID, balance, a.led2, -credits); err != nil {
			return err
		}
		applied = true
		return nil
	})
	return applied && err == nil, err
}
