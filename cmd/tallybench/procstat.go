package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's CPU times. It is
// 100 on every Linux architecture Go supports (the kernel fixes it for user
// space whatever its internal HZ), and reading it properly would need cgo.
const clockTicks = 100

// procCPU returns the user+system CPU time process pid has used, all its
// threads together.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces and parentheses: the
	// fields to count start after its last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("unexpected CPU times in /proc/%d/stat", pid)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// procStatus returns a memory field of /proc/<pid>/status (VmRSS, VmHWM)
// in bytes.
func procStatus(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseStatusField(string(b), field)
}

func parseStatusField(status, field string) (int64, error) {
	for _, line := range strings.Split(status, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || k != field {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("unexpected %s line %q", field, line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("unexpected %s line %q", field, line)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("no %s in the process status", field)
}

// usageProbe measures the server over one run.
type usageProbe struct {
	s *tallyServer
	// hwm says the kernel's high-water mark was reset at the start, so
	// VmHWM at the end is this run's peak.
	hwm      bool
	cpu0     time.Duration
	counters ledgerCounters
	sampled  atomic.Int64
	stop     chan struct{}
	done     chan struct{}
}

// begin starts measuring the server: resets its RSS high-water mark
// (writing 5 to clear_refs; refused in some containers, in which case
// VmRSS is sampled every 100 ms instead), notes its CPU time and its
// ledger counters.
func (s *tallyServer) begin(ctx context.Context, api *gqlClient) (*usageProbe, error) {
	p := &usageProbe{s: s, stop: make(chan struct{}), done: make(chan struct{})}
	p.hwm = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", s.pid), []byte("5"), 0) == nil
	var err error
	if p.cpu0, err = procCPU(s.pid); err != nil {
		return nil, fmt.Errorf("reading the server's CPU time: %w", err)
	}
	if p.counters, err = scrapeLedger(ctx, api, s.baseURL); err != nil {
		return nil, err
	}
	go p.sample(100 * time.Millisecond)
	return p, nil
}

func (p *usageProbe) sample(every time.Duration) {
	defer close(p.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if rss, err := procStatus(p.s.pid, "VmRSS"); err == nil && rss > p.sampled.Load() {
			p.sampled.Store(rss)
		}
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
	}
}

// end stops measuring and returns what the server used since begin.
func (p *usageProbe) end(ctx context.Context, api *gqlClient) (serverUsage, error) {
	close(p.stop)
	<-p.done
	u := serverUsage{measured: true, peakRSS: p.sampled.Load(), rssMethod: "sampled"}
	if p.hwm {
		if hwm, err := procStatus(p.s.pid, "VmHWM"); err == nil {
			u.peakRSS, u.rssMethod = max(hwm, u.peakRSS), "VmHWM"
		}
	}
	cpu, err := procCPU(p.s.pid)
	if err != nil {
		return u, fmt.Errorf("reading the server's CPU time: %w", err)
	}
	u.cpu = cpu - p.cpu0
	after, err := scrapeLedger(ctx, api, p.s.baseURL)
	if err != nil {
		return u, err
	}
	u.retries = after.retries - p.counters.retries
	u.conflicts = after.conflicts - p.counters.conflicts
	u.ledgerTxns = after.transactions - p.counters.transactions
	return u, nil
}
