package main

import (
	"fmt"
	"strings"
	"time"
)

// The bounds: on the large database each operation within 1.5× of
// its cost on the small one, at p50 and at p99, and spend throughput at
// least 0.8× of the small one's.
const (
	scaleLatencyBound    = 1.5
	scaleThroughputBound = 0.8
)

// scaleRow is one operation on both databases.
type scaleRow struct {
	name         string
	small, large opStats
}

// growth is large over small, at p50 and p99 (0 when small is 0).
func (r scaleRow) growth() (p50, p99 float64) {
	return ratioOf(r.large.p50, r.small.p50), ratioOf(r.large.p99, r.small.p99)
}

func ratioOf(a, b time.Duration) float64 {
	if b <= 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// within says whether the row keeps its bound; a row with failed requests
// does not, whatever its timings.
func (r scaleRow) within() bool {
	p50, p99 := r.growth()
	return r.small.errors == 0 && r.large.errors == 0 && r.small.n > 0 && r.large.n > 0 &&
		p50 <= scaleLatencyBound && p99 <= scaleLatencyBound
}

// scaleReport is the whole comparison.
type scaleReport struct {
	o            scaleOptions
	rows         []scaleRow
	small, large scaleResult
}

// scaleTable puts both databases' results in the order of scaleOps, with
// the start-up first.
func scaleTable(o scaleOptions, small, large scaleResult) scaleReport {
	t := scaleReport{o: o, small: small, large: large}
	t.rows = append(t.rows, scaleRow{name: "start-up to /readyz (one sample)",
		small: opStats{n: 1, p50: small.startup, p99: small.startup},
		large: opStats{n: 1, p50: large.startup, p99: large.startup}})
	for _, op := range scaleOps() {
		t.rows = append(t.rows, scaleRow{name: op.name, small: small.ops[op.name], large: large.ops[op.name]})
	}
	return t
}

func (t scaleReport) throughputRatio() float64 {
	if t.small.throughput <= 0 {
		return 0
	}
	return t.large.throughput / t.small.throughput
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

// markdown is the table, the throughput and the databases' sizes.
func (t scaleReport) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "| operation | small p50 ms | small p99 ms | large p50 ms | large p99 ms | growth p50 | growth p99 | within %.1f×? | requests (small/large) |\n", scaleLatencyBound)
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---|---|\n")
	for _, r := range t.rows {
		p50, p99 := r.growth()
		n := fmt.Sprintf("%d/%d", r.small.n, r.large.n)
		if r.small.errors+r.large.errors > 0 {
			n += fmt.Sprintf(", **errors %d/%d**", r.small.errors, r.large.errors)
		}
		fmt.Fprintf(&b, "| %s | %.2f | %.2f | %.2f | %.2f | %.2f× | %.2f× | %s | %s |\n", r.name,
			ms(r.small.p50), ms(r.small.p99), ms(r.large.p50), ms(r.large.p99), p50, p99, yesNo(r.within()), n)
	}
	ratio := t.throughputRatio()
	fmt.Fprintf(&b, "\nSpend throughput at %d clients (%s, %d users round robin): small %.0f/s, large %.0f/s: **%.2f×** (at least %.1f×? %s)",
		t.o.clients, t.o.duration, scaleThroughputUsers, t.small.throughput, t.large.throughput, ratio,
		scaleThroughputBound, yesNo(t.throughputOK()))
	if t.small.throughErr+t.large.throughErr > 0 {
		fmt.Fprintf(&b, ", **errors %d/%d**", t.small.throughErr, t.large.throughErr)
	}
	b.WriteString("\n\n| database | transactions | pg_database_size | bytes per transaction | deep page at |\n|---|---:|---:|---:|---:|\n")
	for _, d := range []struct {
		name string
		r    scaleResult
	}{{"small", t.small}, {"large", t.large}} {
		fmt.Fprintf(&b, "| %s | %d | %d | %.0f | %d |\n", d.name, d.r.transactions, d.r.dbBytes,
			perTxn(d.r.dbBytes, int(d.r.transactions)), d.r.depth)
	}
	return b.String()
}

func (t scaleReport) throughputOK() bool {
	return t.small.throughErr == 0 && t.large.throughErr == 0 && t.throughputRatio() >= scaleThroughputBound
}

// verdict is errScaleBound, naming the rows, when any row or the
// throughput breaks its bound (or had errors).
func (t scaleReport) verdict() error {
	var broken []string
	for _, r := range t.rows {
		if !r.within() {
			broken = append(broken, r.name)
		}
	}
	if !t.throughputOK() {
		broken = append(broken, "spend throughput")
	}
	if len(broken) > 0 {
		return fmt.Errorf("%w: %s", errScaleBound, strings.Join(broken, "; "))
	}
	return nil
}
