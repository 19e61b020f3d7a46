package jobs_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/jobs"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/payments"
	"github.com/tally-billing/tally/internal/testdb"
)

// start runs q's workers for the rest of the test.
func start(t *testing.T, q *jobs.Queue) {
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- q.Run(ctx, 5*time.Second) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("workers: %v", err)
		}
	})
}

// waitFor polls the latest check runs until ok says they are what the test
// waits for.
func waitFor(t *testing.T, l *ledger.Service, ok func(ledger.LatestChecks) bool) ledger.LatestChecks {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		latest, err := l.Latest(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if ok(latest) {
			return latest
		}
		if time.Now().After(deadline) {
			t.Fatalf("the checks did not get there: %+v", latest)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCheckJobs: the incremental check runs when the workers start and
// then periodically; a full check queued by an admin runs the payments'
// invariants too and finds a payment marked paid whose credits were never
// granted; a second start while it waits returns it.
func TestCheckJobs(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		l := ledger.New(db)
		pay := payments.New(db, l, payments.Config{})
		q, err := jobs.New(db, l, jobs.Config{
			Workers: 2, PollInterval: 20 * time.Millisecond, CheckInterval: time.Hour, Invariants: pay.Invariants(),
		})
		if err != nil {
			t.Fatal(err)
		}
		u := db.Ent.User.Create().SetExternalID("buyer").SaveX(ctx)
		pkg := db.Ent.CreditPackage.Create().SetName("pack").SetCredits(100).SetPriceAmount(500).SetCurrency("usd").SaveX(ctx)
		paid := db.Ent.Payment.Create().SetUserID(u.ID).SetPackageID(pkg.ID).SetAmount(500).
			SetCurrency("usd").SetCredits(100).SetStatus("SUCCEEDED").SaveX(ctx)

		run, started, err := q.StartFullCheck(ctx, "admin:usr_test")
		if err != nil || !started {
			t.Fatalf("start: %v %v", started, err)
		}
		again, started, err := q.StartFullCheck(ctx, "admin:usr_other")
		if err != nil || started || again.ID != run.ID {
			t.Fatalf("second start: %v %v %v, want %s", again, started, err, run.ID)
		}

		start(t, q)
		latest := waitFor(t, l, func(c ledger.LatestChecks) bool {
			return c.LastFinishedFull != nil && c.Incremental != nil
		})
		full := latest.LastFinishedFull
		if full.ID != run.ID || full.Payments != 1 || full.Users != 1 || full.ProblemCount != 1 ||
			full.Problems[0].Invariant != "payment_grant_mismatch" || full.Problems[0].Subject != paid.ID {
			t.Fatalf("full check: %+v", full)
		}
		if latest.Incremental.RequestedBy != "" || latest.Incremental.Status != "DONE" {
			t.Fatalf("incremental check: %+v", latest.Incremental)
		}

		// Once it has finished, a new start is a new run.
		next, started, err := q.StartFullCheck(ctx, "admin:usr_test")
		if err != nil || !started || next.ID == run.ID {
			t.Fatalf("start after a finished run: %v %v %v", next, started, err)
		}
		waitFor(t, l, func(c ledger.LatestChecks) bool {
			return c.LastFinishedFull != nil && c.LastFinishedFull.ID == next.ID
		})
		if n := db.Ent.LedgerCheck.Query().CountX(ctx); n < 3 {
			t.Fatalf("%d runs recorded", n)
		}
	})
}

// TestOneFullCheckAtATime: admins on two replicas (two pools on one
// database) starting checks at once get one run between them.
func TestOneFullCheckAtATime(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		replicas := []*database.DB{db, testdb.Open(t, db.URL)}
		queues := make([]*jobs.Queue, len(replicas))
		for i, r := range replicas {
			q, err := jobs.New(r, ledger.New(r), jobs.Config{})
			if err != nil {
				t.Fatal(err)
			}
			queues[i] = q
		}
		const starts = 8
		type outcome struct {
			id      string
			started bool
			err     error
		}
		results := make(chan outcome, starts)
		for i := range starts {
			go func() {
				run, started, err := queues[i%len(queues)].StartFullCheck(ctx, "admin:usr_test")
				o := outcome{started: started, err: err}
				if run != nil {
					o.id = run.ID
				}
				results <- o
			}()
		}
		ids, started := map[string]bool{}, 0
		for range starts {
			o := <-results
			if o.err != nil {
				t.Fatal(o.err)
			}
			ids[o.id] = true
			if o.started {
				started++
			}
		}
		if len(ids) != 1 || started != 1 {
			t.Fatalf("%d runs, %d started: %v", len(ids), started, ids)
		}
		if n := db.Ent.LedgerCheck.Query().CountX(ctx); n != 1 {
			t.Fatalf("%d runs recorded", n)
		}
	})
}

// TestExpirySweepJob: the periodic sweep, run by the workers, expires a
// lot whose time has come.
func TestExpirySweepJob(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		var ahead atomic.Int64
		clock := func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
		l := ledger.New(db, ledger.WithClock(clock))
		u := db.Ent.User.Create().SetExternalID("holder").SaveX(ctx)
		expires := time.Now().Add(time.Hour)
		admin := ledger.Actor{Kind: ledger.ActorAdmin, ID: "usr_admin"}
		if _, err := l.Grant(ctx, admin, ledger.GrantRequest{UserID: u.ID, Amount: 25, ExpiresAt: &expires, IdempotencyKey: "g1"}); err != nil {
			t.Fatal(err)
		}
		ahead.Store(int64(2 * time.Hour))
		q, err := jobs.New(db, l, jobs.Config{Workers: 1, PollInterval: 20 * time.Millisecond, SweepInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		start(t, q)
		deadline := time.Now().Add(30 * time.Second)
		for db.Ent.User.GetX(ctx, u.ID).CreditsBalance != 0 {
			if time.Now().After(deadline) {
				t.Fatal("the sweep did not expire the lot")
			}
			time.Sleep(20 * time.Millisecond)
		}
		if n := db.Ent.CreditTransaction.Query().CountX(ctx); n != 2 {
			t.Fatalf("%d transactions, want the grant and one expiry", n)
		}
	})
}
