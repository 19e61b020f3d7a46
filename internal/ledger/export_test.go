package ledger

// QueuedSpends is how many spends from the user (any user, for "") wait for
// a batch (tests use it to know a batch has formed).
func QueuedSpends(s *Service, userID string) int {
	return s.spends.Queued(func(c *spendCall) bool { return userID == "" || c.req.UserID == userID })
}

// MaxBatchesInFlight is how many spend batches may run at once.
const MaxBatchesInFlight = maxBatchesInFlight

// BatchesRunning is how many spend batch slots are taken.
func BatchesRunning(s *Service) int { return s.spends.Running() }
