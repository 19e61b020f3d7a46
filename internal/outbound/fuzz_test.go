package outbound

import (
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/tally-billing/tally/internal/apperr"
)

// FuzzCheckURL: whatever a tenant types, CheckURL answers INVALID_ARGUMENT
// on "url" or accepts a URL whose shape and literal address the strict
// policy allows.
func FuzzCheckURL(f *testing.F) {
	for _, s := range []string{
		"https://hooks.example.com/x", "https://127.0.0.1/", "https://[::ffff:10.0.0.1]/",
		"https://[fe80::1%25eth0]/", "https://2130706433/", "http://x/", "https://u@x/", "https://x/#f",
		"https://[64:ff9b::a00:1]/", "https://localhost./", "https://0x7f.1/",
	} {
		f.Add(s)
	}
	strict := Policy{}
	f.Fuzz(func(t *testing.T, raw string) {
		err := strict.CheckURL(raw)
		if err != nil {
			if e, ok := apperr.As(err); !ok || e.Code != apperr.InvalidArgument || e.Field != "url" {
				t.Fatalf("CheckURL(%q) = %#v", raw, err)
			}
			return
		}
		u, perr := url.Parse(raw)
		if perr != nil || u.Scheme != "https" || u.User != nil || u.Hostname() == "" || strings.Contains(raw, "#") {
			t.Fatalf("CheckURL accepted %q", raw)
		}
		if ip, err := netip.ParseAddr(u.Hostname()); err == nil && !strict.Allowed(ip) {
			t.Fatalf("CheckURL accepted %q with a refused address", raw)
		}
	})
}

// FuzzDisplayBody: what admins see is short, valid UTF-8, without control
// or format characters, and a prefix of the body when the body is plain.
func FuzzDisplayBody(f *testing.F) {
	f.Add([]byte("hello"))
	f.Add([]byte("bad\xff\x00\u202e"))
	f.Add([]byte(strings.Repeat("é", 600)))
	f.Fuzz(func(t *testing.T, raw []byte) {
		got := displayBody(raw)
		if len(got) > maxBodyBytes || !utf8.ValidString(got) {
			t.Fatalf("displayBody: %d bytes, valid %v", len(got), utf8.ValidString(got))
		}
		for _, r := range got {
			if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
				t.Fatalf("displayBody kept %U", r)
			}
		}
		plain := true
		for _, r := range string(raw) {
			if r == utf8.RuneError || unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
				plain = false
			}
		}
		if plain && !strings.HasPrefix(string(raw), got) {
			t.Fatalf("displayBody(%q) = %q, not a prefix", raw, got)
		}
	})
}
