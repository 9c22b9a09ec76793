package main

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

func TestResults(t *testing.T) {
	c := newCollector()
	for _, v := range []float64{3, 1, 2} {
		c.add(key{"attach", "podnet", 10, "setup"}, v)
	}
	c.add(key{"attach", "raw", 10, "setup"}, 1)
	c.add(key{"attach", "podnet", 10, "teardown"}, 8)
	c.add(key{"attach", "podnet", 10, "teardown-batch"}, 2)
	c.add(key{"ipam", "host-local", 1000, "alloc+release"}, 30)
	c.add(key{"ipam", "podnet-store", 1000, "alloc+release"}, 10)
	got := map[key]Result{}
	for _, r := range c.results() {
		got[key{r.Suite, r.Impl, r.N, r.Op}] = r
	}
	for _, tc := range []struct {
		k            key
		value, ratio float64
		samples      int
	}{
		{key{"attach", "podnet", 10, "setup"}, 2, 1, 3},
		{key{"attach", "raw", 10, "setup"}, 1, 0.5, 1},
		{key{"attach", "podnet", 10, "teardown-batch"}, 2, 0.25, 1},
		{key{"ipam", "host-local", 1000, "alloc+release"}, 30, 3, 1},
	} {
		r, ok := got[tc.k]
		if !ok {
			t.Errorf("%v: missing", tc.k)
			continue
		}
		if r.NsPerOp != tc.value || math.Abs(r.RatioToPodnet-tc.ratio) > 1e-9 || r.Samples != tc.samples {
			t.Errorf("%v = %v/%v/%d, want %v/%v/%d", tc.k, r.NsPerOp, r.RatioToPodnet, r.Samples, tc.value, tc.ratio, tc.samples)
		}
	}
	var b bytes.Buffer
	writeTable(&b, c.results(), c)
	for _, want := range []string{"| n | op | podnet | raw |", "| 10 | setup | 2 ns (1.00) | 1 ns (0.50) |", "| 10 | teardown-batch | 2 ns (0.25) | |"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestFmtRatio(t *testing.T) {
	for r, want := range map[float64]string{1: "1.00", 0.5: "0.50", 392.74: "393", 0.0035: "0.0035", 12.345: "12.35"} {
		if got := fmtRatio(r); got != want {
			t.Errorf("fmtRatio(%v) = %q, want %q", r, got, want)
		}
	}
}

func TestFmtNs(t *testing.T) {
	for ns, want := range map[float64]string{999: "999 ns", 1500: "1.50 µs", 25e6: "25.0 ms", 123e6: "123 ms", 2.5e9: "2.50 s"} {
		if got := fmtNs(ns); got != want {
			t.Errorf("fmtNs(%v) = %q, want %q", ns, got, want)
		}
	}
}

func TestSVGWellFormed(t *testing.T) {
	rs := []Result{
		{Suite: "attach", Impl: "podnet", N: 1, Op: "setup", NsPerOp: 2e7},
		{Suite: "attach", Impl: "podnet", N: 1000, Op: "setup", NsPerOp: 2e6},
		{Suite: "attach", Impl: "cni", N: 1, Op: "setup", NsPerOp: 5e7},
		{Suite: "attach", Impl: "podnet", N: 1, Op: "teardown-batch", NsPerOp: 1e8},
		{Suite: "attach", Impl: "podnet", N: 1000, Op: "teardown-batch", NsPerOp: 1e6},
	}
	for name, rs := range map[string][]Result{"data": rs, "empty": nil} {
		var b bytes.Buffer
		if err := writeSVG(&b, rs, `title with <markup> & "quotes"`); err != nil {
			t.Fatal(err)
		}
		if err := wellFormed(b.Bytes()); err != nil {
			t.Errorf("%s: %v\n%s", name, err, b.String())
		}
	}
}
