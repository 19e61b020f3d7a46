package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// ledgerCounters are the ledger's running totals the server exports on
// /metrics (since the server started).
type ledgerCounters struct {
	transactions, retries, conflicts float64
}

// scrapeLedger reads the ledger's counters from the server's /metrics.
func scrapeLedger(ctx context.Context, api *gqlClient, baseURL string) (ledgerCounters, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/metrics", nil)
	if err != nil {
		return ledgerCounters{}, err
	}
	resp, err := api.http.Do(req)
	if err != nil {
		return ledgerCounters{}, fmt.Errorf("scraping /metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ledgerCounters{}, fmt.Errorf("scraping /metrics: HTTP %d", resp.StatusCode)
	}
	values, err := parseMetrics(resp.Body, "tally_ledger_transactions_total", "tally_ledger_retries_total", "tally_ledger_conflicts_total")
	if err != nil {
		return ledgerCounters{}, fmt.Errorf("scraping /metrics: %w", err)
	}
	return ledgerCounters{
		transactions: values["tally_ledger_transactions_total"],
		retries:      values["tally_ledger_retries_total"],
		conflicts:    values["tally_ledger_conflicts_total"],
	}, nil
}

// parseMetrics reads the named unlabelled samples of a Prometheus text
// exposition; every name must be present (a server without them cannot
// report a retry rate, and saying 0 would be a lie).
func parseMetrics(r io.Reader, names ...string) (map[string]float64, error) {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, value, ok := strings.Cut(line, " ")
		if !ok || !want[name] {
			continue
		}
		// A sample may carry a timestamp after the value.
		value, _, _ = strings.Cut(strings.TrimSpace(value), " ")
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return nil, fmt.Errorf("metric %s: %q is not a number", name, value)
		}
		out[name] = v
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, n := range names {
		if _, ok := out[n]; !ok {
			return nil, fmt.Errorf("the server does not export %s", n)
		}
	}
	return out, nil
}
