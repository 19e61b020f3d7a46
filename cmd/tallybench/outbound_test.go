package main

import (
	"net/http"
	"strings"
	"testing"
)

func TestParseThreshold(t *testing.T) {
	for in, want := range map[string]int64{"": 0, "0": 0, " 100 ": 100, "seed": seedBalance, "9007199254740991": 1<<53 - 1} {
		if got, err := parseThreshold("--low-balance-threshold", in); err != nil || got != want {
			t.Errorf("parseThreshold(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"-1", "9007199254740992", "1e6", "Seed", "10 credits"} {
		if got, err := parseThreshold("--low-balance-threshold", in); err == nil {
			t.Errorf("parseThreshold(%q) = %d, want an error", in, got)
		}
	}
	if env := outboundEnv(0); env != nil {
		t.Errorf("no threshold sets %v", env)
	}
	if env := outboundEnv(seedBalance); env["TALLY_LOW_BALANCE_THRESHOLD"] != "1099511627776" || env["TALLY_WEBHOOK_ALLOW_HTTP"] != "true" {
		t.Errorf("threshold 2^40 sets %v", env)
	}
}

// TestCrossingShareFlag: a share from 0 to 1, only of accounts that have
// a threshold to cross.
func TestCrossingShareFlag(t *testing.T) {
	o, err := parseFlags([]string{"--low-balance-threshold", "1000", "--crossing-share", "0.01"})
	if err != nil || o.crossingShare != 0.01 {
		t.Fatalf("--crossing-share 0.01: %v, %g", err, o.crossingShare)
	}
	for _, args := range [][]string{
		{"--crossing-share", "0.01"},
		{"--auto-recharge", "1000", "--crossing-share", "-0.1"},
		{"--auto-recharge", "1000", "--crossing-share", "1.5"},
	} {
		if _, err := parseFlags(args); err == nil || !strings.Contains(err.Error(), "--crossing-share") {
			t.Errorf("%v: %v, want an error naming --crossing-share", args, err)
		}
	}
}

// TestReceiverCountsEventsOnly: deliveries are accepted and counted by
// type; a body that is not an event is refused and not counted.
func TestReceiverCountsEventsOnly(t *testing.T) {
	r, err := startReceiver()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for body, want := range map[string]int{
		`{"type":"balance.low","data":{}}`:      http.StatusNoContent,
		`{"type":"balance.low"}`:                http.StatusNoContent,
		`{"type":"balance.depleted","data":{}}`: http.StatusNoContent,
		`{"data":{}}`:                           http.StatusBadRequest,
		`not json`:                              http.StatusBadRequest,
	} {
		resp, err := http.Post(r.url, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: status %d, want %d", body, resp.StatusCode, want)
		}
	}
	if n, types := r.received(); n != 3 || types != "balance.depleted 1, balance.low 2" {
		t.Errorf("received %d (%s), want 3 (balance.depleted 1, balance.low 2)", n, types)
	}
}
