package pulid

import (
	"errors"
	"strings"
	"testing"
)

func TestNewIsPrefixedUniqueAndSortable(t *testing.T) {
	seen := map[string]bool{}
	prev := ""
	for range 1000 {
		id := New("usr")
		if !strings.HasPrefix(id, "usr_") || len(id) != len("usr_")+ulidLen {
			t.Fatalf("malformed id %q", id)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
		if id <= prev {
			t.Fatalf("ids made in sequence do not sort: %q after %q", id, prev)
		}
		prev = id
		if p, err := Prefix(id); err != nil || p != "usr" {
			t.Fatalf("Prefix(%q) = %q, %v", id, p, err)
		}
	}
}

func TestPrefixRejectsMalformedIDs(t *testing.T) {
	for _, id := range []string{
		"", "usr", "usr_", "_01jd6m3v9q8x0n2k4t7w5y1zbc", "usr_01jd6m3v9q8x0n2k4t7w5y1zb",
		"usr_01jd6m3v9q8x0n2k4t7w5y1zbcc", "usr_01jd6m3v9q8x0n2k4t7w5y1zbu", "usr 01jd6m3v9q8x0n2k4t7w5y1zbc",
		"usr_81jd6m3v9q8x0n2k4t7w5y1zbc", // overflows the ULID's 128 bits
	} {
		if p, err := Prefix(id); !errors.Is(err, ErrMalformed) {
			t.Errorf("Prefix(%q) = %q, %v; want ErrMalformed", id, p, err)
		}
	}
}
