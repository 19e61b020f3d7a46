package ledger

import (
	"fmt"
	"math/bits"
)

// MulDiv returns ⌊a·b/c⌋ exactly, for a, b ≥ 0 and c > 0. Proportional money
// computations go through it: a·b of two amounts up to MaxAmount needs 106
// bits, so the product is kept in 128 bits and never wraps. It fails, rather
// than answer a wrong number, when an argument is out of its range or the
// quotient does not fit in an int64.
func MulDiv(a, b, c int64) (int64, error) {
	if a < 0 || b < 0 || c <= 0 {
		return 0, fmt.Errorf("ledger: %d·%d/%d: arguments out of range", a, b, c)
	}
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	// Div64 would panic on a quotient of 64 bits or more: hi < c is exactly
	// the condition for it to fit.
	if hi >= uint64(c) {
		return 0, fmt.Errorf("ledger: %d·%d/%d does not fit in 64 bits", a, b, c)
	}
	q, _ := bits.Div64(hi, lo, uint64(c))
	if q > 1<<63-1 {
		return 0, fmt.Errorf("ledger: %d·%d/%d does not fit in an int64", a, b, c)
	}
	return int64(q), nil
}
