package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/internal/payments"
	"github.com/tally-billing/tally/internal/pulid"
	"github.com/tally-billing/tally/webhook"
)

// W4's purchases: every buyer buys this pack; the events carry its price.
const (
	packCredits = int64(100)
	packPrice   = int64(500) // minor units
	packCurr    = "usd"
	buyersPer   = 1000 // buyers per set: purchases spread over many users' locks
)

// recentWindow is how far back half of the duplicates reach: with up to 64
// deliveries in flight, many of the last 64 events sent are still being
// processed, so those duplicates arrive concurrently with their original.
const recentWindow = 64

// hookSet is one side of W4 (the API's or the baseline's): buyers, their
// pending payments not yet paid, and every event delivered so far with
// what Tally answered for it, so that each run can be checked.
type hookSet struct {
	name     string // buyers' external id prefix
	userIDs  []string
	pkgID    string
	dupShare float64
	// raw events carry no payload: the baseline is handed the event's ids.
	raw bool

	mu        sync.Mutex
	pending   []*ent.Payment
	sent      []*hookEvent
	exhausted bool
	// This run's deliveries and how many of them were duplicates, to report
	// the share actually sent (it rises if the pending payments run out).
	deliveries, duplicates atomic.Int64
	// peak is the best throughput seen, to size the next run's payments.
	peak float64
}

// hookEvent is one checkout.session.completed event and what became of
// its deliveries.
type hookEvent struct {
	id, paymentID string
	payload       []byte
	applied       atomic.Int32 // deliveries answered "applied"
	failed        atomic.Int32 // deliveries that failed
	acked         atomic.Bool  // at least one delivery answered 200
}

// seedHooks creates a set's buyers and the pack they buy.
func (e *env) seedHooks(ctx context.Context, name string, raw bool, dupShare float64) (*hookSet, error) {
	if _, err := e.rechargePack(ctx); err != nil {
		return nil, err
	}
	ids, _, err := e.createUsers(ctx, name, buyersPer)
	if err != nil {
		return nil, err
	}
	h := &hookSet{name: name, userIDs: ids, pkgID: e.packID, dupShare: dupShare, raw: raw}
	e.hooks = append(e.hooks, h)
	if raw {
		// The raw purchases, like the raw spends, do not count the
		// users' transactions (see verify).
		for _, id := range ids {
			e.lotless[id] = true
		}
	}
	return h, nil
}

// ensurePending tops the set up to at least n pending payments, written
// directly (as createCheckoutSession would write them, without Stripe),
// before a run rather than during it.
func (h *hookSet) ensurePending(ctx context.Context, client *ent.Client, n int) error {
	h.mu.Lock()
	missing := n - len(h.pending)
	h.mu.Unlock()
	if missing <= 0 {
		return nil
	}
	started := time.Now()
	for made := 0; made < missing; {
		batch := min(1000, missing-made)
		builders := make([]*ent.PaymentCreate, 0, batch)
		for i := range batch {
			builders = append(builders, client.Payment.Create().
				SetUserID(h.userIDs[(made+i)%len(h.userIDs)]).SetPackageID(h.pkgID).
				SetAmount(packPrice).SetCurrency(packCurr).SetCredits(packCredits).
				SetStripeCheckoutSessionID("cs_bench_"+pulid.New("x")[2:]))
		}
		ps, err := client.Payment.CreateBulk(builders...).Save(ctx)
		if err != nil {
			return fmt.Errorf("writing pending payments for %s: %w", h.name, err)
		}
		h.mu.Lock()
		h.pending = append(h.pending, ps...)
		h.mu.Unlock()
		made += batch
	}
	if missing >= 5000 {
		logf("wrote %d pending payments for %s* in %.1fs", missing, h.name, time.Since(started).Seconds())
	}
	return nil
}

// budget is how many fresh events a run of this length may need: the best
// throughput so far (or, before the first run, a guess above what either
// side reaches on a 2-core machine: B4 ran out at 3,000/s) times the share
// of deliveries that are not duplicates, with a margin.
func (h *hookSet) budget(d time.Duration, rate float64) int {
	if rate <= 0 {
		rate = max(h.peak, 8000)
	}
	return int(rate*d.Seconds()*(1-h.dupShare)*1.3) + 200
}

