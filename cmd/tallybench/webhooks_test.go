package main

import (
	"fmt"
	"math/rand"
	"testing"

	"github.com/tally-billing/tally/ent"
)

func pendingPayments(n int) []*ent.Payment {
	ps := make([]*ent.Payment, n)
	for i := range ps {
		ps[i] = &ent.Payment{ID: fmt.Sprintf("pay_%d", i)}
	}
	return ps
}

func TestHookDuplicateShare(t *testing.T) {
	h := &hookSet{name: "t-", raw: true, dupShare: 0.3, pending: pendingPayments(20000)}
	r := rand.New(rand.NewSource(1))
	fresh := map[*hookEvent]bool{}
	for range 10000 {
		ev, err := h.next(r)
		if err != nil {
			t.Fatal(err)
		}
		fresh[ev] = true
	}
	share := float64(h.duplicates.Load()) / float64(h.deliveries.Load())
	if share < 0.27 || share > 0.33 {
		t.Errorf("duplicate share %.3f, want about 0.3", share)
	}
	if len(fresh) != len(h.sent) || int64(len(h.sent))+h.duplicates.Load() != 10000 {
		t.Errorf("%d distinct events, %d sent, %d duplicates", len(fresh), len(h.sent), h.duplicates.Load())
	}
	seen := map[string]bool{}
	for _, ev := range h.sent {
		if seen[ev.paymentID] {
			t.Fatalf("payment %s has two events", ev.paymentID)
		}
		seen[ev.paymentID] = true
	}
}

func TestHookRunsOutToDuplicates(t *testing.T) {
	h := &hookSet{name: "t-", raw: true, dupShare: 0.3, pending: pendingPayments(5)}
	r := rand.New(rand.NewSource(2))
	for range 50 {
		if _, err := h.next(r); err != nil {
			t.Fatal(err)
		}
	}
	if len(h.sent) != 5 || h.duplicates.Load() != 45 || !h.exhausted {
		t.Errorf("sent %d, duplicates %d, exhausted %v", len(h.sent), h.duplicates.Load(), h.exhausted)
	}
	empty := &hookSet{name: "e-", raw: true, dupShare: 0.3}
	if _, err := empty.next(r); err == nil {
		t.Error("a set with nothing to deliver did not say so")
	}
}

func TestHookTally(t *testing.T) {
	h := &hookSet{name: "t-", raw: true, pending: pendingPayments(4)}
	r := rand.New(rand.NewSource(3))
	evs := make([]*hookEvent, 4)
	for i := range evs {
		evs[i], _ = h.next(r)
	}
	_ = evs[0].record("applied", nil)
	_ = evs[0].record("duplicate", nil)
	_ = evs[1].record("applied", nil)
	_ = evs[1].record("applied", nil) // applied twice: a violation
	_ = evs[2].record("", errTest)    // failed only: may or may not have committed
	if err := evs[3].record("ignored", nil); err == nil {
		t.Error("an unexpected outcome was not an error")
	}
	got := h.tally()
	if got.sent != 4 || got.applied != 3 || got.acked != 3 || got.unknown != 1 || len(got.overApplied) != 1 {
		t.Errorf("tally %+v", got)
	}
}

var errTest = testError("refused")

type testError string

func (e testError) Error() string { return string(e) }
