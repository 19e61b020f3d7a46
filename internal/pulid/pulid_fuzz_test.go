package pulid

import (
	"errors"
	"strings"
	"testing"

	"github.com/oklog/ulid/v2"
)

// crockford is the ULID alphabet (Crockford's base32: no I, L, O or U).
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// wellFormed is the test's own reading of an id: a non-empty prefix, the
// first underscore, then 26 characters of the alphabet in either case
// (ASCII only), the first at most 7 (a ULID is 128 bits; 26 characters
// hold 130).
func wellFormed(id string) (prefix string, ok bool) {
	i := strings.IndexByte(id, '_')
	if i <= 0 || len(id)-i-1 != 26 {
		return "", false
	}
	for j, c := range []byte(id[i+1:]) {
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		if strings.IndexByte(crockford, c) < 0 || (j == 0 && c > '7') {
			return "", false
		}
	}
	return id[:i], true
}

// FuzzPrefix feeds arbitrary strings to Prefix: it agrees with the test's
// own reading of the format, refuses with ErrMalformed on one line, and an
// accepted id's ULID decodes to one value whatever its case, which encodes
// back to the same text.
func FuzzPrefix(f *testing.F) {
	for _, id := range []string{
		New("usr"), New("pay"), New("txn"), New("x"),
		"usr_01jd6m3v9q8x0n2k4t7w5y1zbc", "USR_01JD6M3V9Q8X0N2K4T7W5Y1ZBC", // upper case, prefix too
		"usr_7zzzzzzzzzzzzzzzzzzzzzzzzz", // the largest ULID
		"usr_80000000000000000000000000", // one past it: overflows 128 bits
		"usr_01jd6m3v9q8x0n2k4t7w5y1zbi", // I, L, O, U are not in the alphabet
		"usr_01jd6m3v9q8x0n2k4t7w5y1zb", "usr_01jd6m3v9q8x0n2k4t7w5y1zbcc", "usr__1jd6m3v9q8x0n2k4t7w5y1zbc",
		"a_b_01jd6m3v9q8x0n2k4t7w5y1zbc", "_01jd6m3v9q8x0n2k4t7w5y1zbc", "usr", "usr_", "", "_",
		"usr\x00_01jd6m3v9q8x0n2k4t7w5y1zbc", "usr_01jd6m3v9q8x0n2k4t7w5y1zb\x00", "usr\n_01jd6m3v9q8x0n2k4t7w5y1zbc",
		"usr_01jd6m3v9q8x0n2k4t7w5y1zbſ", // a non-ASCII letter whose upper case is ASCII S
		"💥_01jd6m3v9q8x0n2k4t7w5y1zbc", "usr_01jd6m3v9q8x0n2k4t7w5y1zb\xff",
	} {
		f.Add(id)
	}
	f.Fuzz(func(t *testing.T, id string) {
		got, err := Prefix(id)
		want, ok := wellFormed(id)
		if !ok {
			if !errors.Is(err, ErrMalformed) || got != "" {
				t.Fatalf("Prefix(%q) = %q, %v; want ErrMalformed", id, got, err)
			}
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("Prefix(%q): error %q spans lines", id, err)
			}
			return
		}
		if err != nil || got != want {
			t.Fatalf("Prefix(%q) = %q, %v; want %q", id, got, err, want)
		}
		rest := id[len(want)+1:]
		u, err := ulid.ParseStrict(strings.ToUpper(rest))
		if err != nil {
			t.Fatalf("accepted %q, whose ULID does not parse: %v", id, err)
		}
		if u.String() != strings.ToUpper(rest) {
			t.Fatalf("accepted %q, whose ULID encodes back as %s", id, u)
		}
		lower, err := ulid.ParseStrict(strings.ToLower(rest))
		if err != nil || lower != u {
			t.Fatalf("%q: the lower-case spelling is another ULID (%v)", id, err)
		}
	})
}

// FuzzNew makes ids with fuzzed prefixes: a prefix without an underscore
// round-trips through Prefix, ids come out lower case, of a fixed length,
// and in the order they were made.
func FuzzNew(f *testing.F) {
	for _, p := range []string{"usr", "pay", "a", "USR", "x-y", "é", "\x00", "a_b", ""} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, prefix string) {
		a, b := New(prefix), New(prefix)
		if a >= b {
			t.Fatalf("ids made in sequence do not sort: %q then %q", a, b)
		}
		if !strings.HasPrefix(a, prefix+"_") || len(a) != len(prefix)+1+ulidLen || strings.ToLower(a[len(prefix):]) != a[len(prefix):] {
			t.Fatalf("New(%q) = %q", prefix, a)
		}
		got, err := Prefix(a)
		if prefix == "" || strings.Contains(prefix, "_") {
			// Such a prefix cannot be read back: the schema's are three
			// letters.
			if err == nil && got == prefix {
				t.Fatalf("Prefix(%q) read back the prefix %q", a, prefix)
			}
			return
		}
		if err != nil || got != prefix {
			t.Fatalf("Prefix(New(%q)) = %q, %v", prefix, got, err)
		}
	})
}
