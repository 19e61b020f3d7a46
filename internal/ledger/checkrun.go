package ledger

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"entgo.io/ent/dialect"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/ledgercheck"
	entschema "github.com/tally-billing/tally/ent/schema"
	"github.com/tally-billing/tally/internal/pulid"
)

// Check runs are ledger checks done by background jobs (package jobs),
// their state kept in ledger_checks so that ledgerReport answers at once
// with the latest result and a run interrupted by a crash resumes where it
// had got to.

const (
	// progressEvery is how often a run records its progress: a resumed
	// run redoes at most this much work.
	progressEvery = time.Second
	// IncrementalLag keeps an incremental run behind the present: a
	// transaction's id is made before it commits, so the newest ids may
	// still be joined by older ones committing late; the next run takes
	// them. It also covers replicas' clocks disagreeing by less than it: a
	// replica whose clock is further behind writes ids below windows
	// already checked, which only a full check then sees.
	IncrementalLag = 30 * time.Second
	// firstIncrementalWindow is how far back the first incremental run
	// looks; what is older is the full check's.
	firstIncrementalWindow = 24 * time.Hour
)

// RunFullCheck does (or resumes) the full check run id: every user,
// transaction and payment. A run already finished is left as it is, so a
// job that runs twice has one effect.
func (s *Service) RunFullCheck(ctx context.Context, id string, extra []Invariant) error {
	run, err := s.db.Ent.LedgerCheck.Get(ctx, id)
	if err != nil {
		return fmt.Errorf("ledger: reading check %s: %w", id, err)
	}
	if run.Status == ledgercheck.StatusDONE || run.Status == ledgercheck.StatusFAILED {
		return nil
	}
	if run.Status == ledgercheck.StatusQUEUED {
		if run, err = s.startRun(ctx, run); err != nil {
			return err
		}
	}
	return s.finishRun(ctx, run, slices.Concat(invariantChecks, extra), s.fullPhases())
}

// RunIncrementalCheck checks what changed since the previous incremental
// run: the transactions made since, their users, and the payments changed
// since or named by those transactions. It costs what changed.
func (s *Service) RunIncrementalCheck(ctx context.Context, extra []Invariant) (*ent.LedgerCheck, error) {
	now := s.now().UTC()
	from, err := s.incrementalStart(ctx, now)
	if err != nil {
		return nil, err
	}
	// A run that died left its row RUNNING; the window it had is this
	// one's too.
	_, err = s.db.Ent.LedgerCheck.Update().
		Where(ledgercheck.KindEQ(ledgercheck.KindINCREMENTAL), ledgercheck.StatusIn(ledgercheck.StatusRUNNING, ledgercheck.StatusQUEUED)).
		SetStatus(ledgercheck.StatusFAILED).ClearLive().SetError("interrupted; its window was checked by a later run").SetFinishedAt(now).
		Save(ctx)
	if err != nil {
		return nil, fmt.Errorf("ledger: closing interrupted checks: %w", err)
	}
	run, err := s.db.Ent.LedgerCheck.Create().
		SetKind(ledgercheck.KindINCREMENTAL).SetLive(string(ledgercheck.KindINCREMENTAL)).SetStatus(ledgercheck.StatusRUNNING).
		SetStartedAt(now).SetUpdatedAt(now).
		SetFromID(from).SetThroughID(pulid.Bound("txn", now.Add(-IncrementalLag))).
		Save(ctx)
	if err != nil {
		return nil, fmt.Errorf("ledger: recording a check: %w", err)
	}
	if err := s.finishRun(ctx, run, slices.Concat(invariantChecks, extra), s.changedPhases(run.FromID, run.ThroughID)); err != nil {
		return nil, err
	}
	return s.db.Ent.LedgerCheck.Get(ctx, run.ID)
}

// incrementalStart is where the previous incremental run stopped.
func (s *Service) incrementalStart(ctx context.Context, now time.Time) (string, error) {
	prev, err := s.db.Ent.LedgerCheck.Query().
		Where(ledgercheck.KindEQ(ledgercheck.KindINCREMENTAL), ledgercheck.StatusEQ(ledgercheck.StatusDONE)).
		Order(ent.Desc(ledgercheck.FieldCreatedAt)).First(ctx)
	switch {
	case err == nil:
		return prev.ThroughID, nil
	case ent.IsNotFound(err):
		return pulid.Bound("txn", now.Add(-firstIncrementalWindow)), nil
	default:
		return "", fmt.Errorf("ledger: reading the previous check: %w", err)
	}
}

