package ledger_test

import (
	"context"
	"math/big"
	"math/rand/v2"
	"testing"

	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/testdb"
)

// floorMulDiv is ⌊a·b/c⌋ in arbitrary precision: the reference.
func floorMulDiv(a, b, c int64) *big.Int {
	q := new(big.Int).Mul(big.NewInt(a), big.NewInt(b))
	return q.Quo(q, big.NewInt(c))
}

// TestMulDivIsExact compares MulDiv with arbitrary precision at the edges
// of what the API accepts (amounts up to MaxAmount, where a·b needs 106
// bits) and on random values, and checks that what cannot fit is an error.
func TestMulDivIsExact(t *testing.T) {
	const m = ledger.MaxAmount
	cases := [][3]int64{
		{1_000_000_000_000, 50_000_000, 100_000_000}, // the review's refund: 10^12 credits, half of 10^8 refunded
		{m, m - 1, m}, {m, 1, m}, {1, m - 1, m}, {m, m, m}, {m, 1, 2}, {m, 2, 3}, {3, m - 1, m},
		{m, m, 1}, {0, m, 1}, {m, 0, m}, {1<<63 - 1, 1, 1}, {1<<63 - 1, 1<<63 - 1, 1<<63 - 1},
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 10_000 {
		c := 1 + r.Int64N(m)
		cases = append(cases, [3]int64{r.Int64N(m + 1), r.Int64N(c), c})
	}
	for _, tc := range cases {
		want := floorMulDiv(tc[0], tc[1], tc[2])
		got, err := ledger.MulDiv(tc[0], tc[1], tc[2])
		switch {
		case !want.IsInt64():
			if err == nil {
				t.Errorf("MulDiv(%d, %d, %d) = %d; the quotient %s does not fit and should be an error", tc[0], tc[1], tc[2], got, want)
			}
		case err != nil || got != want.Int64():
			t.Errorf("MulDiv(%d, %d, %d) = %d, %v; want %s", tc[0], tc[1], tc[2], got, err, want)
		}
	}
	for _, bad := range [][3]int64{{-1, 1, 1}, {1, -1, 1}, {1, 1, 0}, {1, 1, -1}} {
		if got, err := ledger.MulDiv(bad[0], bad[1], bad[2]); err == nil {
			t.Errorf("MulDiv(%d, %d, %d) = %d; want an error", bad[0], bad[1], bad[2], got)
		}
	}
}

// TestDebtStaysWithinMaxAmount: a balance may not go below -MaxAmount, the
// mirror of the bound credits already had. Two purchases of MaxAmount
// credits, both spent, then both clawed back would leave a debt no JSON
// client reads exactly (and, repeated, one that wraps an int64): the
// clawback that would cross the bound is refused and changes nothing.
func TestDebtStaysWithinMaxAmount(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		u := e.user("alice")
		var bought []string
		for i := range 2 {
			bought = append(bought, e.purchase(u.ID, ledger.MaxAmount).ID)
			if _, err := e.l.Spend(ctx, service, ledger.SpendRequest{UserID: u.ID, Amount: ledger.MaxAmount, IdempotencyKey: e.key()}); err != nil {
				t.Fatalf("spend %d: %v", i, err)
			}
		}
		res, err := e.l.Clawback(ctx, stripe, ledger.ClawbackRequest{PaymentID: bought[0], Amount: ledger.MaxAmount, IdempotencyKey: e.key()})
		if err != nil || res.Balance != -ledger.MaxAmount {
			t.Fatalf("a debt of exactly MaxAmount: %+v %v", res, err)
		}
		before := e.snapshot()
		_, err = e.l.Clawback(ctx, stripe, ledger.ClawbackRequest{PaymentID: bought[1], Amount: 1, IdempotencyKey: e.key()})
		e.refused(err, apperr.InvalidArgument, before)
		if b := e.balance(u.ID); b.Balance != -ledger.MaxAmount {
			t.Fatalf("balance %d after the refused clawback", b.Balance)
		}
		e.check()
	})
}
