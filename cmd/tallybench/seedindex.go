package main

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// dropSeedIndexes drops the seeded tables' secondary indexes (neither
// unique nor backing a constraint) and returns the statements that make
// them again. Building an index once over the loaded rows is cheaper than
// keeping it up to date row by row; both happen in the seed's transaction,
// so a seed that fails leaves the schema as it was. Primary keys and unique
// indexes stay: the foreign keys and the idempotency records need them
// during the load.
func dropSeedIndexes(ctx context.Context, tx pgx.Tx) ([]string, error) {
	rows, err := tx.Query(ctx, `SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
		  FROM pg_index i
		  JOIN pg_class t ON t.oid = i.indrelid
		  JOIN pg_namespace n ON n.oid = t.relnamespace
		 WHERE n.nspname = current_schema() AND t.relname = ANY($1)
		   AND NOT i.indisunique AND NOT i.indisprimary
		   AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)`, seedTables[:])
	if err != nil {
		return nil, fmt.Errorf("seed: listing indexes: %w", err)
	}
	names, defs, err := scanPairs(rows)
	if err != nil {
		return nil, fmt.Errorf("seed: listing indexes: %w", err)
	}
	for _, name := range names {
		if _, err := tx.Exec(ctx, "DROP INDEX "+name); err != nil {
			return nil, fmt.Errorf("seed: dropping index %s: %w", name, err)
		}
	}
	return defs, nil
}

// createSeedIndexes makes again the indexes dropSeedIndexes dropped.
func createSeedIndexes(ctx context.Context, tx pgx.Tx, defs []string) error {
	for _, def := range defs {
		if _, err := tx.Exec(ctx, def); err != nil {
			return fmt.Errorf("seed: %s: %w", def, err)
		}
	}
	return nil
}

func scanPairs(rows pgx.Rows) (firsts, seconds []string, err error) {
	defer rows.Close()
	for rows.Next() {
		var a, b string
		if err := rows.Scan(&a, &b); err != nil {
			return nil, nil, err
		}
		firsts, seconds = append(firsts, a), append(seconds, b)
	}
	return firsts, seconds, rows.Err()
}
