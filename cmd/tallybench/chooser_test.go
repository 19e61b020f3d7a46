package main

import (
	"testing"
)

func TestZipfChooserIsSkewed(t *testing.T) {
	const n, draws = 10000, 200000
	pick := newChooser("zipf", n, 1)
	counts := make([]int, n)
	for range draws {
		i := pick()
		if i < 0 || i >= n {
			t.Fatalf("index %d outside [0, %d)", i, n)
		}
		counts[i]++
	}
	// Index 0 is the most popular, and the skew is strong: with s = 1.1
	// over 10,000 accounts the hottest takes about 15% and the hottest
	// hundred about two thirds (bounds kept loose: this is a shape test).
	for i := 1; i < n; i++ {
		if counts[i] > counts[0] {
			t.Fatalf("index %d drawn %d times, more than index 0 (%d)", i, counts[i], counts[0])
		}
	}
	top1 := float64(counts[0]) / draws
	top100 := 0
	for _, c := range counts[:100] {
		top100 += c
	}
	if top1 < 0.10 || top1 > 0.20 {
		t.Errorf("hottest account share %.3f, want about 0.15", top1)
	}
	if s := float64(top100) / draws; s < 0.55 || s > 0.75 {
		t.Errorf("hottest hundred share %.3f, want about two thirds", s)
	}
}

func TestUniformChooserCoversAll(t *testing.T) {
	const n = 100
	pick := newChooser("uniform", n, 7)
	seen := map[int]int{}
	for range 100000 {
		i := pick()
		if i < 0 || i >= n {
			t.Fatalf("index %d outside [0, %d)", i, n)
		}
		seen[i]++
	}
	if len(seen) != n {
		t.Fatalf("%d of %d indexes drawn", len(seen), n)
	}
	for i, c := range seen {
		// 1000 expected per index; a uniform draw stays well inside this.
		if c < 700 || c > 1300 {
			t.Errorf("index %d drawn %d times, want about 1000", i, c)
		}
	}
}

func TestChooserOfOneAccount(t *testing.T) {
	for _, dist := range []string{"uniform", "zipf"} {
		pick := newChooser(dist, 1, 3)
		for range 10 {
			if i := pick(); i != 0 {
				t.Fatalf("%s over one account picked %d", dist, i)
			}
		}
	}
}

func TestGroupOrderRotates(t *testing.T) {
	g := group{members: []*workload{{name: "W1"}, {name: "B1"}, {name: "B2"}}}
	firsts := map[string]bool{}
	for round := range 3 {
		order := g.order(round)
		if len(order) != 3 {
			t.Fatalf("round %d: %d members", round, len(order))
		}
		firsts[order[0].name] = true
	}
	// Over as many rounds as members, each goes first once.
	if len(firsts) != 3 {
		t.Errorf("first in rounds 0-2: %v, want each member once", firsts)
	}
}
