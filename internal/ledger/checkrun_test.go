package ledger_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/ledgercheck"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/testdb"
)

// chunkedEnv is a ledger whose checks read two subjects a round, so that a
// handful of users make many rounds.
func chunkedEnv(t *testing.T, db *database.DB, users int) (*env, *ledger.Service) {
	e := newEnv(t, db)
	for i := range users {
		u := e.user(fmt.Sprintf("user-%d", i))
		e.grant(u.ID, int64(10+i))
	}
	return e, ledger.New(db, ledger.WithClock(e.clock.Now), ledger.WithCheckChunkSize(2))
}

// TestFullCheckRunResumes: a run interrupted part-way (its row says how
// far it got, as a process that died would have left it) continues after
// its cursor and counts each subject once; a finished run is left alone.
func TestFullCheckRunResumes(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		_, l := chunkedEnv(t, db, 7)
		users := db.Ent.User.Query().Order(ent.Asc("id")).IDsX(ctx)
		// Three users checked (with their three lots), then the process died.
		run := db.Ent.LedgerCheck.Create().SetKind(ledgercheck.KindFULL).SetStatus(ledgercheck.StatusRUNNING).
			SetPhase(string(ledger.Users)).SetCursor(users[2]).SetUsers(3).SetLots(3).SetChecked(3).SaveX(ctx)
		if err := l.RunFullCheck(ctx, run.ID, nil); err != nil {
			t.Fatal(err)
		}
		done := db.Ent.LedgerCheck.GetX(ctx, run.ID)
		if done.Status != ledgercheck.StatusDONE || done.Users != 7 || done.Lots != 7 || done.Transactions != 7 ||
			done.Postings != 14 || done.ProblemCount != 0 || done.FinishedAt == nil {
			t.Fatalf("resumed run: %+v", done)
		}
		// Run again (a job that ran twice): nothing changes.
		if err := l.RunFullCheck(ctx, run.ID, nil); err != nil {
			t.Fatal(err)
		}
		if again := db.Ent.LedgerCheck.GetX(ctx, run.ID); again.Users != 7 || !again.FinishedAt.Equal(*done.FinishedAt) {
			t.Fatalf("a finished run was redone: %+v", again)
		}
	})
}

// TestCheckKeepsBoundedProblems: a ledger broken everywhere is counted in
// full, but only the first MaxKeptProblems are kept.
func TestCheckKeepsBoundedProblems(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		_, l := chunkedEnv(t, db, ledger.MaxKeptProblems+20)
		if _, err := db.SQL.ExecContext(ctx, `UPDATE users SET credits_balance = credits_balance + 1`); err != nil {
			t.Fatal(err)
		}
		var seen []ledger.Progress
		r, err := l.CheckWithProgress(ctx, func(p ledger.Progress) { seen = append(seen, p) })
		if err != nil {
			t.Fatal(err)
		}
		// Each user: balance_mismatch and lots_and_balance_disagree.
		want := int64(2 * (ledger.MaxKeptProblems + 20))
		if r.ProblemCount != want || len(r.Problems) != ledger.MaxKeptProblems || r.OK() {
			t.Fatalf("%d problems counted, %d kept; want %d and %d", r.ProblemCount, len(r.Problems), want, ledger.MaxKeptProblems)
		}
		// Two subjects a round: a progress report per round, in order.
		if n := len(seen); n < 120 || seen[0].Users != 2 || seen[n-1].Transactions != r.Transactions {
			t.Fatalf("%d progress reports, first %+v", n, seen[0].Report)
		}
	})
}

// TestIncrementalCheckCostsWhatChanged: an incremental run checks the
// transactions made since the previous one, their users and payments, and
// nothing else; a posting broken behind the ledger's back is found by the
// run whose window holds it.
func TestIncrementalCheckCostsWhatChanged(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		// A clock ahead of the ids' time by the lag an incremental run keeps
		// behind the present: its window ends now.
		e := newEnv(t, db)
		ahead := func() time.Time { return time.Now().Add(ledger.IncrementalLag + time.Millisecond) }
		l := ledger.New(db, ledger.WithClock(ahead), ledger.WithCheckChunkSize(2))
		for i := range 5 {
			e.grant(e.user(fmt.Sprintf("user-%d", i)).ID, 10)
		}
		first, err := l.RunIncrementalCheck(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if first.Status != ledgercheck.StatusDONE || first.Transactions != 5 || first.Users != 5 || first.ProblemCount != 0 {
			t.Fatalf("first run: %+v", first)
		}
		quiet, err := l.RunIncrementalCheck(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if quiet.Transactions != 0 || quiet.Users != 0 || quiet.FromID != first.ThroughID {
			t.Fatalf("a run with nothing new checked %+v", quiet)
		}

		time.Sleep(2 * time.Millisecond) // the grant's id after the quiet run's window
		u := e.user("late")
		e.grant(u.ID, 7)
		testdb.BreakNewestUserPosting(t, db)
		time.Sleep(2 * time.Millisecond) // the next run's window ends after the grant's id
		found, err := l.RunIncrementalCheck(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		kinds := map[string]bool{}
		for _, p := range found.Problems {
			kinds[p.Invariant] = true
		}
		if found.Transactions != 1 || found.Users != 1 || !kinds["unbalanced_transaction"] || !kinds["balance_mismatch"] {
			t.Fatalf("the broken posting was not found: %+v", found)
		}

		// The next run's window does not hold it, but what was found stands
		// until a full check looks again.
		time.Sleep(2 * time.Millisecond)
		if after, err := l.RunIncrementalCheck(ctx, nil); err != nil || after.ProblemCount != 0 {
			t.Fatalf("the next run: %+v %v", after, err)
		}
		latest, err := l.Latest(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(latest.Findings) != 1 || latest.Findings[0].ID != found.ID || latest.Incremental.ProblemCount != 0 {
			t.Fatalf("findings %v, latest incremental %+v", latest.Findings, latest.Incremental)
		}
	})
}
