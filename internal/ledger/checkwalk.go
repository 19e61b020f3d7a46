package ledger

import (
	"context"
	"fmt"
	"slices"
)

// checkChunkSize is how many subjects one round of the check reads: big
// enough that a million users take a few thousand rounds, small enough
// that a round's statements stay short and its memory small.
const checkChunkSize = 500

// MaxKeptProblems bounds the problems a check keeps (it counts them all):
// a ledger broken everywhere must not make the check's memory grow.
const MaxKeptProblems = 100

// Report is the result of checking the ledger's invariants.
type Report struct {
	// What was checked: users (with their lots), transactions (with their
	// postings), payments.
	Users, Transactions, Postings, Lots, Payments int64
	// ProblemCount counts every problem found; Problems keeps the first
	// MaxKeptProblems of them.
	ProblemCount int64
	Problems     []Problem
}

// OK says whether every invariant holds.
func (r Report) OK() bool { return r.ProblemCount == 0 }

// Progress is where a check has got to.
type Progress struct {
	Report
	// Phase is the kind of subject being walked, Cursor the last one
	// checked; a check resumed from a Progress continues after it.
	Phase  Subjects
	Cursor string
}

// add counts a chunk of subjects checked.
func (p *Progress) add(over Subjects, ids []string, res chunkResult) {
	n := int64(len(ids))
	switch over {
	case Users:
		p.Users += n
		p.Lots += res.below
	case Transactions:
		p.Transactions += n
		p.Postings += res.below
	case Payments:
		p.Payments += n
	}
	p.ProblemCount += int64(len(res.problems))
	room := MaxKeptProblems - len(p.Problems)
	p.Problems = append(p.Problems, res.problems[:min(room, len(res.problems))]...)
	p.Phase, p.Cursor = over, ids[len(ids)-1]
}

// walkPhase is one kind of subject a check walks, and how to read the
// next chunk of them after a cursor.
type walkPhase struct {
	over Subjects
	next func(ctx context.Context, after string, n int) ([]string, error)
}

// walk checks the phases' subjects chunk by chunk, starting where from
// says, and hands the progress to step after every chunk (a stored check
// records it there; an error from step stops the walk).
func (s *Service) walk(ctx context.Context, invariants []Invariant, phases []walkPhase, from Progress, step func(Progress) error) (Progress, error) {
	p := from
	start := 0
	if p.Phase != "" {
		start = slices.IndexFunc(phases, func(ph walkPhase) bool { return ph.over == p.Phase })
		if start < 0 {
			return p, fmt.Errorf("ledger: a check cannot resume in phase %q", p.Phase)
		}
	}
	for i := start; i < len(phases); i++ {
		ph := phases[i]
		cursor := ""
		if ph.over == p.Phase {
			cursor = p.Cursor
		}
		for {
			if err := ctx.Err(); err != nil {
				return p, err
			}
			ids, err := ph.next(ctx, cursor, s.chunkSize)
			if err != nil {
				return p, err
			}
			if len(ids) == 0 {
				break
			}
			res, err := s.checkChunk(ctx, invariants, ph.over, ids)
			if err != nil {
				return p, err
			}
			p.add(ph.over, ids, res)
			cursor = p.Cursor
			if err := step(p); err != nil {
				return p, err
			}
		}
	}
	return p, nil
}

// fullPhases walk every user, transaction and payment.
func (s *Service) fullPhases() []walkPhase {
	phases := make([]walkPhase, len(subjectTables))
	for i, st := range subjectTables {
		phases[i] = walkPhase{over: st.subjects, next: func(ctx context.Context, after string, n int) ([]string, error) {
			return s.idsAfter(ctx, st.table, after, "", n)
		}}
	}
	return phases
}

// Check verifies the ledger's invariants, and the extra ones given, over
// every subject, in chunks (see walk), calling progress after each chunk
// when it is not nil. Its memory does not grow with the ledger; each
// invariant of a chunk sees one state of the database, the whole check
// does not (a transaction committed during the check may be missed by it
// and is checked by the next).
func (s *Service) Check(ctx context.Context, extra ...Invariant) (Report, error) {
	return s.CheckWithProgress(ctx, nil, extra...)
}

// CheckWithProgress is Check reporting its progress after each chunk.
func (s *Service) CheckWithProgress(ctx context.Context, progress func(Progress), extra ...Invariant) (Report, error) {
	p, err := s.walk(ctx, slices.Concat(invariantChecks, extra), s.fullPhases(), Progress{}, func(p Progress) error {
		if progress != nil {
			progress(p)
		}
		return nil
	})
	if err != nil {
		return Report{}, err
	}
	return p.Report, nil
}
