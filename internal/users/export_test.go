package users

import (
	"context"

	"github.com/tally-billing/tally/internal/batch"
)

// GateReads makes every query of lookups first report how many lookups it
// answers on sizes, then wait until gate is closed, so that a test can see
// lookups queue behind running queries.
func GateReads(s *Service, gate <-chan struct{}, sizes chan<- int) {
	s.reads = batch.New(func(ctx context.Context, ls []*lookup) {
		sizes <- len(ls)
		<-gate
		s.readBatch(ctx, ls)
	}, lookupKey, readOptions)
}

// QueuedReads is how many lookups wait for a query.
func QueuedReads(s *Service) int { return s.reads.Queued(func(*lookup) bool { return true }) }

// ReadsInFlight is how many lookup queries may run at once.
func ReadsInFlight() int { return readOptions.MaxInFlight }
