package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/testdb"
)

// runJobs starts the server's job workers for the rest of the test.
func (a *api) runJobs() {
	a.t.Helper()
	if a.jobsRunning {
		return
	}
	a.jobsRunning = true
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.srv.RunJobs(ctx, 5*time.Second) }()
	a.t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			a.t.Errorf("job workers: %v", err)
		}
	})
}

// ledgerReportQuery asks for everything the checks tests look at.
const ledgerReportQuery = `{ ledgerReport { ok users transactions postings lots
	problems { invariant subject detail }
	fullCheck { id status progress ageSeconds problemCount users transactions payments }
	incrementalCheck { id status } } }`

// checkLedger starts a full check as an admin, as a client would, and
// waits for ledgerReport to show it finished.
func (a *api) checkLedger(tok string) result {
	a.t.Helper()
	a.runJobs()
	started := a.ok(tok, `mutation { startLedgerCheck { started check { id status } } }`, nil)
	id := started.get(a.t, "startLedgerCheck", "check", "id")
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := a.ok(tok, ledgerReportQuery, nil)
		if r.get(a.t, "ledgerReport", "fullCheck", "id") == id && r.get(a.t, "ledgerReport", "fullCheck", "status") == "DONE" {
			return r
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("the check %v did not finish: %s", id, r.Data)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLedgerReportAnswersFromStoredChecks: ledgerReport checks nothing
// itself (before any check it says so), startLedgerCheck runs one in the
// background, one at a time, and the report shows its result; a broken
// row is found by the next one. Users and services may do neither.
func TestLedgerReportAnswersFromStoredChecks(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		admin, user := token(t, "root", auth.RoleAdmin), token(t, "alice", auth.RoleUser)
		r := a.ok(admin, ledgerReportQuery, nil)
		if r.get(t, "ledgerReport", "ok") != false || r.get(t, "ledgerReport", "fullCheck") != nil {
			t.Fatalf("before any check: %s", r.Data)
		}
		a.refused(user, `mutation { startLedgerCheck { started } }`, nil, "FORBIDDEN")
		a.refused(token(t, "backend", auth.RoleService), `{ ledgerReport { ok } }`, nil, "FORBIDDEN")

		// Two starts before a worker runs: one check.
		first := a.ok(admin, `mutation { startLedgerCheck { started check { id status } } }`, nil)
		second := a.ok(admin, `mutation { startLedgerCheck { started check { id status } } }`, nil)
		if first.get(t, "startLedgerCheck", "started") != true || second.get(t, "startLedgerCheck", "started") != false ||
			first.get(t, "startLedgerCheck", "check", "id") != second.get(t, "startLedgerCheck", "check", "id") ||
			second.get(t, "startLedgerCheck", "check", "status") != "QUEUED" {
			t.Fatalf("two starts: %s then %s", first.Data, second.Data)
		}

		a.ok(admin, `mutation($u: String!) { grantCredits(input: {externalUserId: $u, amount: 40, reason: "welcome", idempotencyKey: "g1"}) { transaction { id } } }`,
			map[string]any{"u": "alice"})
		a.ok(user, `mutation { spendCredits(input: {amount: 15, idempotencyKey: "s1"}) { transaction { id } } }`, nil)
		r = a.checkLedger(admin)
		if r.get(t, "ledgerReport", "ok") != true || r.get(t, "ledgerReport", "transactions") != float64(2) ||
			r.get(t, "ledgerReport", "postings") != float64(4) || r.get(t, "ledgerReport", "lots") != float64(1) ||
			r.get(t, "ledgerReport", "fullCheck", "progress") != float64(1) {
			t.Fatalf("healthy ledger: %s", r.Data)
		}

		testdb.BreakNewestUserPosting(t, db)
		r = a.checkLedger(admin)
		if r.get(t, "ledgerReport", "ok") != false || r.get(t, "ledgerReport", "fullCheck", "problemCount") == float64(0) {
			t.Fatalf("a broken posting was not found: %s", r.Data)
		}
		found := map[string]bool{}
		for _, p := range r.get(t, "ledgerReport", "problems").([]any) {
			found[p.(map[string]any)["invariant"].(string)] = true
		}
		if !found["unbalanced_transaction"] || !found["balance_mismatch"] {
			t.Fatalf("problems: %s", r.Data)
		}
	})
}
