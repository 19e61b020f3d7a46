package main

import (
	"strings"
	"testing"
	"time"
)

func TestEstimateCountsWarmUpsOfClosedLoopsOnly(t *testing.T) {
	o := options{duration: 5 * time.Second, rounds: 3, warmup: 2 * time.Second}
	groups := []group{
		{clients: []int{1, 8}, members: []*workload{{name: "W1"}, {name: "B1"}}},
		{clients: []int{64}, members: []*workload{{name: "W4", hooks: &hookSet{}}, {name: "B4", hooks: &hookSet{}}, {name: "W4o", open: true, hooks: &hookSet{}}}},
	}
	// 7 runs a round; warm-ups for W1 and B1 at two client counts only.
	want := 7*3*5*time.Second + 4*2*time.Second
	if got := o.estimate(groups); got != want {
		t.Fatalf("estimate = %s, want %s", got, want)
	}
	o.warmup = 0
	if got := o.estimate(groups); got != 7*3*5*time.Second {
		t.Fatalf("estimate without warm-up = %s", got)
	}
}

func TestWarmupFlag(t *testing.T) {
	o, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.warmup != 3*time.Second {
		t.Fatalf("default warm-up %s, want 3s", o.warmup)
	}
	if o, err = parseFlags([]string{"--warmup", "0"}); err != nil || o.warmup != 0 {
		t.Fatalf("--warmup 0: %v, %s", err, o.warmup)
	}
	if _, err := parseFlags([]string{"--warmup", "-1s"}); err == nil || !strings.Contains(err.Error(), "--warmup") {
		t.Fatalf("--warmup -1s: %v, want an error naming --warmup", err)
	}
}
