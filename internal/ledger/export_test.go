package ledger

// QueuedSpends is how many spends wait for the account's next batch (tests
// use it to know a batch has formed).
func QueuedSpends(s *Service, userID string) int {
	s.spends.mu.Lock()
	defer s.spends.mu.Unlock()
	return len(s.spends.queues[userID])
}
