package ledger_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/ledger/ledgertest"
	"github.com/tally-billing/tally/internal/testdb"
	"github.com/tally-billing/tally/internal/testwait"
)

// waitQueued waits until n spends wait for the account's next batch.
func waitQueued(t *testing.T, l *ledger.Service, userID string, n int) {
	t.Helper()
	testwait.Until(t, fmt.Sprintf("%d spends queued", n), func() bool { return ledger.QueuedSpends(l, userID) == n })
}

// TestCoalescedBatchKeepsEachSpendApart: spends that queue while every
// batch slot is busy run in one database transaction, and each still gets
// exactly the outcome it would have had alone, in arrival order: the ones
// that fit are spent, one too large is refused without touching the
// others, a key repeated inside the batch is applied once (and replayed, or
// refused as reused when the request differs), and a key used before the
// batch is replayed rather than spent again.
func TestCoalescedBatchKeepsEachSpendApart(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		u := e.user("alice")
		e.grant(u.ID, 100)
		earlier, err := e.l.Spend(ctx, service, ledger.SpendRequest{UserID: u.ID, Amount: 5, IdempotencyKey: "earlier"})
		if err != nil {
			t.Fatal(err)
		}
		carol := e.user("carol")
		e.grant(carol.ID, 10)

		type call struct {
			name   string
			user   string
			amount int64
			key    string
			res    *ledger.Result
			err    error
		}
		calls := []*call{
			{name: "first", amount: 1, key: "k-first"},
			{name: "fits", amount: 10, key: "k-a"},
			{name: "too large", amount: 1000, key: "k-big"},
			{name: "carol's", user: carol.ID, amount: 4, key: "k-carol"},
			{name: "no such user", user: "usr_nobody", amount: 1, key: "k-x"},
			{name: "fits too", amount: 20, key: "k-b"},
			{name: "same key, same request", amount: 10, key: "k-a"},
			{name: "same key, other amount", amount: 11, key: "k-a"},
			{name: "replay of earlier", amount: 5, key: "earlier"},
			{name: "takes the rest", amount: 64, key: "k-c"},
			{name: "one too many", amount: 1, key: "k-d"},
		}
		// Four accounts are held, and a spend from each takes a batch slot;
		// the spends under test then queue, one at a time, so that they keep
		// this order in the batch that runs once the slots free up.
		var held []string
		for i := range ledger.MaxBatchesInFlight {
			h := e.user(fmt.Sprint("held-", i))
			e.grant(h.ID, 100)
			held = append(held, h.ID)
		}
		statsBefore := e.l.Stats()
		release := ledgertest.HoldUsers(t, e.l, held...)
		var bobs, wg sync.WaitGroup
		for i, id := range held {
			bobs.Add(1)
			go func() {
				defer bobs.Done()
				if _, err := e.l.Spend(ctx, service, ledger.SpendRequest{UserID: id, Amount: 1, IdempotencyKey: fmt.Sprint("held-", i)}); err != nil {
					t.Errorf("spend from a held account: %v", err)
				}
			}()
		}
		testwait.Until(t, "the spends from held accounts to take every batch slot", func() bool {
			return ledger.BatchesRunning(e.l) == ledger.MaxBatchesInFlight && ledger.QueuedSpends(e.l, "") == 0
		})
		for i, c := range calls {
			if c.user == "" {
				c.user = u.ID
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.res, c.err = e.l.Spend(ctx, service, ledger.SpendRequest{UserID: c.user, Amount: c.amount, IdempotencyKey: c.key})
			}()
			waitQueued(t, e.l, "", i+1)
		}
		release()
		wg.Wait()
		bobs.Wait()
		batchTransactions := e.l.Stats().Transactions - statsBefore.Transactions

		want := map[string]struct {
			code     apperr.Code
			replayed bool
			balance  int64
		}{
			"first":                  {balance: 94},
			"fits":                   {balance: 84},
			"too large":              {code: apperr.InsufficientCredits},
			"carol's":                {balance: 6},
			"no such user":           {code: apperr.NotFound},
			"fits too":               {balance: 64},
			"same key, same request": {replayed: true, balance: 84},
			"same key, other amount": {code: apperr.IdempotencyKeyReused},
			"replay of earlier":      {replayed: true, balance: 95},
			"takes the rest":         {balance: 0},
			"one too many":           {code: apperr.InsufficientCredits},
		}
		for _, c := range calls {
			w := want[c.name]
			if w.code != "" {
				if apperr.CodeOf(c.err) != w.code {
					t.Errorf("%s: %v, want %s", c.name, c.err, w.code)
				}
				continue
			}
			if c.err != nil {
				t.Errorf("%s: %v", c.name, c.err)
				continue
			}
			if c.res.Replayed != w.replayed || c.res.Balance != w.balance {
				t.Errorf("%s: replayed %v, balance %d; want %v, %d", c.name, c.res.Replayed, c.res.Balance, w.replayed, w.balance)
			}
			if c.res.Transaction == nil || len(c.res.Transaction.Edges.Postings) == 0 {
				t.Errorf("%s: no transaction with postings in the result", c.name)
			}
		}
		if calls[1].err == nil && calls[6].err == nil && calls[1].res.Transaction.ID != calls[6].res.Transaction.ID {
			t.Errorf("a key repeated in the batch made two transactions")
		}
		if calls[8].err == nil && calls[8].res.Transaction.ID != earlier.Transaction.ID {
			t.Errorf("the replay of an earlier key made a new transaction")
		}
		if b := e.balance(u.ID); b.Balance != 0 {
			t.Errorf("balance %d, want 0", b.Balance)
		}
		if b := e.balance(carol.ID); b.Balance != 6 {
			t.Errorf("carol's balance %d, want 6", b.Balance)
		}
		for _, id := range held {
			if b := e.balance(id); b.Balance != 99 {
				t.Errorf("held account's balance %d, want 99", b.Balance)
			}
		}
		var spends int
		if err := db.SQL.QueryRow(`SELECT COUNT(*) FROM credit_transactions WHERE kind = 'SPEND'`).Scan(&spends); err != nil {
			t.Fatal(err)
		}
		// earlier, first, fits, carol's, fits too, takes the rest; and one
		// from each held account
		if want := 6 + ledger.MaxBatchesInFlight; spends != want {
			t.Errorf("%d SPEND transactions, want %d", spends, want)
		}
		// The hold, the held accounts' spends, and one for all the others (a retry is
		// allowed: the earlier key is found by its insert failing).
		if want := uint64(1 + ledger.MaxBatchesInFlight + 1); batchTransactions != want {
			t.Errorf("%d database transactions, want %d: the 11 queued spends were not one batch", batchTransactions, want)
		}
		e.check()
	})
}

