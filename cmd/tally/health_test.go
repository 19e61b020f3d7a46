package main

import "testing"

// TestReadinessURL: a server listening on every interface is probed on
// loopback; anything else as given.
func TestReadinessURL(t *testing.T) {
	for in, want := range map[string]string{
		"0.0.0.0:8080":   "http://127.0.0.1:8080/readyz",
		":8080":          "http://127.0.0.1:8080/readyz",
		"[::]:9000":      "http://127.0.0.1:9000/readyz",
		"127.0.0.1:8080": "http://127.0.0.1:8080/readyz",
		"[::1]:8080":     "http://[::1]:8080/readyz",
		"tally:8080":     "http://tally:8080/readyz",
	} {
		if got, err := readinessURL(in); err != nil || got != want {
			t.Errorf("readinessURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"8081", "", "nope", "a:b:c"} {
		if got, err := readinessURL(bad); err == nil {
			t.Errorf("readinessURL(%q) = %q, want an error", bad, got)
		}
	}
}
