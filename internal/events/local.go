package events

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// bufferSize is how many events a subscriber may fall behind before it
// loses the oldest. Balance changes of one user come at human pace; the
// buffer only absorbs bursts (a sweep, a batch of grants).
const bufferSize = 16

// NewLocal returns a broker that fans events out within this process: the
// broker for SQLite, where the server is a single process.
func NewLocal() Broker { return &local{hub: newHub()} }

type local struct{ hub *hub }

func (l *local) Publish(_ context.Context, ev BalanceChanged) error {
	if err := validate(ev); err != nil {
		return err
	}
	return l.hub.publish(ev)
}

func (l *local) Subscribe(ctx context.Context, userID string) (<-chan BalanceChanged, error) {
	return l.hub.subscribe(ctx, userID)
}

func (l *local) Close() error {
	l.hub.close()
	return nil
}

func validate(ev BalanceChanged) error {
	if ev.UserID == "" {
		return errors.New("events: publishing an event without a user id")
	}
	return nil
}

// hub is the in-process fan-out that both brokers deliver through.
//
// Channels are sent to and closed only under mu, so a send can never hit a
// closed channel, and sends never block, so holding mu is brief.
type hub struct {
	mu     sync.Mutex
	closed bool
	subs   map[string]map[*subscription]struct{}
}

type subscription struct {
	ch chan BalanceChanged
	// stop releases the context.AfterFunc that ends the subscription.
	// Registering with the context, rather than a goroutine per
	// subscription waiting on it, keeps thousands of idle WebSockets free.
	stop func() bool
}

func newHub() *hub {
	return &hub{subs: make(map[string]map[*subscription]struct{})}
}

func (h *hub) subscribe(ctx context.Context, userID string) (<-chan BalanceChanged, error) {
	if userID == "" {
		return nil, errors.New("events: subscribing without a user id")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("events: subscribing: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	s := &subscription{ch: make(chan BalanceChanged, bufferSize)}
	set := h.subs[userID]
	if set == nil {
		set = make(map[*subscription]struct{})
		h.subs[userID] = set
	}
	set[s] = struct{}{}
	// If ctx ends right now, the callback waits for mu, by which time stop
	// is set and the subscription registered.
	s.stop = context.AfterFunc(ctx, func() { h.unsubscribe(userID, s) })
	return s.ch, nil
}

func (h *hub) unsubscribe(userID string, s *subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	set := h.subs[userID]
	if _, ok := set[s]; !ok {
		return // Close got there first
	}
	delete(set, s)
	if len(set) == 0 {
		delete(h.subs, userID)
	}
	close(s.ch)
}

func (h *hub) publish(ev BalanceChanged) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return ErrClosed
	}
	for s := range h.subs[ev.UserID] {
		offer(s.ch, ev)
	}
	return nil
}

// offer puts ev in ch without waiting; when ch is full it drops the oldest
// event, since ev carries the newer balance. Only offer sends, under the
// hub's lock, so after one receive there is room for ev.
func offer(ch chan BalanceChanged, ev BalanceChanged) {
	select {
	case ch <- ev:
		return
	default:
	}
	select {
	case <-ch:
	default:
	}
	select {
	case ch <- ev:
	default:
	}
}

func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	for _, set := range h.subs {
		for s := range set {
			s.stop()
			close(s.ch)
		}
	}
	h.subs = nil
}
