package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
)

// Result is one line of the -json output: the cost of one operation of
// one implementation at one size, and its ratio to podnet's.
type Result struct {
	Suite string `json:"suite"`
	Impl  string `json:"impl"`
	// N is the number of namespaces (attach), port forwards (nat) or
	// addresses held while churning (ipam).
	N  int    `json:"n"`
	Op string `json:"op"`
	// NsPerOp is per namespace (attach), per port forward (nat), or per
	// allocate+release pair (ipam): the median over repetitions (attach,
	// nat) or over blocks of churn (ipam).
	NsPerOp float64 `json:"ns_per_op"`
	// RatioToPodnet is NsPerOp over the suite's podnet baseline for the
	// same n and op (for teardown-batch, which only podnet has, over
	// podnet's one-by-one teardown). The baseline is "podnet" in the
	// attach and nat suites and "podnet-store" in the ipam suite, the
	// durable pool that compares with host-local's disk store.
	RatioToPodnet float64 `json:"ratio_to_podnet"`
	Samples       int     `json:"samples"` // repetitions or blocks the median is over
}

// Display orders and baselines.
var (
	suiteOrder = []string{"attach", "ipam", "nat"}
	implOrder  = map[string][]string{
		"attach": {"podnet", "raw", "raw-ipv6", "cni", "shell"},
		"ipam":   {"podnet-store", "podnet-mem", "host-local"},
		"nat":    {"podnet", "iptables-exec"},
	}
	baseline = map[string]string{"attach": "podnet", "ipam": "podnet-store", "nat": "podnet"}
	opOrder  = []string{"setup", "teardown", "teardown-batch", "alloc+release"}
)

type key struct {
	suite, impl string
	n           int
	op          string
}

// collector gathers samples (ns per op) and notes on what each
// implementation does.
type collector struct {
	samples map[key][]float64
	notes   map[string]map[string]string // suite → impl(/op) → note
}

func newCollector() *collector {
	return &collector{samples: map[key][]float64{}, notes: map[string]map[string]string{}}
}

func (c *collector) add(k key, nsPerOp float64) { c.samples[k] = append(c.samples[k], nsPerOp) }

func (c *collector) note(suite, impl, op, text string) {
	if c.notes[suite] == nil {
		c.notes[suite] = map[string]string{}
	}
	name := impl
	if op == "teardown-batch" {
		name += " (teardown-batch)"
	}
	c.notes[suite][name] = text
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func indexOf(xs []string, x string) int {
	for i, y := range xs {
		if y == x {
			return i
		}
	}
	return len(xs)
}

// results returns the medians with their ratios, sorted by suite, n, op
// and implementation.
func (c *collector) results() []Result {
	med := map[key]float64{}
	for k, xs := range c.samples {
		med[k] = median(xs)
	}
	var out []Result
	for k, v := range med {
		r := Result{Suite: k.suite, Impl: k.impl, N: k.n, Op: k.op, NsPerOp: v, Samples: len(c.samples[k])}
		baseOp := k.op
		if baseOp == "teardown-batch" {
			baseOp = "teardown"
		}
		if b, ok := med[key{k.suite, baseline[k.suite], k.n, baseOp}]; ok && b > 0 {
			r.RatioToPodnet = v / b
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Suite != b.Suite {
			return indexOf(suiteOrder, a.Suite) < indexOf(suiteOrder, b.Suite)
		}
		if a.N != b.N {
			return a.N < b.N
		}
		if a.Op != b.Op {
			return indexOf(opOrder, a.Op) < indexOf(opOrder, b.Op)
		}
		return indexOf(implOrder[a.Suite], a.Impl) < indexOf(implOrder[b.Suite], b.Impl)
	})
	return out
}

// writeJSON writes one JSON object per result and line.
func writeJSON(w io.Writer, rs []Result) error {
	enc := json.NewEncoder(w)
	for _, r := range rs {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

// fmtNs formats a duration in nanoseconds with three significant digits.
func fmtNs(ns float64) string {
	switch {
	case ns < 1e3:
		return fmt.Sprintf("%.0f ns", ns)
	case ns < 1e6:
		return sig3(ns/1e3) + " µs"
	case ns < 1e9:
		return sig3(ns/1e6) + " ms"
	default:
		return sig3(ns/1e9) + " s"
	}
}

// fmtRatio formats a ratio with two decimals, or two significant digits
// when it is below 0.1, and no decimals from 100 up.
func fmtRatio(r float64) string {
	switch {
	case r >= 100:
		return fmt.Sprintf("%.0f", r)
	case r >= 0.1:
		return fmt.Sprintf("%.2f", r)
	default:
		return fmt.Sprintf("%.2g", r)
	}
}

func sig3(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// writeTable writes one Markdown table per suite: a row per n and op, a
// column per implementation, each cell the cost and its ratio to podnet.
func writeTable(w io.Writer, rs []Result, c *collector) {
	for _, suite := range suiteOrder {
		var srs []Result
		present := map[string]bool{}
		for _, r := range rs {
			if r.Suite == suite {
				srs = append(srs, r)
				present[r.Impl] = true
			}
		}
		if len(srs) == 0 {
			continue
		}
		var impls []string
		for _, impl := range implOrder[suite] {
			if present[impl] {
				impls = append(impls, impl)
			}
		}
		unit := map[string]string{"attach": "per namespace", "ipam": "per allocate+release pair, 1,000 addresses held", "nat": "per port forward"}[suite]
		fmt.Fprintf(w, "\n### %s (%s; in parentheses: ratio to %s)\n\n", suite, unit, baseline[suite])
		if suite == "attach" {
			fmt.Fprintf(w, "Setup counts the network's creation and teardown its removal, spread over the n namespaces; teardown-batch's ratio is to podnet's one-by-one teardown.\n\n")
		}
		fmt.Fprintf(w, "| n | op | %s |\n", strings.Join(impls, " | "))
		fmt.Fprintf(w, "|--:|----|%s\n", strings.Repeat("--:|", len(impls)))
		type row struct {
			n  int
			op string
		}
		cells := map[row]map[string]Result{}
		var rows []row
		for _, r := range srs {
			rw := row{r.N, r.Op}
			if cells[rw] == nil {
				cells[rw] = map[string]Result{}
				rows = append(rows, rw)
			}
			cells[rw][r.Impl] = r
		}
		for _, rw := range rows {
			fmt.Fprintf(w, "| %d | %s |", rw.n, rw.op)
			for _, impl := range impls {
				r, ok := cells[rw][impl]
				switch {
				case !ok:
					fmt.Fprint(w, " |")
				case r.RatioToPodnet > 0:
					fmt.Fprintf(w, " %s (%s) |", fmtNs(r.NsPerOp), fmtRatio(r.RatioToPodnet))
				default:
					fmt.Fprintf(w, " %s |", fmtNs(r.NsPerOp))
				}
			}
			fmt.Fprintln(w)
		}
		if notes := c.notes[suite]; len(notes) > 0 {
			var names []string
			for n := range notes {
				names = append(names, n)
			}
			sort.Slice(names, func(i, j int) bool {
				a, b := indexOf(implOrder[suite], strings.Fields(names[i])[0]), indexOf(implOrder[suite], strings.Fields(names[j])[0])
				if a != b {
					return a < b
				}
				return names[i] < names[j]
			})
			fmt.Fprintln(w)
			for _, n := range names {
				fmt.Fprintf(w, "- %s: %s\n", n, notes[n])
			}
		}
	}
}
