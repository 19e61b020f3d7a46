package database

import (
	"database/sql/driver"
	"fmt"
	"math/big"
	"sync"

	"entgo.io/ent/dialect"
	"modernc.org/sqlite"
)

// MulDiv is SQL for ⌊a·b/c⌋ (a, b ≥ 0, c > 0) computed exactly, for checks
// that recompute a proportional amount: a·b of two amounts up to 2^53 does
// not fit in a BIGINT. PostgreSQL computes it in NUMERIC; SQLite, whose
// integer arithmetic silently turns to floating point on overflow, calls
// tally_mul_div, registered by Open. a, b and c are SQL expressions.
func (d *DB) MulDiv(a, b, c string) string {
	if d.Dialect == dialect.Postgres {
		return fmt.Sprintf("CAST(div(CAST(%s AS NUMERIC) * %s, %s) AS BIGINT)", a, b, c)
	}
	return fmt.Sprintf("tally_mul_div(%s, %s, %s)", a, b, c)
}

var (
	registerSQLiteOnce sync.Once
	registerSQLiteErr  error
)

// registerSQLiteFunctions makes Tally's SQL functions available to every
// SQLite connection opened afterwards (the driver keeps them globally).
func registerSQLiteFunctions() error {
	registerSQLiteOnce.Do(func() {
		registerSQLiteErr = sqlite.RegisterDeterministicScalarFunction("tally_mul_div", 3, sqliteMulDiv)
	})
	return registerSQLiteErr
}

// sqliteMulDiv is tally_mul_div. It works in arbitrary precision (math/big)
// on purpose: the code it checks computes the same quotient in 128-bit
// words, and two methods agreeing is the point of a check. NULL in, NULL
// out; anything else out of range is an error, never a wrong number.
func sqliteMulDiv(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
	var n [3]int64
	for i, v := range args {
		switch v := v.(type) {
		case nil:
			return nil, nil
		case int64:
			n[i] = v
		default:
			return nil, fmt.Errorf("tally_mul_div: argument %d is a %T, not an integer", i+1, v)
		}
	}
	if n[0] < 0 || n[1] < 0 || n[2] <= 0 {
		return nil, fmt.Errorf("tally_mul_div(%d, %d, %d): arguments out of range", n[0], n[1], n[2])
	}
	q := new(big.Int).Mul(big.NewInt(n[0]), big.NewInt(n[1]))
	q.Quo(q, big.NewInt(n[2]))
	if !q.IsInt64() {
		return nil, fmt.Errorf("tally_mul_div(%d, %d, %d) does not fit in 64 bits", n[0], n[1], n[2])
	}
	return q.Int64(), nil
}
