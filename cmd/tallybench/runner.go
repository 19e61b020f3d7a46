package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// op is one operation of a workload, done by one client. It returns an
// error when the operation failed (transport, HTTP status, a GraphQL error,
// or a wrong answer); the runner counts it and carries on.
type op func(ctx context.Context) error

// opTimeout bounds one operation. It is far above any latency a healthy
// run shows: it only keeps a wedged request from hanging the harness.
const opTimeout = 60 * time.Second

// runClosed drives a closed loop: each of clients goroutines does one
// operation after another until duration has passed. An operation that
// has started is always finished (under its own timeout, not the run's
// deadline), so that no request is cut off half way: a cancelled spend may
// or may not have committed, which would make "one transaction per
// success" uncheckable.
func runClosed(clients int, duration time.Duration, newOp func(client int) op) sample {
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		all     sample
		stopped atomic.Bool
	)
	start := time.Now()
	timer := time.AfterFunc(duration, func() { stopped.Store(true) })
	defer timer.Stop()
	for c := range clients {
		do := newOp(c)
		wg.Go(func() {
			// Each client keeps its own latencies, merged once at the end,
			// so that recording costs no lock during the run.
			var mine sample
			mine.latencies = make([]time.Duration, 0, 4096)
			for !stopped.Load() {
				mine.record(do, time.Now())
			}
			mu.Lock()
			all.merge(mine)
			mu.Unlock()
		})
	}
	wg.Wait()
	all.elapsed = time.Since(start)
	return all
}

// openLoopWorkers bounds the requests an open-loop run has in flight. When
// all are busy, scheduled requests wait in a queue and their wait counts in
// their latency, as it would for a real sender.
const openLoopWorkers = 256

// runOpen sends requests at a constant rate for duration, whatever the
// server's answers take: the load Stripe puts on a webhook does not slow
// down because the receiver does. Latency runs from the moment a request
// was due, not from when a worker got to it, so that a server falling
// behind shows in the percentiles (no coordinated omission).
func runOpen(rate float64, duration time.Duration, newOp func(client int) op) sample {
	interval := time.Duration(float64(time.Second) / rate)
	due := make(chan time.Time, 1<<16)
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		all sample
	)
	start := time.Now()
	for w := range openLoopWorkers {
		do := newOp(w)
		wg.Go(func() {
			var mine sample
			for at := range due {
				mine.record(do, at)
			}
			mu.Lock()
			all.merge(mine)
			mu.Unlock()
		})
	}
	for i := 0; ; i++ {
		at := start.Add(time.Duration(i) * interval)
		if at.Sub(start) >= duration {
			break
		}
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
		due <- at
	}
	close(due)
	wg.Wait()
	all.elapsed = time.Since(start)
	return all
}

// errorsShown caps the errors printed per process: the first few explain a
// failing run, thousands more would only bury the report.
var errorsShown atomic.Int32

func reportError(err error) {
	if errorsShown.Add(1) <= 5 {
		logf("error: %v", err)
	}
}

// record runs one operation and notes its latency from since (when it was
// started, or due in an open loop) and whether it failed.
func (s *sample) record(do op, since time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	err := do(ctx)
	s.latencies = append(s.latencies, time.Since(since))
	cancel()
	if err != nil {
		s.errors++
		reportError(err)
	}
}

// merge adds a worker's sample to the run's.
func (s *sample) merge(worker sample) {
	s.latencies = append(s.latencies, worker.latencies...)
	s.errors += worker.errors
}
