package main

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// Bar colours: the workload through Tally, then its first and second
// baselines (B1/B3/B4, then B2).
var barColors = []string{"#1f77b4", "#ff7f0e", "#2ca02c"}

// Chart geometry, in SVG user units.
const (
	chartLeft     = 70.0
	chartTop      = 50.0
	panelHeight   = 220.0
	panelGap      = 80.0
	barWidth      = 14.0
	barGap        = 2.0
	categoryGap   = 22.0
	minCategoryW  = 56.0
	chartRightPad = 30.0
)

// category is one x position of the chart: a workload at one client count,
// with its baselines beside it.
type category struct {
	label, sub string
	bars       []summary // the workload first, then its baselines
}

func categories(rows []summary) []category {
	var out []category
	index := map[string]int{}
	for _, s := range rows {
		k := fmt.Sprintf("%s/%d", s.Group, s.Clients)
		i, ok := index[k]
		if !ok {
			sub := fmt.Sprintf("c=%d", s.Clients)
			if s.TargetRate > 0 {
				sub = fmt.Sprintf("%.0f/s", s.TargetRate)
			}
			out = append(out, category{label: s.Group, sub: sub})
			i = len(out) - 1
			index[k] = i
		}
		// The workload through Tally leads its category whatever the
		// order it came in.
		if s.Workload == s.Group {
			out[i].bars = append([]summary{s}, out[i].bars...)
		} else {
			out[i].bars = append(out[i].bars, s)
		}
	}
	return out
}

// logScale maps values to a panel's height on a log10 axis spanning whole
// decades around them.
type logScale struct{ lo, hi float64 } // exponents

func newLogScale(values []float64) logScale {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range values {
		if v > 0 {
			lo, hi = min(lo, math.Log10(v)), max(hi, math.Log10(v))
		}
	}
	if math.IsInf(lo, 1) {
		return logScale{0, 1}
	}
	s := logScale{math.Floor(lo), math.Ceil(hi)}
	if s.hi <= s.lo {
		s.hi = s.lo + 1
	}
	return s
}

// height is how tall a bar of value v is; values at or below the axis's
// bottom get a sliver so that they stay visible.
func (s logScale) height(v float64) float64 {
	if v <= 0 {
		return 0
	}
	h := (math.Log10(v) - s.lo) / (s.hi - s.lo) * panelHeight
	return min(max(h, 1), panelHeight)
}

// chartSVG draws throughput and p99 of every row, each workload beside its
// baselines, on log axes (baselines and API differ by orders of magnitude).
func chartSVG(rows []summary, title string) []byte {
	cats := categories(rows)
	width := chartLeft + chartRightPad
	for _, c := range cats {
		width += catWidth(c)
	}
	height := chartTop + 2*panelHeight + 2*panelGap + 20
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="11">`+"\n",
		width, height, width, height)
	fmt.Fprintf(&b, `<rect x="0" y="0" width="%.0f" height="%.0f" fill="white"/>`+"\n", width, height)
	text(&b, chartLeft, 20, "start", 14, title)
	legend(&b, chartLeft, 38)
	panels := []struct {
		name  string
		value func(summary) float64
	}{
		{"throughput, ops/s (log)", func(s summary) float64 { return s.OpsPerSec }},
		{"p99 latency, ms (log)", func(s summary) float64 { return s.P99ms }},
	}
	for pi, p := range panels {
		top := chartTop + float64(pi)*(panelHeight+panelGap) + 10
		var values []float64
		for _, s := range rows {
			values = append(values, p.value(s))
		}
		scale := newLogScale(values)
		axis(&b, top, width, scale, p.name)
		x := chartLeft + categoryGap/2
		for _, c := range cats {
			w := catWidth(c)
			bx := x + (w-categoryGap-float64(len(c.bars))*(barWidth+barGap))/2
			for i, s := range c.bars {
				v := p.value(s)
				h := scale.height(v)
				color := barColors[min(i, len(barColors)-1)]
				fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>`,
					bx, top+panelHeight-h, barWidth, h, color)
				xml.EscapeText(&b, []byte(fmt.Sprintf("%s %s: %.4g", s.Workload, c.sub, v)))
				b.WriteString("</title></rect>\n")
				bx += barWidth + barGap
			}
			cx := x + (w-categoryGap)/2
			text(&b, cx, top+panelHeight+14, "middle", 10, c.label)
			text(&b, cx, top+panelHeight+26, "middle", 9, c.sub)
			x += w
		}
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

func catWidth(c category) float64 {
	return max(float64(len(c.bars))*(barWidth+barGap)+categoryGap, minCategoryW)
}

func axis(b *bytes.Buffer, top, width float64, s logScale, name string) {
	fmt.Fprintf(b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="black"/>`+"\n",
		chartLeft, top, chartLeft, top+panelHeight)
	for e := s.lo; e <= s.hi; e++ {
		y := top + panelHeight - (e-s.lo)/(s.hi-s.lo)*panelHeight
		fmt.Fprintf(b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#ddd"/>`+"\n",
			chartLeft, y, width-chartRightPad, y)
		text(b, chartLeft-6, y+4, "end", 10, decade(e))
	}
	text(b, chartLeft, top-6, "start", 11, name)
}

// decade labels 10^e plainly: 0.01, 1, 1000, 1e+06.
func decade(e float64) string {
	return strings.TrimSuffix(fmt.Sprintf("%g", math.Pow(10, e)), ".0")
}

func legend(b *bytes.Buffer, x, y float64) {
	for i, name := range []string{"through Tally (W…)", "baseline (B1, B3, B4)", "second baseline (B2)"} {
		fmt.Fprintf(b, `<rect x="%.0f" y="%.0f" width="10" height="10" fill="%s"/>`+"\n", x, y-9, barColors[i])
		text(b, x+14, y, "start", 11, name)
		x += 170
	}
}

func text(b *bytes.Buffer, x, y float64, anchor string, size int, s string) {
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="%s" font-size="%d">`, x, y, anchor, size)
	xml.EscapeText(b, []byte(s))
	b.WriteString("</text>\n")
}

func writeChart(dir string, rows []summary, title string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "chart.svg"), chartSVG(rows, title), 0o644)
}
