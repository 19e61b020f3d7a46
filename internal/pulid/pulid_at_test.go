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
