// Package testwait lets a test wait for a state that other goroutines reach
// (a batch formed, a slot taken) without sleeping for a guessed time.
package testwait

import (
	"testing"
	"time"
)

// Until polls cond every millisecond and fails the test, naming what it
// waited for, if cond is still false after ten seconds.
func Until(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
