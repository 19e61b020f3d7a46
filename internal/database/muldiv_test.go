package database_test

import (
	"math/big"
	"testing"

	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/testdb"
)

// TestMulDivSQLIsExact: DB.MulDiv's SQL gives ⌊a·b/c⌋ exactly on each
// database where a·b is far past a BIGINT (SQLite's own arithmetic would
// answer a rounded float), and fails rather than answer a wrong number.
func TestMulDivSQLIsExact(t *testing.T) {
	testdb.EachEmpty(t, func(t *testing.T, db *database.DB) {
		const m = 1<<53 - 1
		for _, tc := range [][3]int64{
			{1_000_000_000_000, 50_000_000, 100_000_000},
			{m, m - 1, m}, {m, 1, 2}, {m, 2, 3}, {1, m - 1, m}, {3, m - 1, m}, {0, m, m}, {7, 3, 2},
		} {
			want := new(big.Int).Mul(big.NewInt(tc[0]), big.NewInt(tc[1]))
			want.Quo(want, big.NewInt(tc[2]))
			var got int64
			q := "SELECT " + db.MulDiv("CAST(? AS BIGINT)", "CAST(? AS BIGINT)", "CAST(? AS BIGINT)")
			if err := db.SQL.QueryRow(db.Rebind(q), tc[0], tc[1], tc[2]).Scan(&got); err != nil || got != want.Int64() {
				t.Errorf("MulDiv(%d, %d, %d) = %d, %v; want %s", tc[0], tc[1], tc[2], got, err, want)
			}
		}
		// A quotient past 64 bits is an error, never a wrapped or rounded value.
		var got int64
		q := "SELECT " + db.MulDiv("CAST(? AS BIGINT)", "CAST(? AS BIGINT)", "CAST(? AS BIGINT)")
		if err := db.SQL.QueryRow(db.Rebind(q), int64(m), int64(m), int64(1)).Scan(&got); err == nil {
			t.Errorf("MulDiv(%d, %d, 1) = %d; want an error", int64(m), int64(m), got)
		}
	})
}
