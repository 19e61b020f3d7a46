package graph

import (
	"testing"
	"time"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/ledgercheck"
	"github.com/tally-billing/tally/ent/schema"
	"github.com/tally-billing/tally/internal/ledger"
)

// TestLedgerReportKeepsFindings: ok needs a clean finished full check and
// no incremental check since that found anything; what an earlier
// incremental check found stays listed after later ones found nothing.
func TestLedgerReportKeepsFindings(t *testing.T) {
	now := time.Now()
	full := &ent.LedgerCheck{ID: "lck_full", Kind: ledgercheck.KindFULL, Status: ledgercheck.StatusDONE, CreatedAt: now.Add(-time.Hour), Users: 3}
	quiet := &ent.LedgerCheck{ID: "lck_quiet", Kind: ledgercheck.KindINCREMENTAL, Status: ledgercheck.StatusDONE, CreatedAt: now}
	found := &ent.LedgerCheck{ID: "lck_found", Kind: ledgercheck.KindINCREMENTAL, Status: ledgercheck.StatusDONE, CreatedAt: now.Add(-time.Minute),
		ProblemCount: 1, Problems: []schema.CheckProblem{{Invariant: "balance_mismatch", Subject: "usr_x", Detail: "balance 1, postings sum to 2"}}}

	clean := ledgerReport(ledger.LatestChecks{Full: full, LastFinishedFull: full, Incremental: quiet}, now)
	if !clean.Ok || clean.Users != 3 || len(clean.Problems) != 0 {
		t.Fatalf("clean: %+v", clean)
	}
	r := ledgerReport(ledger.LatestChecks{Full: full, LastFinishedFull: full, Incremental: quiet, Findings: []*ent.LedgerCheck{found}}, now)
	if r.Ok || len(r.Problems) != 1 || r.Problems[0].Subject != "usr_x" || r.IncrementalCheck.ID != "lck_quiet" {
		t.Fatalf("with a finding: %+v", r)
	}
	if none := ledgerReport(ledger.LatestChecks{Incremental: quiet}, now); none.Ok {
		t.Fatalf("ok before any full check: %+v", none)
	}
}
