package database

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"entgo.io/ent/dialect"
	entsql "entgo.io/ent/dialect/sql"

	"github.com/tally-billing/tally/ent"
)

// BeginTx begins one transaction seen two ways: through ent, for the rows
// of Tally's own tables, and as the *sql.Tx that the job queue inserts its
// jobs through, so that a change and the jobs it causes commit together
// or not at all. Committing or rolling back either commits or rolls back
// the one transaction. It begins through Driver, so that whatever wraps
// the driver (the statement counts of tests) sees its statements.
func (db *DB) BeginTx(ctx context.Context) (*ent.Tx, *sql.Tx, error) {
	tx, err := db.Driver.Tx(ctx)
	if err != nil {
		return nil, nil, err
	}
	sqlTx, ok := sqlTxOf(tx)
	if !ok {
		_ = tx.Rollback()
		return nil, nil, errors.New("database: the driver's transaction is not a database/sql one")
	}
	entTx, err := ent.NewClient(ent.Driver(borrowedTx{Driver: db.Driver, tx: tx})).Tx(ctx)
	if err != nil {
		_ = tx.Rollback()
		return nil, nil, fmt.Errorf("database: wrapping a transaction: %w", err)
	}
	return entTx, sqlTx, nil
}

func sqlTxOf(tx dialect.Tx) (*sql.Tx, bool) {
	if debug, ok := tx.(*dialect.DebugTx); ok {
		tx = debug.Tx
	}
	if t, ok := tx.(*entsql.Tx); ok {
		sqlTx, ok := t.Tx.(*sql.Tx)
		return sqlTx, ok
	}
	return nil, false
}

// borrowedTx is a driver whose only transaction is one already begun;
// outside it (the rows a transaction returned, once it has committed) it
// is the driver it wraps.
type borrowedTx struct {
	dialect.Driver
	tx dialect.Tx
}

func (d borrowedTx) Tx(context.Context) (dialect.Tx, error) { return d.tx, nil }
