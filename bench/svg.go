package main

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strings"
)

// series is one line of the plot.
type series struct {
	label  string
	color  string
	dashed bool
	pts    [][2]float64 // n, ns per namespace
}

var implColor = map[string]string{
	"podnet":   "#1f77b4",
	"raw":      "#2ca02c",
	"raw-ipv6": "#8c564b",
	"cni":      "#d62728",
	"shell":    "#ff7f0e",
}

// writeSVG plots the attach suite: cost per namespace against N, both
// axes logarithmic, one panel for setup and one for teardown, one line per
// implementation (podnet's batch teardown dashed). It writes plain SVG by
// hand.
func writeSVG(w io.Writer, rs []Result, title string) error {
	panels := []struct {
		op, heading string
	}{{"setup", "setup: namespace, veth on the bridge, address, route"}, {"teardown", "teardown"}}
	const (
		width, height    = 1000, 470
		plotW, plotH     = 390, 300
		top              = 70
		left0, panelStep = 90, 490
	)
	var b bytes.Buffer
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>`+"\n")
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	text(&b, width/2, 24, "middle", 16, title)
	text(&b, width/2, 44, "middle", 12, "cost per namespace against N namespaces on one bridge (log scales; lower is better)")

	var all []series
	for pi, p := range panels {
		var ss []series
		for _, impl := range implOrder["attach"] {
			s := series{label: impl, color: implColor[impl]}
			for _, r := range rs {
				if r.Suite == "attach" && r.Impl == impl && r.Op == p.op {
					s.pts = append(s.pts, [2]float64{float64(r.N), r.NsPerOp})
				}
			}
			if len(s.pts) > 0 {
				ss = append(ss, s)
			}
		}
		if p.op == "teardown" {
			s := series{label: "podnet, batch (Network.Close)", color: implColor["podnet"], dashed: true}
			for _, r := range rs {
				if r.Suite == "attach" && r.Impl == "podnet" && r.Op == "teardown-batch" {
					s.pts = append(s.pts, [2]float64{float64(r.N), r.NsPerOp})
				}
			}
			if len(s.pts) > 0 {
				ss = append(ss, s)
			}
		}
		all = append(all, ss...)
		plotPanel(&b, left0+pi*panelStep, top, plotW, plotH, p.heading, ss)
	}
	// Legend, one entry per distinct line.
	seen := map[string]bool{}
	x, y := left0, top+plotH+70
	for _, s := range all {
		if seen[s.label] {
			continue
		}
		seen[s.label] = true
		dash := ""
		if s.dashed {
			dash = ` stroke-dasharray="6 4"`
		}
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2.5"%s/>`+"\n", x, y-4, x+28, y-4, s.color, dash)
		text(&b, x+34, y, "start", 12, s.label)
		x += 40 + 8*len(s.label)
		if x > width-150 {
			x, y = left0, y+22
		}
	}
	b.WriteString("</svg>\n")
	_, err := w.Write(b.Bytes())
	return err
}

func plotPanel(b *bytes.Buffer, x0, y0, w, h int, heading string, ss []series) {
	minN, maxN := math.Inf(1), math.Inf(-1)
	minY, maxY := math.Inf(1), math.Inf(-1)
	for _, s := range ss {
		for _, p := range s.pts {
			minN, maxN = math.Min(minN, p[0]), math.Max(maxN, p[0])
			minY, maxY = math.Min(minY, p[1]), math.Max(maxY, p[1])
		}
	}
	text(b, x0+w/2, y0-8, "middle", 13, heading)
	fmt.Fprintf(b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#444"/>`+"\n", x0, y0, w, h)
	if math.IsInf(minN, 0) {
		text(b, x0+w/2, y0+h/2, "middle", 12, "no data")
		return
	}
	xd0, xd1 := 0.0, math.Max(1, math.Ceil(math.Log10(maxN)))
	yd0, yd1 := math.Floor(math.Log10(minY)), math.Ceil(math.Log10(maxY))
	if yd1 <= yd0 {
		yd1 = yd0 + 1
	}
	px := func(n float64) float64 { return float64(x0) + (math.Log10(n)-xd0)/(xd1-xd0)*float64(w) }
	py := func(v float64) float64 { return float64(y0+h) - (math.Log10(v)-yd0)/(yd1-yd0)*float64(h) }
	for d := xd0; d <= xd1; d++ {
		x := px(math.Pow(10, d))
		fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", x, y0, x, y0+h)
		text(b, int(x), y0+h+16, "middle", 11, fmt.Sprintf("%g", math.Pow(10, d)))
	}
	for d := yd0; d <= yd1; d++ {
		y := py(math.Pow(10, d))
		fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", x0, y, x0+w, y)
		text(b, x0-6, int(y)+4, "end", 11, decadeLabel(d))
	}
	text(b, x0+w/2, y0+h+34, "middle", 12, "N (namespaces)")
	for _, s := range ss {
		var pts []string
		for _, p := range s.pts {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(p[0]), py(p[1])))
		}
		dash := ""
		if s.dashed {
			dash = ` stroke-dasharray="6 4"`
		}
		fmt.Fprintf(b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2.5"%s/>`+"\n", strings.Join(pts, " "), s.color, dash)
		for _, p := range s.pts {
			fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>`, px(p[0]), py(p[1]), s.color)
			_ = xml.EscapeText(b, []byte(fmt.Sprintf("%s, N=%g: %s per namespace", s.label, p[0], fmtNs(p[1]))))
			b.WriteString("</title></circle>\n")
		}
	}
}

func decadeLabel(d float64) string {
	units := []string{"ns", "µs", "ms", "s"}
	e := int(d)
	if e < 0 {
		return fmt.Sprintf("1e%d ns", e)
	}
	u := e / 3
	if u >= len(units) {
		return fmt.Sprintf("1e%d ns", e)
	}
	return fmt.Sprintf("%g %s", math.Pow(10, float64(e%3)), units[u])
}

func text(b *bytes.Buffer, x, y int, anchor string, size int, s string) {
	fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="%s" font-size="%d">`, x, y, anchor, size)
	_ = xml.EscapeText(b, []byte(s))
	b.WriteString("</text>\n")
}
