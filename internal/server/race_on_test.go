//go:build race

package server_test

// allocationsUnderRace is what the race detector adds to a request's
// allocations (measured: 2%), for the budgets of TestAllocationsPerRequest.
const allocationsUnderRace = 1.025
