package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"entgo.io/ent/dialect"

	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/ledger/ledgertest"
	"github.com/tally-billing/tally/internal/testdb"
	"github.com/tally-billing/tally/internal/testwait"
)

// unavailable fails the test unless err is UNAVAILABLE and marked as the
// given outcome (database.ErrOutcomeUnknown or database.ErrNotCommitted).
func unavailable(t *testing.T, what string, err error, outcome error) {
	t.Helper()
	if apperr.CodeOf(err) != apperr.Unavailable || !errors.Is(err, outcome) {
		t.Fatalf("%s: %v; want UNAVAILABLE marked %q", what, err, outcome)
	}
}

// TestCommitWithLostAnswerIsUnavailableAndReplays: when the connection
// drops after COMMIT reached PostgreSQL and before its answer came back,
// the operation (a spend, which goes through the coalescer, and a grant,
// which does not) is answered UNAVAILABLE with its outcome unknown, not
// INTERNAL, and is not run again by the ledger; it did commit, and the
// client's retry with the same key replays it without moving the balance
// again.
func TestCommitWithLostAnswerIsUnavailableAndReplays(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		if db.Dialect != dialect.Postgres {
			t.Skip("SQLite runs in the process: no connection can drop between its COMMIT and the answer")
		}
		e := newEnv(t, db)
		ctx := context.Background()
		u := e.user("alice")
		e.grant(u.ID, 100)
		proxied, proxy := testdb.Proxied(t, db)
		l := ledger.New(proxied)

		proxy.CutAtCommit()
		spend := ledger.SpendRequest{UserID: u.ID, Amount: 30, IdempotencyKey: "spend-cut"}
		_, err := l.Spend(ctx, service, spend)
		unavailable(t, "a spend whose COMMIT lost its answer", err, database.ErrOutcomeUnknown)
		grant := ledger.GrantRequest{UserID: u.ID, Amount: 5, IdempotencyKey: "grant-cut"}
		_, err = l.Grant(ctx, admin, grant)
		unavailable(t, "a grant whose COMMIT lost its answer", err, database.ErrOutcomeUnknown)
		if proxy.Commits() != 2 {
			t.Fatalf("%d COMMITs reached the database, want 2: the ledger ran again a transaction whose outcome was unknown", proxy.Commits())
		}
		if b := e.balance(u.ID); b.Balance != 75 {
			t.Fatalf("balance %d after the cut spend and grant, want 75: both committed", b.Balance)
		}

		proxy.Pass()
		res, err := l.Spend(ctx, service, spend)
		if err != nil || !res.Replayed || res.Balance != 70 {
			t.Fatalf("the spend retried with its key: %+v, %v; want replayed with balance 70", res, err)
		}
		res, err = l.Grant(ctx, admin, grant)
		if err != nil || !res.Replayed || res.Balance != 75 {
			t.Fatalf("the grant retried with its key: %+v, %v; want replayed with balance 75", res, err)
		}
		if b := e.balance(u.ID); b.Balance != 75 {
			t.Fatalf("balance %d after the retries, want 75 (each applied once)", b.Balance)
		}
		e.check()
	})
}

