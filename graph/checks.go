package graph

import (
	"context"
	"time"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/ledgercheck"
	"github.com/tally-billing/tally/graph/model"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/ledger"
)

// maxReportedProblems bounds the problems ledgerReport lists: the full
// check's first 100 and the incremental checks' after them.
const maxReportedProblems = 200

// ledgerReport is the latest check runs as the API shows them.
func ledgerReport(l ledger.LatestChecks, now time.Time) *model.LedgerReport {
	out := &model.LedgerReport{
		FullCheck:             checkOf(l.Full, now),
		LastFinishedFullCheck: checkOf(l.LastFinishedFull, now),
		IncrementalCheck:      checkOf(l.Incremental, now),
		Problems:              []*model.LedgerProblem{},
	}
	full := l.LastFinishedFull
	if full != nil && full.Status == ledgercheck.StatusDONE {
		out.Users, out.Transactions = int(full.Users), int(full.Transactions)
		out.Postings, out.Lots = int(full.Postings), int(full.Lots)
		out.Ok = full.ProblemCount == 0
		out.Problems = append(out.Problems, checkOf(full, now).Problems...)
	}
	// The incremental checks since that full check that found problems:
	// each spoke only for its window, so their problems stand until a full
	// check looks again.
	for _, inc := range l.Findings {
		out.Ok = false
		for _, p := range checkOf(inc, now).Problems {
			if len(out.Problems) < maxReportedProblems {
				out.Problems = append(out.Problems, p)
			}
		}
	}
	return out
}

func checkOf(c *ent.LedgerCheck, now time.Time) *model.LedgerCheck {
	if c == nil {
		return nil
	}
	out := &model.LedgerCheck{
		ID: c.ID, Kind: model.LedgerCheckKind(c.Kind), Status: model.LedgerCheckStatus(c.Status),
		RequestedAt: c.CreatedAt, StartedAt: c.StartedAt, FinishedAt: c.FinishedAt,
		Users: int(c.Users), Transactions: int(c.Transactions), Payments: int(c.Payments),
		Postings: int(c.Postings), Lots: int(c.Lots), ProblemCount: int(c.ProblemCount),
		Problems: make([]*model.LedgerProblem, len(c.Problems)),
	}
	for i, p := range c.Problems {
		out.Problems[i] = &model.LedgerProblem{Invariant: p.Invariant, Subject: p.Subject, Detail: p.Detail}
	}
	if c.Phase != "" {
		out.Phase = &c.Phase
	}
	if c.Error != "" {
		out.Error = &c.Error
	}
	since := c.CreatedAt
	switch {
	case c.FinishedAt != nil:
		since = *c.FinishedAt
	case c.UpdatedAt != nil:
		since = *c.UpdatedAt
	}
	out.AgeSeconds = int(max(now.Sub(since), 0) / time.Second)
	switch {
	case c.Status == ledgercheck.StatusDONE:
		out.Progress = 1
	case c.Total > 0:
		out.Progress = min(float64(c.Checked)/float64(c.Total), 0.99)
	}
	return out
}

// startLedgerCheck queues a full check for the calling admin.
func (r *Resolver) startLedgerCheck(ctx context.Context) (*model.StartLedgerCheckPayload, error) {
	if r.Checks == nil {
		return nil, apperr.New(apperr.Unavailable, "background checks are not enabled on this server")
	}
	a, err := r.adminCaller(ctx)
	if err != nil {
		return nil, err
	}
	run, started, err := r.Checks.StartFullCheck(ctx, "admin:"+a.User.ID)
	if err != nil {
		return nil, err
	}
	return &model.StartLedgerCheckPayload{Check: checkOf(run, time.Now()), Started: started}, nil
}