// TestCoalescedSpendsAcrossReplicas: two ledgers (two server processes)
// coalescing their own callers on one hot account never overdraw it, and
// apply each key once even when both receive it.
func TestCoalescedSpendsAcrossReplicas(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		u := e.user("alice")
		e.grant(u.ID, 1000)
		ledgers := replicas(t, db)

		const workers, perWorker = 16, 40
		var wg sync.WaitGroup
		var mu sync.Mutex
		ok, short, txns := 0, 0, map[string]bool{}
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range perWorker {
					// Worker pairs share keys, each through a different replica.
					key := fmt.Sprintf("k-%d-%d", w/2, i)
					res, err := ledgers[w%2].Spend(ctx, service, ledger.SpendRequest{UserID: u.ID, Amount: 3, IdempotencyKey: key})
					mu.Lock()
					switch {
					case err == nil:
						if !txns[res.Transaction.ID] {
							ok++
							txns[res.Transaction.ID] = true
						}
					case apperr.CodeOf(err) == apperr.InsufficientCredits:
						short++
					default:
						t.Errorf("spend: %v", err)
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		// 320 distinct keys of 3 credits on 1000: 333 would fit, so all fit.
		if ok != workers/2*perWorker {
			t.Errorf("%d distinct spends applied, want %d (refused: %d)", ok, workers/2*perWorker, short)
		}
		if b := e.balance(u.ID); b.Balance != 1000-3*int64(ok) {
			t.Errorf("balance %d after %d spends of 3", b.Balance, ok)
		}
		e.check()
	})
}
