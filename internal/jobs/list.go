package jobs

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/tally-billing/tally/internal/apperr"
)

// MaxListed bounds the jobs one List returns.
const MaxListed = 100

// Job is what admins see of a job.
type Job struct {
	ID, Kind, Queue, State   string
	Attempt, MaxAttempts     int
	Args                     string
	ScheduledAt              time.Time
	AttemptedAt, FinalizedAt *time.Time
	// LastError is the error of the job's latest failed attempt.
	LastError *string
}

// List returns the newest jobs in the given states and of the given
// kinds (none: all), at most first of them; River reads them.
func (q *Queue) List(ctx context.Context, states, kinds []string, first int) ([]*Job, error) {
	if first < 1 || first > MaxListed {
		return nil, apperr.Invalid("first", "first must be from 1 to %d", MaxListed)
	}
	if len(kinds) > MaxListed {
		return nil, apperr.Invalid("kinds", "at most %d kinds", MaxListed)
	}
	params := river.NewJobListParams().First(first).OrderBy(river.JobListOrderByID, river.SortOrderDesc)
	if len(states) > 0 {
		known := rivertype.JobStates()
		var want []rivertype.JobState
		for _, s := range states {
			if !slices.Contains(known, rivertype.JobState(s)) {
				return nil, apperr.Invalid("states", "unknown job state %q (known: %v)", apperr.Clip(s, 40), known)
			}
			want = append(want, rivertype.JobState(s))
		}
		params = params.States(want...)
	}
	if len(kinds) > 0 {
		params = params.Kinds(kinds...)
	}
	res, err := q.client.JobList(ctx, params)
	if err != nil {
		return nil, fmt.Errorf("jobs: listing: %w", err)
	}
	out := make([]*Job, len(res.Jobs))
	for i, j := range res.Jobs {
		out[i] = &Job{
			ID: strconv.FormatInt(j.ID, 10), Kind: j.Kind, Queue: j.Queue, State: string(j.State),
			Attempt: j.Attempt, MaxAttempts: j.MaxAttempts, Args: string(j.EncodedArgs),
			ScheduledAt: j.ScheduledAt, AttemptedAt: j.AttemptedAt, FinalizedAt: j.FinalizedAt,
		}
		if n := len(j.Errors); n > 0 {
			last := j.Errors[n-1].Error
			out[i].LastError = &last
		}
	}
	return out, nil
}
