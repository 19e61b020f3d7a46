package ledger

// QueuedSpends is how many spends from the user (any user, for "") wait for
// a batch (tests use it to know a batch has formed).
func QueuedSpends(s *Service, userID string) int {
	s.spends.mu.Lock()
	defer s.spends.mu.Unlock()
	n := 0
	for _, c := range s.spends.queue {
		if userID == "" || c.req.UserID == userID {
			n++
		}
	}
	return n
}

// MaxBatchesInFlight is how many spend batches may run at once.
const MaxBatchesInFlight = maxBatchesInFlight

// BatchesRunning is how many spend batch slots are taken.
func BatchesRunning(s *Service) int {
	s.spends.mu.Lock()
	defer s.spends.mu.Unlock()
	return s.spends.running
}
