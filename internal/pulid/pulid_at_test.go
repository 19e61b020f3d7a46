package pulid

import (
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
)

// A seeded id made for a past time carries that time, so ids still sort
// with the rows' created_at.
func TestNewAt(t *testing.T) {
	at := time.Date(2025, 3, 4, 5, 6, 7, 8_000_000, time.UTC)
	id := NewAt("txn", at)
	if p, err := Prefix(id); err != nil || p != "txn" {
		t.Fatalf("Prefix(%q) = %q, %v", id, p, err)
	}
	u, err := ulid.ParseStrict(strings.ToUpper(strings.TrimPrefix(id, "txn_")))
	if err != nil {
		t.Fatal(err)
	}
	if got := ulid.Time(u.Time()); !got.Equal(at.Truncate(time.Millisecond)) {
		t.Errorf("time part %s, want %s", got, at)
	}
	if later := NewAt("txn", at.Add(time.Millisecond)); later <= id {
		t.Errorf("%s made a millisecond later sorts before %s", later, id)
	}
}

// TestBoundAndTime: Bound(t) sorts after every id made before t and at or
// before every id made at t or later; Time gives an id's time back (to the
// millisecond a ULID keeps) and refuses what is not an id.
func TestBoundAndTime(t *testing.T) {
	at := time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)
	bound := Bound("txn", at)
	for range 100 {
		before, after := NewAt("txn", at.Add(-time.Millisecond)), NewAt("txn", at)
		if !(before < bound && bound <= after) {
			t.Fatalf("%s, %s, %s are not in order", before, bound, after)
		}
	}
	if got, ok := Time(NewAt("usr", at.Add(1500*time.Microsecond))); !ok || !got.Equal(at.Add(time.Millisecond)) {
		t.Fatalf("Time: %v %v", got, ok)
	}
	for _, bad := range []string{"", "txn", "txn_", "txn_01jd6m3v9q8x0n2k4t7w5y1zbi"} {
		if _, ok := Time(bad); ok {
			t.Errorf("Time(%q) accepted", bad)
		}
	}
}
