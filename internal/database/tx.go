package database

import (
	"context"
	"database/sql"
	"fmt"

	"entgo.io/ent/dialect"
	entsql "entgo.io/ent/dialect/sql"

	"github.com/tally-billing/tally/ent"
)

// BeginTx begins one transaction seen two ways: through ent, for the rows
// of Tally's own tables, and as the *sql.Tx that the job queue inserts its
// jobs through, so that a change and the jobs it causes commit together
// or not at all. Committing or rolling back either commits or rolls back
// the one transaction.
func (db *DB) BeginTx(ctx context.Context) (*ent.Tx, *sql.Tx, error) {
	sqlTx, err := db.SQL.BeginTx(ctx, nil)
	if err != nil {
		return nil, nil, err
	}
	drv := borrowedTx{Driver: db.pool, tx: sqlTx}
	entTx, err := ent.NewClient(ent.Driver(drv)).Tx(ctx)
	if err != nil {
		_ = sqlTx.Rollback()
		return nil, nil, fmt.Errorf("database: wrapping a transaction: %w", err)
	}
	return entTx, sqlTx, nil
}

// borrowedTx is a driver whose only transaction is one already begun;
// outside it (the rows a transaction returned, once it has committed) it
// reads through the pool.
type borrowedTx struct {
	*entsql.Driver
	tx *sql.Tx
}

func (d borrowedTx) Tx(context.Context) (dialect.Tx, error) {
	return &entsql.Tx{Conn: entsql.Conn{ExecQuerier: d.tx}, Tx: d.tx}, nil
}
