package payments

// QueuedPurchases is how many Checkout Session events wait for a batch.
func QueuedPurchases(s *Service) int { return s.purchases.Queued(func(*purchase) bool { return true }) }

// PurchaseBatchesRunning is how many purchase batches are running.
func PurchaseBatchesRunning(s *Service) int { return s.purchases.Running() }

// MaxPurchaseBatchesInFlight is how many purchase batches may run at once.
const MaxPurchaseBatchesInFlight = maxPurchaseBatchesInFlight
