package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tally-billing/tally/internal/testdb"
)

// TestScale runs the --scale mode on two small seeded PostgreSQL databases
// and checks that the table has every operation with its figures, the
// throughput and the sizes. It asserts what is reported, not the timings.
func TestScale(t *testing.T) {
	if os.Getenv(testdb.EnvPostgres) == "" {
		t.Skip(testdb.EnvPostgres + " is not set: the seeder writes PostgreSQL only")
	}
	ctx := context.Background()
	var urls []string
	for _, heavy := range []int{120, 300} {
		db := testdb.New(t, testdb.Postgres)
		if _, err := seedDatabase(ctx, seedOptions{url: db.URL, users: 10, txns: 100, heavy: heavy,
			period: 30 * 24 * time.Hour, randomSeed: 1, progress: io.Discard, reportSizes: io.Discard}); err != nil {
			t.Fatalf("seeding: %v", err)
		}
		urls = append(urls, db.URL)
	}
	var out bytes.Buffer
	err := runScale(ctx, scaleOptions{smallURL: urls[0], largeURL: urls[1], requests: 3, budget: 5 * time.Second,
		warmup: 1, clients: 4, duration: time.Second}, &out)
	table := out.String()
	t.Log("\n" + table)
	if err != nil && !errors.Is(err, errScaleBound) {
		t.Fatalf("the run failed: %v", err)
	}
	if strings.Contains(table, "errors") {
		t.Errorf("some requests failed (see the table)")
	}
	num := `\d+\.\d\d`
	names := []string{"start-up to /readyz (one sample)"}
	for _, op := range scaleOps() {
		names = append(names, op.name)
	}
	for _, name := range names {
		row := regexp.MustCompile(`(?m)^\| ` + regexp.QuoteMeta(name) + ` \| ` + strings.Repeat(num+` \| `, 4) +
			num + `× \| ` + num + `× \| (yes|\*\*no\*\*) \| \d+/\d+ \|$`)
		if !row.MatchString(table) {
			t.Errorf("no row with figures for %q", name)
		}
	}
	if !regexp.MustCompile(`Spend throughput at 4 clients .*: small \d+/s, large \d+/s`).MatchString(table) {
		t.Errorf("no throughput line")
	}
	// The deep page is half of each heavy user's history.
	for _, size := range []string{`\| small \| \d+ \| \d+ \| \d+ \| 60 \|`, `\| large \| \d+ \| \d+ \| \d+ \| 150 \|`} {
		if !regexp.MustCompile(size).MatchString(table) {
			t.Errorf("no size row matching %s", size)
		}
	}
}

// TestScaleVerdict shows that a row with failed requests breaks its bound
// whatever its timings, and that growth past 1.5× at p50 or p99 does.
func TestScaleVerdict(t *testing.T) {
	ok := opStats{n: 10, p50: time.Millisecond, p99: 2 * time.Millisecond}
	cases := []struct {
		name   string
		large  opStats
		within bool
	}{
		{"same", ok, true},
		{"p50 1.5×", opStats{n: 10, p50: 1500 * time.Microsecond, p99: 2 * time.Millisecond}, true},
		{"p50 1.6×", opStats{n: 10, p50: 1600 * time.Microsecond, p99: 2 * time.Millisecond}, false},
		{"p99 2×", opStats{n: 10, p50: time.Millisecond, p99: 4 * time.Millisecond}, false},
		{"faster but failing", opStats{n: 10, errors: 1, p50: time.Microsecond, p99: time.Microsecond}, false},
		{"not measured", opStats{}, false},
	}
	for _, c := range cases {
		if got := (scaleRow{name: c.name, small: ok, large: c.large}).within(); got != c.within {
			t.Errorf("%s: within %v, want %v", c.name, got, c.within)
		}
	}
	r := scaleReport{rows: []scaleRow{{name: "a", small: ok, large: ok}},
		small: scaleResult{throughput: 100}, large: scaleResult{throughput: 79}}
	if err := r.verdict(); !errors.Is(err, errScaleBound) || !strings.Contains(err.Error(), "spend throughput") {
		t.Errorf("throughput 0.79×: verdict %v, want the throughput named", err)
	}
	r.large.throughput = 80
	if err := r.verdict(); err != nil {
		t.Errorf("everything within: verdict %v", err)
	}
}