// changedPhases walk the transactions made in (from, through], the users
// they moved, and the payments they name or that changed in that time.
func (s *Service) changedPhases(from, through string) []walkPhase {
	since, _ := pulid.Time(from)
	until, _ := pulid.Time(through)
	return []walkPhase{
		{Users, func(ctx context.Context, after string, n int) ([]string, error) {
			return s.strings(ctx, fmt.Sprintf(`SELECT DISTINCT user_id FROM credit_transactions
				WHERE id > ? AND id <= ? AND user_id > ? ORDER BY user_id LIMIT %d`, n), from, through, after)
		}},
		{Transactions, func(ctx context.Context, after string, n int) ([]string, error) {
			return s.idsAfter(ctx, "credit_transactions", max(after, from), through, n)
		}},
		{Payments, func(ctx context.Context, after string, n int) ([]string, error) {
			return s.strings(ctx, fmt.Sprintf(`SELECT id FROM (
				SELECT id FROM payments WHERE updated_at > ? AND updated_at <= ?
				UNION SELECT payment_id AS id FROM credit_transactions WHERE id > ? AND id <= ? AND payment_id IS NOT NULL
			) changed WHERE id > ? ORDER BY id LIMIT %d`, n), since, until, from, through, after)
		}},
	}
}

// startRun marks a queued run as running and records what it will walk.
func (s *Service) startRun(ctx context.Context, run *ent.LedgerCheck) (*ent.LedgerCheck, error) {
	total, err := s.estimateSubjects(ctx)
	if err != nil {
		return nil, err
	}
	last, err := s.strings(ctx, `SELECT COALESCE(MAX(id), '') FROM credit_transactions`)
	if err != nil {
		return nil, err
	}
	now := s.now().UTC()
	u := run.Update().SetStatus(ledgercheck.StatusRUNNING).SetStartedAt(now).SetUpdatedAt(now).SetTotal(total)
	if len(last) == 1 {
		u.SetThroughID(last[0])
	}
	started, err := u.Save(ctx)
	if err != nil {
		return nil, fmt.Errorf("ledger: starting check %s: %w", run.ID, err)
	}
	return started, nil
}

// estimateSubjects is about how many subjects a full check walks: the
// planner's row counts on PostgreSQL (a count would read every row), exact
// counts on SQLite, whose databases are small.
func (s *Service) estimateSubjects(ctx context.Context) (int64, error) {
	var q string
	if s.db.Dialect == dialect.Postgres {
		q = `SELECT CAST(COALESCE(SUM(GREATEST(reltuples, 0)), 0) AS BIGINT) FROM pg_class
		      WHERE oid IN ('users'::regclass, 'credit_transactions'::regclass, 'payments'::regclass)`
	} else {
		q = `SELECT (SELECT COUNT(*) FROM users) + (SELECT COUNT(*) FROM credit_transactions) + (SELECT COUNT(*) FROM payments)`
	}
	var n int64
	if err := s.db.SQL.QueryRowContext(ctx, q).Scan(&n); err != nil {
		return 0, fmt.Errorf("ledger: estimating a check's size: %w", err)
	}
	return n, nil
}

// finishRun walks the phases from where run had got to, recording its
// progress at most every progressEvery, and marks it done.
func (s *Service) finishRun(ctx context.Context, run *ent.LedgerCheck, invariants []Invariant, phases []walkPhase) error {
	recorded := time.Now()
	p, err := s.walk(ctx, invariants, phases, progressOf(run), func(p Progress) error {
		if time.Since(recorded) < s.progressAt {
			return nil
		}
		recorded = time.Now()
		return s.recordProgress(ctx, run.ID, p, false)
	})
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		return fmt.Errorf("ledger: check %s: %w", run.ID, err)
	}
	return s.recordProgress(ctx, run.ID, p, true)
}

// CheckProgress is how many subjects run id has checked so far.
func (s *Service) CheckProgress(ctx context.Context, id string) (int64, error) {
	run, err := s.db.Ent.LedgerCheck.Get(ctx, id)
	if err != nil {
		return 0, fmt.Errorf("ledger: reading check %s: %w", id, err)
	}
	return run.Checked, nil
}

