// Package batch coalesces concurrent calls into shared runs: a group commit
// done by the application. The ledger batches spends with it, the payments
// package purchase webhooks, and the users package its lookups of callers.
package batch

import (
	"context"
	"sync"
	"time"
)

// Options shape a Batcher.
type Options struct {
	// MaxBatch bounds how many calls share one run (and so the size of its
	// statements).
	MaxBatch int
	// MaxInFlight lets runs of different keys overlap, one's commit with
	// another's reads.
	MaxInFlight int
	// Timeout bounds a run. A run works on behalf of every call in it, so
	// no single caller's cancellation stops it.
	Timeout time.Duration
	// OnePerKey puts at most one call of a key in a run; otherwise a key's
	// calls queued together share the next run.
	OnePerKey bool
}

// Batcher queues calls and, whenever fewer than MaxInFlight runs are going,
// starts a run with the queue's calls whose keys (the accounts they lock)
// have no run going, in arrival order. A call that finds the batcher idle
// therefore runs at once, alone: nothing waits on purpose. A key is in at
// most one running batch, so a hot key's calls pile up into the next run
// instead of queueing on its row lock. Several server processes each
// coalesce their own callers; the database's row locks still order them.
type Batcher[C any] struct {
	run  func(context.Context, []C)
	key  func(C) string
	opts Options

	mu      sync.Mutex
	queue   []queued[C]
	running int
	busy    map[string]bool
}

type queued[C any] struct {
	call C
	done chan struct{}
}

// New returns a batcher that runs batches with run; key names the account a
// call works on.
func New[C any](run func(context.Context, []C), key func(C) string, opts Options) *Batcher[C] {
	return &Batcher[C]{run: run, key: key, opts: opts, busy: map[string]bool{}}
}

// Do returns once the run that took the call has finished. The caller's
// cancellation does not stop it: its run works for other callers too, and a
// call that was made gets a definite outcome.
func (b *Batcher[C]) Do(c C) {
	q := queued[C]{call: c, done: make(chan struct{})}
	b.mu.Lock()
	b.queue = append(b.queue, q)
	b.dispatch()
	b.mu.Unlock()
	<-q.done
}

// dispatch starts runs while there are free slots and queued calls that can
// run. Called with mu held.
func (b *Batcher[C]) dispatch() {
	for b.running < b.opts.MaxInFlight {
		batch := b.take()
		if len(batch) == 0 {
			return
		}
		b.running++
		go b.runBatch(batch)
	}
}

// take removes from the queue, in order, up to MaxBatch calls whose keys
// have no run going. Called with mu held.
func (b *Batcher[C]) take() []queued[C] {
	var batch []queued[C]
	var taken map[string]bool
	if b.opts.OnePerKey {
		taken = map[string]bool{}
	}
	rest := b.queue[:0]
	for _, q := range b.queue {
		k := b.key(q.call)
		if len(batch) < b.opts.MaxBatch && !b.busy[k] && !taken[k] {
			batch = append(batch, q)
			if taken != nil {
				taken[k] = true
			}
		} else {
			rest = append(rest, q)
		}
	}
	clear(b.queue[len(rest):])
	b.queue = rest
	for _, q := range batch {
		b.busy[b.key(q.call)] = true
	}
	return batch
}

func (b *Batcher[C]) runBatch(batch []queued[C]) {
	calls := make([]C, len(batch))
	for i, q := range batch {
		calls[i] = q.call
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.opts.Timeout)
	b.run(ctx, calls)
	cancel()
	b.mu.Lock()
	for _, c := range calls {
		delete(b.busy, b.key(c))
	}
	b.running--
	b.dispatch()
	b.mu.Unlock()
	for _, q := range batch {
		close(q.done)
	}
}

// Queued is how many queued calls satisfy match (tests use it to know a
// batch has formed).
func (b *Batcher[C]) Queued(match func(C) bool) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, q := range b.queue {
		if match(q.call) {
			n++
		}
	}
	return n
}

// Running is how many runs are going.
func (b *Batcher[C]) Running() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.running
}
