package ledger_test

import (
	"context"
	"testing"
	"time"

	"github.com/tally-billing/tally/ent/credittransaction"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/testdb"
)

// history makes a user's account move at known times, one step a minute
// from the clock's start: grant 100 (t0), spend 30 (t1), purchase 50 (t2),
// revoke 20 (t3), reserve 10 (t4, no balance change), refund clawback of
// the purchase's 50 (t5).
func history(t *testing.T, e *env) (userID string, times []time.Time) {
	t.Helper()
	ctx := context.Background()
	u := e.user("alice")
	step := func() { times = append(times, e.clock.Now()); e.clock.Advance(time.Minute) }
	e.grant(u.ID, 100)
	step()
	if _, err := e.l.Spend(ctx, service, ledger.SpendRequest{UserID: u.ID, Amount: 30, IdempotencyKey: e.key()}); err != nil {
		t.Fatal(err)
	}
	step()
	p := e.purchase(u.ID, 50)
	step()
	if _, err := e.l.Revoke(ctx, admin, ledger.RevokeRequest{UserID: u.ID, Amount: 20, Reason: "r", IdempotencyKey: e.key()}); err != nil {
		t.Fatal(err)
	}
	step()
	if _, err := e.l.Reserve(ctx, service, ledger.ReserveRequest{UserID: u.ID, Amount: 10, TTLSeconds: seconds(time.Hour), IdempotencyKey: e.key()}); err != nil {
		t.Fatal(err)
	}
	step()
	if _, err := e.l.Clawback(ctx, stripe, ledger.ClawbackRequest{PaymentID: p.ID, Amount: 50, IdempotencyKey: e.key()}); err != nil {
		t.Fatal(err)
	}
	step()
	e.check()
	return u.ID, times
}

func TestBalanceAt(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		id, at := history(t, e)
		// Balance after each step: 100, 70, 120, 100, 100, 50.
		want := []int64{100, 70, 120, 100, 100, 50}
		for i, ts := range at {
			prev := int64(0)
			if i > 0 {
				prev = want[i-1]
			}
			for _, probe := range []struct {
				at   time.Time
				want int64
			}{
				{ts, want[i]}, // a transaction's own moment includes it
				{ts.Add(30 * time.Second), want[i]},
				{ts.Add(-time.Microsecond), prev},
			} {
				got, err := e.l.BalanceAt(ctx, id, probe.at)
				if err != nil || got != probe.want {
					t.Fatalf("BalanceAt(%s) = %d, %v; want %d", probe.at, got, err, probe.want)
				}
			}
		}
		if got, err := e.l.BalanceAt(ctx, id, at[0].Add(-24*time.Hour)); err != nil || got != 0 {
			t.Fatalf("before any transaction: %d, %v", got, err)
		}
		if got, err := e.l.BalanceAt(ctx, id, e.clock.Now()); err != nil || got != e.balance(id).Balance {
			t.Fatalf("now: %d, %v; cached balance %d", got, err, e.balance(id).Balance)
		}
		before := e.snapshot()
		_, err := e.l.BalanceAt(ctx, id, e.clock.Now().Add(time.Nanosecond))
		e.refused(err, apperr.InvalidArgument, before)
		_, err = e.l.BalanceAt(ctx, id, ledger.EarliestTime.Add(-time.Nanosecond))
		e.refused(err, apperr.InvalidArgument, before)
		if got, err := e.l.BalanceAt(ctx, id, ledger.EarliestTime); err != nil || got != 0 {
			t.Fatalf("at the earliest time: %d, %v", got, err)
		}
	})
}

func TestStatement(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		id, at := history(t, e)
		statement := func(from, to time.Time) ledger.Statement {
			t.Helper()
			st, err := e.l.Statement(ctx, id, from, to)
			if err != nil {
				t.Fatalf("Statement(%s, %s): %v", from, to, err)
			}
			var sum int64
			for _, k := range st.Totals {
				sum += k.Amount
			}
			if st.OpeningBalance+sum != st.ClosingBalance {
				t.Fatalf("opening %d + movements %d != closing %d (%+v)", st.OpeningBalance, sum, st.ClosingBalance, st)
			}
			for _, bound := range []struct {
				at  time.Time
				got int64
			}{{from, st.OpeningBalance}, {to, st.ClosingBalance}} {
				want, err := e.l.BalanceAt(ctx, id, bound.at.Add(-time.Microsecond))
				if err != nil || want != bound.got {
					t.Fatalf("a balance of the statement is %d; BalanceAt just before %s is %d (%v)", bound.got, bound.at, want, err)
				}
			}
			return st
		}
		totals := func(st ledger.Statement) map[credittransaction.Kind][2]int64 {
			m := map[credittransaction.Kind][2]int64{}
			for _, k := range st.Totals {
				m[k.Kind] = [2]int64{k.Transactions, k.Amount}
			}
			return m
		}

		// The whole history.
		all := statement(at[0].Add(-time.Hour), e.clock.Now())
		if all.OpeningBalance != 0 || all.ClosingBalance != 50 {
			t.Fatalf("whole history: %+v", all)
		}
		got := totals(all)
		want := map[credittransaction.Kind][2]int64{
			credittransaction.KindGrant: {1, 100}, credittransaction.KindSpend: {1, -30},
			credittransaction.KindPurchase: {1, 50}, credittransaction.KindRevoke: {1, -20},
			credittransaction.KindHold: {1, 0}, credittransaction.KindRefundClawback: {1, -50},
		}
		if len(got) != len(want) {
			t.Fatalf("totals %v; want %v", got, want)
		}
		for k, w := range want {
			if got[k] != w {
				t.Fatalf("totals %v; want %v", got, want)
			}
		}
		for i := 1; i < len(all.Totals); i++ {
			if all.Totals[i-1].Kind >= all.Totals[i].Kind {
				t.Fatalf("totals not in kind order: %+v", all.Totals)
			}
		}

		// Half-open: [at1, at3) holds the spend and the purchase, not the
		// revocation stamped exactly at3.
		mid := statement(at[1], at[3])
		if mid.OpeningBalance != 100 || mid.ClosingBalance != 120 || len(mid.Totals) != 2 {
			t.Fatalf("[t1, t3): %+v", mid)
		}
		// Consecutive periods add up: [at3, at5) starts where it ended.
		if next := statement(at[3], at[5]); next.OpeningBalance != mid.ClosingBalance || next.ClosingBalance != 100 {
			t.Fatalf("[t3, t5): %+v", next)
		}

		// No movements: between two steps, an empty period, and before the
		// first transaction.
		for _, p := range [][2]time.Time{
			{at[1].Add(time.Second), at[2]},
			{at[2], at[2]},
			{at[0].Add(-time.Hour), at[0]},
		} {
			if st := statement(p[0], p[1]); len(st.Totals) != 0 || st.OpeningBalance != st.ClosingBalance {
				t.Fatalf("[%s, %s) should have no movements: %+v", p[0], p[1], st)
			}
		}

		// Refusals change nothing.
		before := e.snapshot()
		_, err := e.l.Statement(ctx, id, at[2], at[1])
		e.refused(err, apperr.InvalidArgument, before)
		_, err = e.l.Statement(ctx, id, at[0], e.clock.Now().Add(time.Second))
		e.refused(err, apperr.InvalidArgument, before)
		_, err = e.l.Statement(ctx, id, time.Time{}, at[0])
		e.refused(err, apperr.InvalidArgument, before)
	})
}