// FailCheck records that a run gave up (its job's last attempt failed).
func (s *Service) FailCheck(ctx context.Context, id string, cause error) error {
	msg := cause.Error()
	if len(msg) > 1000 {
		msg = msg[:1000]
	}
	return s.db.Ent.LedgerCheck.UpdateOneID(id).
		SetStatus(ledgercheck.StatusFAILED).ClearLive().SetError(msg).SetFinishedAt(s.now().UTC()).
		Exec(ctx)
}

func (s *Service) recordProgress(ctx context.Context, id string, p Progress, done bool) error {
	now := s.now().UTC()
	problems := make([]entschema.CheckProblem, len(p.Problems))
	for i, pr := range p.Problems {
		problems[i] = entschema.CheckProblem{Invariant: pr.Invariant, Subject: pr.Subject, Detail: pr.Detail}
	}
	u := s.db.Ent.LedgerCheck.UpdateOneID(id).
		SetPhase(string(p.Phase)).SetCursor(p.Cursor).SetUpdatedAt(now).
		SetChecked(p.Users + p.Transactions + p.Payments).
		SetUsers(p.Users).SetTransactions(p.Transactions).SetPayments(p.Payments).
		SetPostings(p.Postings).SetLots(p.Lots).
		SetProblemCount(p.ProblemCount).SetProblems(problems)
	if done {
		u.SetStatus(ledgercheck.StatusDONE).ClearLive().SetFinishedAt(now)
	}
	if err := u.Exec(ctx); err != nil {
		return fmt.Errorf("ledger: recording the progress of check %s: %w", id, err)
	}
	return nil
}

// progressOf is where a stored run had got to.
func progressOf(run *ent.LedgerCheck) Progress {
	p := Progress{Phase: Subjects(run.Phase), Cursor: run.Cursor}
	p.Users, p.Transactions, p.Payments = run.Users, run.Transactions, run.Payments
	p.Postings, p.Lots, p.ProblemCount = run.Postings, run.Lots, run.ProblemCount
	for _, pr := range run.Problems {
		p.Problems = append(p.Problems, Problem{Invariant: pr.Invariant, Subject: pr.Subject, Detail: pr.Detail})
	}
	return p
}

// LatestChecks are what ledgerReport shows: the latest full run (finished
// or not) and the latest finished one, the latest incremental run, and the
// incremental runs since that full one that found problems. Each
// incremental run speaks only for its own window: a problem it found is
// not seen by the next, and must not drop out of the report until a full
// check has looked again.
type LatestChecks struct {
	Full, LastFinishedFull, Incremental *ent.LedgerCheck
	Findings                            []*ent.LedgerCheck
}

// maxFindings bounds the incremental runs with problems a report lists
// (each keeps its first problems; their count is in each run).
const maxFindings = 10

// Latest reads the latest check runs (nil where there is none).
func (s *Service) Latest(ctx context.Context) (LatestChecks, error) {
	var l LatestChecks
	latest := func(kind ledgercheck.Kind, finished bool) (*ent.LedgerCheck, error) {
		q := s.db.Ent.LedgerCheck.Query().Where(ledgercheck.KindEQ(kind))
		if finished {
			q.Where(ledgercheck.StatusIn(ledgercheck.StatusDONE, ledgercheck.StatusFAILED))
		}
		run, err := q.Order(ent.Desc(ledgercheck.FieldCreatedAt), ent.Desc(ledgercheck.FieldID)).First(ctx)
		if ent.IsNotFound(err) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("ledger: reading the latest checks: %w", err)
		}
		return run, nil
	}
	var err error
	if l.Full, err = latest(ledgercheck.KindFULL, false); err != nil {
		return l, err
	}
	if l.LastFinishedFull, err = latest(ledgercheck.KindFULL, true); err != nil {
		return l, err
	}
	if l.Incremental, err = latest(ledgercheck.KindINCREMENTAL, true); err != nil {
		return l, err
	}
	findings := s.db.Ent.LedgerCheck.Query().Where(ledgercheck.KindEQ(ledgercheck.KindINCREMENTAL),
		ledgercheck.StatusEQ(ledgercheck.StatusDONE), ledgercheck.ProblemCountGT(0))
	if l.LastFinishedFull != nil {
		findings.Where(ledgercheck.CreatedAtGT(l.LastFinishedFull.CreatedAt))
	}
	l.Findings, err = findings.Order(ent.Desc(ledgercheck.FieldCreatedAt)).Limit(maxFindings).All(ctx)
	if err != nil {
		return l, fmt.Errorf("ledger: reading the checks' findings: %w", err)
	}
	return l, nil
}