// TestBatchWithLostCommitAnswerIsNotRunAgain: a batch of coalesced spends
// whose COMMIT lost its answer answers every spend UNAVAILABLE with the
// outcome unknown, and is not run again one spend at a time (as a batch
// that failed otherwise is); every spend committed once, and each one's
// retry replays it.
func TestBatchWithLostCommitAnswerIsNotRunAgain(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		if db.Dialect != dialect.Postgres {
			t.Skip("SQLite runs in the process: no connection can drop between its COMMIT and the answer")
		}
		e := newEnv(t, db)
		ctx := context.Background()
		u := e.user("alice")
		e.grant(u.ID, 100)
		proxied, proxy := testdb.Proxied(t, db)
		l := ledger.New(proxied)

		// As in TestCoalescedBatchKeepsEachSpendApart: spends from held
		// accounts take every batch slot, so alice's queue into one batch.
		var held []string
		for i := range ledger.MaxBatchesInFlight {
			h := e.user(fmt.Sprint("held-", i))
			e.grant(h.ID, 10)
			held = append(held, h.ID)
		}
		release := ledgertest.HoldUsers(t, e.l, held...)
		type call struct {
			req ledger.SpendRequest
			err error
		}
		var calls []*call
		for i, id := range held {
			calls = append(calls, &call{req: ledger.SpendRequest{UserID: id, Amount: 1, IdempotencyKey: fmt.Sprint("held-", i)}})
		}
		var wg sync.WaitGroup
		spend := func(c *call) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, c.err = l.Spend(ctx, service, c.req)
			}()
		}
		for _, c := range calls {
			spend(c)
		}
		testwait.Until(t, "the spends from held accounts to take every batch slot", func() bool {
			return ledger.BatchesRunning(l) == ledger.MaxBatchesInFlight && ledger.QueuedSpends(l, "") == 0
		})
		const batched = 3
		for i := range batched {
			c := &call{req: ledger.SpendRequest{UserID: u.ID, Amount: int64(10 * (i + 1)), IdempotencyKey: fmt.Sprint("batched-", i)}}
			calls = append(calls, c)
			spend(c)
		}
		testwait.Until(t, "alice's spends to queue", func() bool { return ledger.QueuedSpends(l, u.ID) == batched })
		proxy.CutAtCommit()
		release()
		wg.Wait()

		for _, c := range calls {
			unavailable(t, "spend "+c.req.IdempotencyKey, c.err, database.ErrOutcomeUnknown)
		}
		// One COMMIT per held account's spend, and one for alice's batch.
		if want := ledger.MaxBatchesInFlight + 1; proxy.Commits() != want {
			t.Fatalf("%d COMMITs reached the database, want %d: the batch whose outcome was unknown ran again", proxy.Commits(), want)
		}
		if b := e.balance(u.ID); b.Balance != 40 {
			t.Fatalf("alice's balance %d, want 40: her batch of 10+20+30 committed", b.Balance)
		}

		proxy.Pass()
		for _, c := range calls {
			res, err := l.Spend(ctx, service, c.req)
			if err != nil || !res.Replayed {
				t.Fatalf("retry of %s: %+v, %v; want replayed", c.req.IdempotencyKey, res, err)
			}
		}
		if b := e.balance(u.ID); b.Balance != 40 {
			t.Fatalf("alice's balance %d after the retries, want 40", b.Balance)
		}
		for _, id := range held {
			if b := e.balance(id); b.Balance != 9 {
				t.Fatalf("a held account's balance %d, want 9", b.Balance)
			}
		}
		e.check()
	})
}

// TestUnreachableDatabaseIsUnavailable: a ledger whose database cannot be
// reached answers UNAVAILABLE, marked as not committed (nothing changed),
// not INTERNAL; the same request later, with the same key, is applied (not
// replayed: there was nothing to replay). On PostgreSQL the fault proxy
// refuses connections and has cut the open ones; on SQLite, where a file
// cannot become unreachable, the ledger's pool is closed.
func TestUnreachableDatabaseIsUnavailable(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		u := e.user("alice")
		e.grant(u.ID, 100)
		var (
			l       *ledger.Service
			restore func() *ledger.Service
		)
		if db.Dialect == dialect.Postgres {
			proxied, proxy := testdb.Proxied(t, db)
			l = ledger.New(proxied)
			// A pooled connection, open before the outage.
			if _, err := l.Balance(ctx, u.ID); err != nil {
				t.Fatal(err)
			}
			proxy.Refuse()
			restore = func() *ledger.Service { proxy.Pass(); return l }
		} else {
			other := testdb.Open(t, db.URL)
			l = ledger.New(other)
			other.Close()
			restore = func() *ledger.Service { return e.l }
		}
		before := e.snapshot()
		spend := ledger.SpendRequest{UserID: u.ID, Amount: 30, IdempotencyKey: "spend-down"}
		_, err := l.Spend(ctx, service, spend)
		unavailable(t, "a spend", err, database.ErrNotCommitted)
		grant := ledger.GrantRequest{UserID: u.ID, Amount: 5, IdempotencyKey: "grant-down"}
		_, err = l.Grant(ctx, admin, grant)
		unavailable(t, "a grant", err, database.ErrNotCommitted)
		if e.snapshot() != before {
			t.Fatal("an operation against an unreachable database changed it")
		}

		l = restore()
		res, err := l.Spend(ctx, service, spend)
		if err != nil || res.Replayed || res.Balance != 70 {
			t.Fatalf("the spend once the database is back: %+v, %v; want applied, balance 70", res, err)
		}
		e.check()
	})
}
