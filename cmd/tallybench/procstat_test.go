package main

import (
	"os"
	"strings"
	"testing"
)

func TestParseMetrics(t *testing.T) {
	exposition := `# HELP tally_ledger_retries_total Ledger transactions rolled back.
# TYPE tally_ledger_retries_total counter
tally_ledger_retries_total 12
tally_ledger_transactions_total 3.4e+06
tally_ledger_conflicts_total 0 1700000000000
tally_http_requests_total{route="/graphql",method="POST",status="200"} 99
tally_ledger_retries_total_other 5
`
	got, err := parseMetrics(strings.NewReader(exposition),
		"tally_ledger_transactions_total", "tally_ledger_retries_total", "tally_ledger_conflicts_total")
	if err != nil {
		t.Fatal(err)
	}
	if got["tally_ledger_retries_total"] != 12 || got["tally_ledger_transactions_total"] != 3.4e6 || got["tally_ledger_conflicts_total"] != 0 {
		t.Errorf("parsed %v", got)
	}
	// A server without the counters cannot report a retry rate.
	if _, err := parseMetrics(strings.NewReader("go_goroutines 8\n"), "tally_ledger_retries_total"); err == nil {
		t.Error("a missing counter was not reported")
	}
}

func TestParseStatusField(t *testing.T) {
	status := "Name:\ttally\nVmPeak:\t 1234 kB\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\n"
	if got, err := parseStatusField(status, "VmHWM"); err != nil || got != 50<<20 {
		t.Errorf("VmHWM = %d, %v; want %d", got, err, 50<<20)
	}
	if _, err := parseStatusField(status, "VmSwap"); err == nil {
		t.Error("a missing field was not reported")
	}
}

func TestProcOfThisProcess(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc on this system")
	}
	if _, err := procCPU(os.Getpid()); err != nil {
		t.Errorf("procCPU: %v", err)
	}
	if rss, err := procStatus(os.Getpid(), "VmRSS"); err != nil || rss <= 0 {
		t.Errorf("VmRSS = %d, %v", rss, err)
	}
}
