package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// soakWarmUp is left out of the RSS trend: the server's heap, pools and
// caches grow to their working size first.
const soakWarmUp = 30 * time.Second

// soakSampleEvery is how often the soak records the server's RSS.
const soakSampleEvery = 10 * time.Second

// soakResult is what a soak measured.
type soakResult struct {
	Duration string      `json:"duration"`
	WarmUp   string      `json:"warm_up"`
	Clients  int         `json:"clients"`
	Mix      string      `json:"mix"`
	Ops      []summary   `json:"ops"`
	RSS      []rssSample `json:"rss"`
	StartMiB float64     `json:"start_rss_mib"`
	EndMiB   float64     `json:"end_rss_mib"`
	PeakMiB  float64     `json:"peak_rss_mib"`
	// SlopeMiBPerMin is the least-squares trend of RSS after the warm-up.
	SlopeMiBPerMin float64 `json:"slope_mib_per_min"`
	CPU            float64 `json:"server_cpu_cores"`
	Retries        int64   `json:"retries"`
	Check          string  `json:"check"`
}

type rssSample struct {
	Seconds float64 `json:"seconds"`
	MiB     float64 `json:"mib"`
}

// soakKind is one kind of operation in the soak's mix.
type soakKind struct {
	w      *workload
	weight int
}

// soak runs the mixed load for o.soak: spends over many accounts, balance
// reads, history pages and webhooks, at the largest client count, sampling
// the server's RSS, and checks the invariants at the end.
func (e *env) soak(ctx context.Context, res *results) error {
	o := e.o
	clients := maxClients(o.clients)
	kinds, err := e.soakKinds(ctx)
	if err != nil {
		return err
	}
	var mix []string
	for _, k := range kinds {
		mix = append(mix, fmt.Sprintf("%d%% %s", k.weight, k.w.name))
	}

	logf("soak: %s at %d clients (%s)", o.soak, clients, strings.Join(mix, ", "))
	// Ctrl-C ends the load early; what follows it (measuring, checking)
	// must still run.
	measure := context.WithoutCancel(ctx)
	probe, err := e.server.begin(measure, e.api)
	if err != nil {
		return err
	}
	started := time.Now()
	stopSampling := e.sampleRSS(started)
	samples := runMixed(ctx, clients, o.soak, kinds)
	rss := stopSampling()
	usage, err := probe.end(measure, e.api)
	if err != nil {
		return err
	}
	if err := e.server.alive(); err != nil {
		return err
	}
	elapsed := time.Since(started)
	if v, err := procStatus(e.server.pid, "VmRSS"); err == nil {
		rss = append(rss, rssSample{Seconds: elapsed.Seconds(), MiB: float64(v) / (1 << 20)})
	}
	s := &soakResult{Duration: elapsed.Round(time.Second).String(), WarmUp: soakWarmUp.String(), Clients: clients,
		Mix: strings.Join(mix, ", "), RSS: rss, PeakMiB: float64(usage.peakRSS) / (1 << 20),
		CPU: usage.cpu.Seconds() / elapsed.Seconds(), Retries: int64(usage.retries), Check: "ok"}
	for i, k := range kinds {
		s.Ops = append(s.Ops, summarize(k.w, o.db, clients, 0, 1, samples[i]))
	}
	if len(rss) > 0 {
		s.StartMiB, s.EndMiB = rss[0].MiB, rss[len(rss)-1].MiB
	}
	s.SlopeMiBPerMin = rssTrend(rss, soakWarmUp)
	checkErr := e.verify(measure)
	var v *violation
	if checkErr != nil && !errors.As(checkErr, &v) {
		return checkErr
	}
	if checkErr != nil {
		s.Check = checkErr.Error()
	}
	res.Soak = s
	return nil
}

// soakKinds seeds what the soak's mix needs (accounts, history, pending
// webhooks) and returns the mix.
func (e *env) soakKinds(ctx context.Context) ([]soakKind, error) {
	o := e.o
	accounts, err := e.seedAccounts(ctx, "bench-soak-spend-", o.accounts, seedBalance, false)
	if err != nil {
		return nil, err
	}
	if err := e.seedHistory(ctx, o.history, o.depths); err != nil {
		return nil, err
	}
	hooks, err := e.seedHooks(ctx, "bench-soak-buy-", false, o.dupShare)
	if err != nil {
		return nil, err
	}
	// A guess of 600 webhooks a second (a 5-minute soak on a 2-core
	// machine sent 400 a second once purchases were batched); should they
	// run out, the rest of the soak sends duplicates, which is still load.
	if err := hooks.ensurePending(ctx, e.db.Ent, hooks.budget(o.soak, 600)); err != nil {
		return nil, err
	}
	if err := e.analyzeSeed(ctx); err != nil {
		return nil, err
	}
	deep := e.depths[len(e.depths)-1]
	kinds := []soakKind{
		{&workload{name: "spend", group: "spend", desc: fmt.Sprintf("spendCredits, %d accounts, uniform", o.accounts)}, 50},
		{&workload{name: "balance", group: "balance", desc: "viewer { creditsBalance }"}, 25},
		{&workload{name: "page", group: "page", desc: fmt.Sprintf("transactions page at depth %d", deep.depth)}, 15},
		{&workload{name: "webhook", group: "webhook", desc: fmt.Sprintf("checkout.session.completed, %.0f%% duplicates", 100*o.dupShare)}, 10},
	}
	kinds[0].w.newOp = func(c int) op {
		return apiSpendOp(e.api, e.serviceToken, accounts, newChooser("uniform", o.accounts, chooserSeed(c)), c)
	}
	kinds[1].w.newOp = func(int) op { return apiBalanceOp(e.api, e.readerToken, readerCredit) }
	kinds[2].w.newOp = func(int) op { return apiPageOp(e.api, e.historyToken, deep) }
	kinds[3].w.newOp = func(c int) op { return apiHookOp(e.api, hooks, benchWebhookSecret, c) }
	return kinds, nil
}