// startRun resets the per-run counters.
func (h *hookSet) startRun() {
	h.deliveries.Store(0)
	h.duplicates.Store(0)
}

// next picks what to deliver: a duplicate of an event already sent (a
// share dupShare of deliveries, half of them among the most recent,
// likely still in flight), or the event of the next pending payment.
func (h *hookSet) next(r *rand.Rand) (*hookEvent, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.deliveries.Add(1)
	if len(h.sent) > 0 && (len(h.pending) == 0 || r.Float64() < h.dupShare) {
		if len(h.pending) == 0 && !h.exhausted {
			h.exhausted = true
			logf("%s* ran out of pending payments: the rest of the run sends duplicates only", h.name)
		}
		h.duplicates.Add(1)
		if r.Intn(2) == 0 {
			return h.sent[len(h.sent)-1-r.Intn(min(len(h.sent), recentWindow))], nil
		}
		return h.sent[r.Intn(len(h.sent))], nil
	}
	if len(h.pending) == 0 {
		return nil, fmt.Errorf("%s* has no pending payment to deliver", h.name)
	}
	p := h.pending[len(h.pending)-1]
	h.pending = h.pending[:len(h.pending)-1]
	ev := &hookEvent{paymentID: p.ID}
	if h.raw {
		ev.id = "evt_bench_" + pulid.New("x")[2:]
	} else {
		var err error
		// The project's own simulated event: shaped as Stripe sends it,
		// with the fields Tally reads.
		if ev.payload, err = payments.SimulatedCheckoutCompleted(p); err != nil {
			return nil, err
		}
		var head struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(ev.payload, &head); err != nil {
			return nil, fmt.Errorf("reading the simulated event's id: %w", err)
		}
		ev.id = head.ID
	}
	h.sent = append(h.sent, ev)
	return ev, nil
}

// apiHookOp is W4's operation: deliver one event, signed as Stripe signs
// (afresh for every delivery, as Stripe does for retries), and expect 200
// with "applied" or "duplicate".
func apiHookOp(c *gqlClient, h *hookSet, secret string, client int) op {
	r := rand.New(rand.NewSource(chooserSeed(client)))
	return func(ctx context.Context) error {
		ev, err := h.next(r)
		if err != nil {
			return err
		}
		outcome, err := c.postWebhook(ctx, ev.payload, webhook.Sign(ev.payload, secret, time.Now()))
		return ev.record(outcome, err)
	}
}

// rawHookOp is W4's baseline: the same choice of events, decided by raw
// SQL in one transaction.
func rawHookOp(s rawStore, h *hookSet, client int) op {
	r := rand.New(rand.NewSource(chooserSeed(client)))
	return func(ctx context.Context) error {
		ev, err := h.next(r)
		if err != nil {
			return err
		}
		applied, err := s.completeCheckout(ctx, ev.id, ev.paymentID)
		outcome := "duplicate"
		if applied {
			outcome = "applied"
		}
		return ev.record(outcome, err)
	}
}

func (ev *hookEvent) record(outcome string, err error) error {
	if err != nil {
		ev.failed.Add(1)
		return fmt.Errorf("event %s: %w", ev.id, err)
	}
	ev.acked.Store(true)
	switch outcome {
	case "applied":
		ev.applied.Add(1)
	case "duplicate":
	default:
		return fmt.Errorf("event %s: outcome %q, want applied or duplicate", ev.id, outcome)
	}
	return nil
}

// hookTally sums what the harness saw of a set's events.
type hookTally struct {
	sent, acked, applied int
	// unknown are events with failed deliveries and no "applied" answer:
	// one of the failures may or may not have committed.
	unknown     int
	overApplied []string
}

func (h *hookSet) tally() hookTally {
	h.mu.Lock()
	sent := h.sent
	h.mu.Unlock()
	var t hookTally
	t.sent = len(sent)
	for _, ev := range sent {
		a := int(ev.applied.Load())
		t.applied += a
		if ev.acked.Load() {
			t.acked++
		}
		if a == 0 && ev.failed.Load() > 0 {
			t.unknown++
		}
		if a > 1 {
			t.overApplied = append(t.overApplied, fmt.Sprintf("event %s applied %d times", ev.id, a))
		}
	}
	return t
}
