package ipam

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// BenchmarkChurn measures one Allocate plus one Release of a random held
// address per op, with the pool kept at a fixed fill level. ns/call is half
// of ns/op. For the /64 the fill percentage is of 65536 addresses (a /64
// cannot be filled), so it measures a sparse pool with that many
// allocations.
func BenchmarkChurn(b *testing.B) {
	pools := []struct {
		name   string
		prefix string
	}{
		{"v4-24", "10.0.0.0/24"},
		{"v4-16", "10.0.0.0/16"},
		{"v6-64", "fd00::/64"},
	}
	for _, kind := range []string{"mem", "store"} {
		for _, pc := range pools {
			for _, fill := range []int{10, 90} {
				b.Run(fmt.Sprintf("%s/%s/fill=%d", kind, pc.name, fill), func(b *testing.B) {
					prefix := netip.MustParsePrefix(pc.prefix)
					var p *Pool
					var err error
					if kind == "mem" {
						p, err = New(prefix)
					} else {
						p, err = Open(b.TempDir(), prefix)
					}
					if err != nil {
						b.Fatal(err)
					}
					defer p.Close()
					n := int(min(p.Size(), 65536) * uint64(fill) / 100)
					held := fillPool(b, p, n)
					benchChurn(b, p, held)
				})
			}
		}
	}
}

func benchChurn(b *testing.B, p *Pool, held []netip.Addr) {
	rng := uint64(0x9e3779b97f4a7c15)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		a, err := p.Allocate()
		if err != nil {
			b.Fatal(err)
		}
		rng ^= rng << 13
		rng ^= rng >> 7
		rng ^= rng << 17
		j := rng % uint64(len(held))
		if err := p.Release(held[j]); err != nil {
			b.Fatal(err)
		}
		held[j] = a
	}
	b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(2*b.N), "ns/call")
}

// fillPool allocates n addresses. For a store it writes them in large
// records with one fdatasync per record, which only a test may do.
func fillPool(tb testing.TB, p *Pool, n int) []netip.Addr {
	tb.Helper()
	held := make([]netip.Addr, 0, n)
	if p.store == nil {
		for range n {
			a, err := p.Allocate()
			if err != nil {
				tb.Fatal(err)
			}
			held = append(held, a)
		}
		return held
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.beginLocked(true); err != nil {
		tb.Fatal(err)
	}
	defer p.endLocked()
	es := make([]entry, 0, n)
	for range n {
		off, ok := p.st.nextFree(p.lay)
		if !ok {
			tb.Fatal("pool full")
		}
		p.st.alloc(off, "", true)
		es = append(es, entry{kind: entryAlloc, off: off})
		held = append(held, p.lay.addr(off))
	}
	if err := p.store.append(p, es); err != nil {
		tb.Fatal(err)
	}
	return held
}

// BenchmarkWorstCase keeps a pool full except for one address and
// allocates and releases it over and over: every search starts right after
// that address and must wrap around the whole range to find it again, which
// a linear scan would pay for with the size of the pool.
func BenchmarkWorstCase(b *testing.B) {
	for _, prefix := range []string{"10.0.0.0/16", "10.0.0.0/8"} {
		b.Run(prefix, func(b *testing.B) {
			p, err := New(netip.MustParsePrefix(prefix))
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			fillPool(b, p, int(p.Size()))
			hole := netip.MustParseAddr("10.0.0.77")
			if err := p.Release(hole); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				a, err := p.Allocate()
				if err != nil || a != hole {
					b.Fatal(a, err)
				}
				if err := p.Release(a); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkOwnerChurn is the CNI ADD/DEL pattern: AllocateFor a new owner,
// then ReleaseOwner, with 1,000 owned allocations held.
func BenchmarkOwnerChurn(b *testing.B) {
	for _, kind := range []string{"mem", "store"} {
		b.Run(kind, func(b *testing.B) {
			prefix := netip.MustParsePrefix("10.0.0.0/16")
			var p *Pool
			var err error
			if kind == "mem" {
				p, err = New(prefix)
			} else {
				p, err = Open(b.TempDir(), prefix)
			}
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			for i := range 1000 {
				if _, err := p.AllocateFor(fmt.Sprintf("fill-%d/eth0", i)); err != nil {
					b.Fatal(err)
				}
			}
			owners := make([]string, 4096)
			for i := range owners {
				owners[i] = fmt.Sprintf("%064x/eth0", i)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				owner := owners[i%len(owners)]
				i++
				if _, err := p.AllocateFor(owner); err != nil {
					b.Fatal(err)
				}
				if _, err := p.ReleaseOwner(owner); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
