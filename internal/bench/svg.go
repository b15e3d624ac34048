package bench

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"math"
	"strconv"
)

// series is one set of bars in a chart.
type series struct {
	name   string
	color  string
	values []float64 // one per category
}

// Colours of the charts' series.
const (
	colorDirect   = "#8c8c8c"
	colorGateway  = "#2b6cb0"
	colorCodeMode = "#2f855a"
)

// barChart draws a grouped bar chart as a standalone SVG document: one
// group per category, one bar per series, a y axis from zero to a round
// number and a legend when there is more than one series.
func barChart(title, xLabel, yLabel string, categories []string, ss []series) []byte {
	const (
		width, height = 760.0, 380.0
		left, right   = 80.0, 20.0
		top, bottom   = 50.0, 70.0
	)
	plotW, plotH := width-left-right, height-top-bottom
	top_ := 0.0
	for _, s := range ss {
		for _, v := range s.values {
			top_ = math.Max(top_, v)
		}
	}
	ymax, step := niceScale(top_)
	var b bytes.Buffer
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>`+"\n")
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" viewBox="0 0 %g %g" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="#ffffff"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%g" y="24" font-size="15" font-weight="bold">%s</text>`+"\n", left, esc(title))
	// Grid and y labels.
	for v := 0.0; v <= ymax*(1+1e-9); v += step {
		y := top + plotH - v/ymax*plotH
		fmt.Fprintf(&b, `<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="#e2e2e2"/>`+"\n", left, y, left+plotW, y)
		fmt.Fprintf(&b, `<text x="%g" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", left-6, y, esc(formatNumber(v)))
	}
	fmt.Fprintf(&b, `<text transform="translate(18 %.1f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", top+plotH/2, esc(yLabel))
	fmt.Fprintf(&b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="#333"/>`+"\n", left, top+plotH, left+plotW, top+plotH)
	// Bars.
	if n := len(categories); n > 0 && len(ss) > 0 {
		groupW := plotW / float64(n)
		barW := groupW * 0.8 / float64(len(ss))
		for i, cat := range categories {
			x0 := left + float64(i)*groupW + groupW*0.1
			for j, s := range ss {
				v := 0.0
				if i < len(s.values) {
					v = s.values[i]
				}
				h := v / ymax * plotH
				x := x0 + float64(j)*barW
				fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %s</title></rect>`+"\n",
					x, top+plotH-h, math.Max(barW-1, 0.5), h, s.color, esc(s.name), esc(cat), esc(formatNumber(v)))
				if len(ss) > 1 || n <= 12 {
					fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="10">%s</text>`+"\n", x+barW/2, top+plotH-h-3, esc(formatNumber(v)))
				}
			}
			if n <= 12 || i%int(math.Ceil(float64(n)/12)) == 0 {
				fmt.Fprintf(&b, `<text x="%.1f" y="%g" text-anchor="middle">%s</text>`+"\n", x0+groupW*0.4, top+plotH+18, esc(cat))
			}
		}
	}
	if xLabel != "" {
		fmt.Fprintf(&b, `<text x="%.1f" y="%g" text-anchor="middle">%s</text>`+"\n", left+plotW/2, height-16, esc(xLabel))
	}
	// Legend.
	if len(ss) > 1 {
		x := left + plotW - 150*float64(len(ss))
		for _, s := range ss {
			fmt.Fprintf(&b, `<rect x="%.1f" y="34" width="12" height="12" fill="%s"/><text x="%.1f" y="44">%s</text>`+"\n", x, s.color, x+16, esc(s.name))
			x += 150
		}
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// niceScale returns a round upper bound above v and the step of about
// five grid lines up to it.
func niceScale(v float64) (ymax, step float64) {
	if v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return 1, 0.2
	}
	raw := v / 5
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if step = m * mag; step >= raw {
			break
		}
	}
	return math.Ceil(v/step) * step, step
}

// formatNumber prints v with about three significant digits.
func formatNumber(v float64) string {
	switch a := math.Abs(v); {
	case a == math.Trunc(a) && a < 1e15:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

func esc(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// histogram counts sorted values into bins between the smallest and the
// 99th percentile; larger values go into the last bin, whose label says so.
func histogram(sorted []float64, bins int) (labels []string, counts []float64) {
	if len(sorted) == 0 {
		return nil, nil
	}
	lo, hi := sorted[0], percentile(sorted, 0.99)
	if hi <= lo {
		return []string{formatNumber(lo)}, []float64{float64(len(sorted))}
	}
	width := (hi - lo) / float64(bins)
	counts = make([]float64, bins)
	for _, v := range sorted {
		i := int((v - lo) / width)
		counts[min(i, bins-1)]++
	}
	labels = make([]string, bins)
	for i := range labels {
		labels[i] = formatNumber(lo + float64(i)*width)
	}
	labels[bins-1] = "≥" + labels[bins-1]
	return labels, counts
}