// sampleRSS records the server's RSS every soakSampleEvery, from now until
// the function it returns is called; that function returns the samples.
func (e *env) sampleRSS(started time.Time) (stop func() []rssSample) {
	var rss []rssSample
	var rssMu sync.Mutex
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(soakSampleEvery)
		defer t.Stop()
		for {
			if v, err := procStatus(e.server.pid, "VmRSS"); err == nil {
				rssMu.Lock()
				rss = append(rss, rssSample{Seconds: time.Since(started).Seconds(), MiB: float64(v) / (1 << 20)})
				rssMu.Unlock()
			}
			select {
			case <-stopSampling:
				return
			case <-t.C:
			}
		}
	}()
	return func() []rssSample {
		close(stopSampling)
		<-sampled
		return rss
	}
}

// rssTrend is the least-squares slope of RSS over time after the warm-up,
// in MiB per minute.
func rssTrend(rss []rssSample, warmUp time.Duration) float64 {
	var xs, ys []float64
	for _, p := range rss {
		if p.Seconds >= warmUp.Seconds() {
			xs = append(xs, p.Seconds/60)
			ys = append(ys, p.MiB)
		}
	}
	return slope(xs, ys)
}

// runMixed is runClosed with a weighted choice of operation per request;
// it stops early when ctx is cancelled (Ctrl-C), after the requests in
// flight.
func runMixed(ctx context.Context, clients int, duration time.Duration, kinds []soakKind) []sample {
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		stopped atomic.Bool
	)
	all := make([]sample, len(kinds))
	total := 0
	for _, k := range kinds {
		total += k.weight
	}
	start := time.Now()
	timer := time.AfterFunc(duration, func() { stopped.Store(true) })
	defer timer.Stop()
	stopOnCancel := context.AfterFunc(ctx, func() { stopped.Store(true) })
	defer stopOnCancel()
	for c := range clients {
		ops := make([]op, len(kinds))
		for i, k := range kinds {
			ops[i] = k.w.newOp(c)
		}
		r := rand.New(rand.NewSource(chooserSeed(c)))
		wg.Go(func() {
			mine := make([]sample, len(kinds))
			for !stopped.Load() {
				i, n := 0, r.Intn(total)
				for n >= kinds[i].weight {
					n -= kinds[i].weight
					i++
				}
				opCtx, cancel := context.WithTimeout(context.Background(), opTimeout)
				t0 := time.Now()
				err := ops[i](opCtx)
				mine[i].latencies = append(mine[i].latencies, time.Since(t0))
				cancel()
				if err != nil {
					mine[i].errors++
					reportError(err)
				}
			}
			mu.Lock()
			for i := range all {
				all[i].latencies = append(all[i].latencies, mine[i].latencies...)
				all[i].errors += mine[i].errors
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	for i := range all {
		all[i].elapsed = elapsed
	}
	return all
}

func (s *soakResult) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nSoak: %s at %d clients (%s)\n\n", s.Duration, s.Clients, s.Mix)
	b.WriteString("| operation | ops/s | p50 ms | p95 ms | p99 ms | errors |\n| --- | ---: | ---: | ---: | ---: | ---: |\n")
	for _, o := range s.Ops {
		fmt.Fprintf(&b, "| %s (%s) | %.0f | %.2f | %.2f | %.2f | %d (%.2f%%) |\n",
			o.Workload, o.Description, o.OpsPerSec, o.P50ms, o.P95ms, o.P99ms, o.Errors, 100*o.ErrorRate)
	}
	fmt.Fprintf(&b, "\nServer RSS: start %.1f MiB, end %.1f MiB, peak %.1f MiB; trend after %s: %+.2f MiB/min (%d samples every %s). CPU %.2f cores; %d ledger retries.\n",
		s.StartMiB, s.EndMiB, s.PeakMiB, s.WarmUp, s.SlopeMiBPerMin, len(s.RSS), soakSampleEvery, s.CPU, s.Retries)
	fmt.Fprintf(&b, "Invariant check at the end: %s.\n", s.Check)
	return b.String()
}
