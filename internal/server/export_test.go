package server

// ReadinessChecks is how many background checks the readiness probe has
// done (tests wait for some to happen under a condition they hold).
func ReadinessChecks(s *Server) uint64 { return s.ready.observed.Load() }
