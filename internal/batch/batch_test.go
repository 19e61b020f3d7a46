package batch_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tally-billing/tally/internal/batch"
	"github.com/tally-billing/tally/internal/testwait"
)

// gated records every run and holds it until the key of its first call is
// opened, so that a test can fill the run slots, see what queues behind
// them, and choose which run ends first.
type gated struct {
	mu      sync.Mutex
	runs    [][]string
	gates   map[string]chan struct{}
	all     bool
	started chan []string
}

func newGated() *gated {
	return &gated{started: make(chan []string, 100), gates: map[string]chan struct{}{}}
}

func (g *gated) gate(k string) chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	c, ok := g.gates[k]
	if !ok {
		c = make(chan struct{})
		if g.all {
			close(c)
		}
		g.gates[k] = c
	}
	return c
}

// open lets the runs led by key k end.
func (g *gated) open(k string) { close(g.gate(k)) }

// openAll lets every run end, those to come too.
func (g *gated) openAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.all = true
	for _, c := range g.gates {
		select {
		case <-c:
		default:
			close(c)
		}
	}
}

func (g *gated) run(_ context.Context, calls []string) {
	g.mu.Lock()
	g.runs = append(g.runs, slices.Clone(calls))
	g.mu.Unlock()
	g.started <- calls
	<-g.gate(key(calls[0]))
}

func (g *gated) allRuns() [][]string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.runs)
}

// A call's key is the part before the slash: "a/1" and "a/2" work on a.
func key(c string) string {
	k, _, _ := strings.Cut(c, "/")
	return k
}

func doAll(b *batch.Batcher[string], calls ...string) *sync.WaitGroup {
	var wg sync.WaitGroup
	for _, c := range calls {
		wg.Add(1)
		go func() { defer wg.Done(); b.Do(c) }()
	}
	return &wg
}

func queued(b *batch.Batcher[string]) int { return b.Queued(func(string) bool { return true }) }

func waitQueued(t *testing.T, b *batch.Batcher[string], n int) {
	t.Helper()
	testwait.Until(t, fmt.Sprintf("%d calls queued", n), func() bool { return queued(b) == n })
}

// TestIdleBatcherRunsACallAtOnce: nothing waits on purpose.
func TestIdleBatcherRunsACallAtOnce(t *testing.T) {
	g := newGated()
	g.openAll()
	b := batch.New(g.run, key, batch.Options{MaxBatch: 8, MaxInFlight: 2, Timeout: time.Second})
	b.Do("a/1")
	if runs := g.allRuns(); len(runs) != 1 || !slices.Equal(runs[0], []string{"a/1"}) {
		t.Fatalf("runs %v, want one run of a/1", runs)
	}
}

// TestCallsQueuedBehindFullSlotsShareRuns: with every slot taken, calls
// queue; when a slot frees they go together, in arrival order, up to
// MaxBatch, and never with a key that has a run going.
func TestCallsQueuedBehindFullSlotsShareRuns(t *testing.T) {
	g := newGated()
	b := batch.New(g.run, key, batch.Options{MaxBatch: 3, MaxInFlight: 2, Timeout: time.Second})
	first := doAll(b, "a/1")
	<-g.started
	second := doAll(b, "b/1")
	<-g.started
	if n := b.Running(); n != 2 {
		t.Fatalf("%d runs going, want 2", n)
	}
	// a and b have runs going; c, d and e do not.
	for i, c := range []string{"c/1", "a/2", "d/1", "c/2", "e/1"} {
		doAll(b, c)
		waitQueued(t, b, i+1)
	}
	g.open("b") // b's run ends; a's is still going
	var next []string
	select {
	case next = <-g.started:
	case <-time.After(10 * time.Second):
		t.Fatal("no run started when a slot freed")
	}
	g.openAll()
	first.Wait()
	second.Wait()
	testwait.Until(t, "every call run", func() bool { return b.Running() == 0 && queued(b) == 0 })

	// The next run takes the first three queued calls whose keys have no
	// run going (a/2 waits for a's run), in arrival order.
	if !slices.Equal(next, []string{"c/1", "d/1", "c/2"}) {
		t.Errorf("next run %v, want [c/1 d/1 c/2]", next)
	}
	var ran []string
	for _, r := range g.allRuns() {
		if len(r) > 3 {
			t.Errorf("run %v is over MaxBatch", r)
		}
		ran = append(ran, r...)
	}
	slices.Sort(ran)
	want := []string{"a/1", "a/2", "b/1", "c/1", "c/2", "d/1", "e/1"}
	if !slices.Equal(ran, want) {
		t.Errorf("ran %v, want each call once: %v", ran, want)
	}
}

// TestOnePerKeyLeavesAKeysSecondCallForTheNextRun.
func TestOnePerKeyLeavesAKeysSecondCallForTheNextRun(t *testing.T) {
	g := newGated()
	b := batch.New(g.run, key, batch.Options{MaxBatch: 10, MaxInFlight: 1, Timeout: time.Second, OnePerKey: true})
	first := doAll(b, "x/1")
	<-g.started
	for i, c := range []string{"a/1", "a/2", "b/1"} {
		doAll(b, c)
		waitQueued(t, b, i+1)
	}
	g.openAll()
	first.Wait()
	testwait.Until(t, "3 runs", func() bool { return len(g.allRuns()) == 3 })
	runs := g.allRuns()
	if !slices.Equal(runs[1], []string{"a/1", "b/1"}) || !slices.Equal(runs[2], []string{"a/2"}) {
		t.Errorf("runs %v, want [x/1] [a/1 b/1] [a/2]", runs)
	}
}

// TestARunOutlivesItsCallersContext: a run works for every call in it, so
// it gets a context of its own, bounded by Timeout.
func TestARunOutlivesItsCallersContext(t *testing.T) {
	deadlines := make(chan time.Duration, 1)
	b := batch.New(func(ctx context.Context, _ []string) {
		d, ok := ctx.Deadline()
		if !ok || ctx.Err() != nil {
			deadlines <- -1
			return
		}
		deadlines <- time.Until(d)
	}, key, batch.Options{MaxBatch: 1, MaxInFlight: 1, Timeout: time.Minute})
	b.Do("a/1")
	if d := <-deadlines; d <= 50*time.Second || d > time.Minute {
		t.Errorf("run's deadline in %v, want about a minute", d)
	}
}
