package main

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
)

// wellFormed decodes every token of doc and returns the root element's
// name and how many of each element it holds.
func wellFormed(t *testing.T, doc []byte) (string, map[string]int) {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(doc))
	root, counts := "", map[string]int{}
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return root, counts
		}
		if err != nil {
			t.Fatalf("chart is not well-formed XML: %v\n%s", err, doc)
		}
		if se, ok := tok.(xml.StartElement); ok {
			if root == "" {
				root = se.Name.Local
			}
			counts[se.Name.Local]++
		}
	}
}

func TestChartIsWellFormedSVG(t *testing.T) {
	rows := []summary{
		{Workload: "W1", Group: "W1", Clients: 1, OpsPerSec: 300, P99ms: 6},
		{Workload: "B1", Group: "W1", Clients: 1, OpsPerSec: 1400, P99ms: 1.6},
		{Workload: "B2", Group: "W1", Clients: 1, OpsPerSec: 2300, P99ms: 0.7},
		// The workload after its baseline: the chart still draws it first.
		{Workload: "B3", Group: "W3", Clients: 8, OpsPerSec: 63000, P99ms: 1.5},
		{Workload: "W3", Group: "W3", Clients: 8, OpsPerSec: 5800, P99ms: 5},
		// Text that must be escaped, and a failed run with nothing to draw.
		{Workload: "W<&>", Group: "W<&>", Clients: 64, OpsPerSec: 0, P99ms: 0},
		{Workload: "W4o", Group: "W4o", TargetRate: 520, OpsPerSec: 520, P99ms: 155},
	}
	doc := chartSVG(rows, `Tally on "postgres" & <friends>`)
	root, counts := wellFormed(t, doc)
	if root != "svg" {
		t.Fatalf("root element %q, want svg", root)
	}
	// Two panels of one bar per row, plus the background and the legend.
	if want := 2*len(rows) + 1 + 3; counts["rect"] != want {
		t.Errorf("%d rects, want %d", counts["rect"], want)
	}
	if !strings.Contains(string(doc), "520/s") {
		t.Error("the open-loop run is not labelled with its rate")
	}
	cats := categories(rows)
	if len(cats) != 4 || cats[1].bars[0].Workload != "W3" {
		t.Errorf("categories: %+v", cats)
	}
}

func TestChartOfNothing(t *testing.T) {
	root, _ := wellFormed(t, chartSVG(nil, "empty"))
	if root != "svg" {
		t.Fatalf("root element %q, want svg", root)
	}
}

func TestLogScale(t *testing.T) {
	s := newLogScale([]float64{0, 3, 450, 63000})
	if s.lo != 0 || s.hi != 5 {
		t.Errorf("scale %+v, want decades 0 to 5", s)
	}
	if h := s.height(100000); h != panelHeight {
		t.Errorf("top of the axis: height %v, want %v", h, panelHeight)
	}
	if h := s.height(0); h != 0 {
		t.Errorf("zero: height %v, want 0", h)
	}
	if h := s.height(1); h != 1 {
		t.Errorf("bottom of the axis: height %v, want a 1-unit sliver", h)
	}
	if d := decade(-2); d != "0.01" {
		t.Errorf("decade(-2) = %q", d)
	}
}
