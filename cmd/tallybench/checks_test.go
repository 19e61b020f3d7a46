package main

import (
	"math/rand"
	"strings"
	"sync/atomic"
	"testing"
)

func emptySnapshot() *snapshot {
	return &snapshot{balance: map[string]int64{}, spends: map[string]int64{}, purchases: map[string]int64{},
		paid: map[string]int64{}, paidCredits: map[string]int64{}, eventOf: map[string]string{}, eventsOf: map[string]int{}}
}

func TestAccountSetCheck(t *testing.T) {
	s := &accountSet{name: "t-", ids: []string{"u1", "u2"}, external: []string{"t-00000", "t-00001"},
		seed: 100, spent: make([]atomic.Int64, 2)}
	s.spent[0].Store(3)
	snap := emptySnapshot()
	snap.balance["u1"], snap.spends["u1"] = 97, 3
	snap.balance["u2"] = 100
	if ps := s.verify(snap); len(ps) != 0 {
		t.Fatalf("a consistent set: %v", ps)
	}
	// A key applied twice: one SPEND more than the spends reported, and the
	// balance one lower.
	snap.spends["u1"], snap.balance["u1"] = 4, 96
	ps := s.verify(snap)
	if len(ps) != 2 || !strings.Contains(ps[0], "4 SPEND transactions for 3") {
		t.Errorf("a doubled spend: %v", ps)
	}
	// A user missing from the database is a problem, not a zero balance.
	delete(snap.balance, "u2")
	if ps := s.verify(snap); len(ps) != 3 {
		t.Errorf("a missing user: %v", ps)
	}
}

func TestHookSetCheck(t *testing.T) {
	h := &hookSet{name: "t-", raw: true, userIDs: []string{"b1"}, pending: pendingPayments(3)}
	r := rand.New(rand.NewSource(1))
	for range 3 {
		ev, err := h.next(r)
		if err != nil {
			t.Fatal(err)
		}
		_ = ev.record("applied", nil)
	}
	snap := emptySnapshot()
	snap.purchases["b1"], snap.paid["b1"], snap.paidCredits["b1"], snap.balance["b1"] = 3, 3, 300, 300
	for _, ev := range h.sent {
		snap.eventOf[ev.paymentID], snap.eventsOf[ev.paymentID] = "APPLIED", 1
	}
	if ps := h.verify(snap); len(ps) != 0 {
		t.Fatalf("a consistent set: %v", ps)
	}
	// An event applied twice by the database (a second purchase) is caught
	// even though the answers said applied once.
	snap.purchases["b1"], snap.balance["b1"] = 4, 400
	if ps := h.verify(snap); len(ps) < 2 {
		t.Errorf("a doubled purchase: %v", ps)
	}
}
