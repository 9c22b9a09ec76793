package ipambench

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/disk"

	"github.com/podnet/podnet/ipam"
)

const subnet = "10.0.0.0/16"

// churner is one allocator under test: alloc allocates an address for a new
// owner, release frees everything that owner holds.
type churner interface {
	alloc(owner string) error
	release(owner string) error
}

func BenchmarkChurn(b *testing.B) {
	impls := []struct {
		name string
		new  func(tb testing.TB) churner
	}{
		{"podnet-store", newPodnet(true)},
		{"podnet-mem", newPodnet(false)},
		{"hostlocal", newHostLocal},
	}
	for _, allocated := range []int{100, 1000} {
		for _, impl := range impls {
			b.Run(fmt.Sprintf("impl=%s/allocated=%d", impl.name, allocated), func(b *testing.B) {
				c := impl.new(b)
				for i := range allocated {
					if err := c.alloc(fmt.Sprintf("fill-%d", i)); err != nil {
						b.Fatal(err)
					}
				}
				i := 0
				start := time.Now()
				for b.Loop() {
					owner := fmt.Sprintf("churn-%d", i)
					i++
					if err := c.alloc(owner); err != nil {
						b.Fatal(err)
					}
					if err := c.release(owner); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(2*b.N), "ns/call")
			})
		}
	}
}

type podnet struct{ p *ipam.Pool }

func newPodnet(persistent bool) func(testing.TB) churner {
	return func(tb testing.TB) churner {
		prefix := netip.MustParsePrefix(subnet)
		var p *ipam.Pool
		var err error
		if persistent {
			p, err = ipam.Open(filepath.Join(tb.TempDir(), "net"), prefix)
		} else {
			p, err = ipam.New(prefix)
		}
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { p.Close() })
		return podnet{p}
	}
}

func (c podnet) alloc(owner string) error {
	_, err := c.p.AllocateFor(owner + "/eth0")
	return err
}

func (c podnet) release(owner string) error {
	addrs, err := c.p.ReleaseOwner(owner + "/eth0")
	if err == nil && len(addrs) != 1 {
		err = fmt.Errorf("released %d addresses, want 1", len(addrs))
	}
	return err
}

type hostLocal struct {
	a     *allocator.IPAllocator
	store *disk.Store
}

func newHostLocal(tb testing.TB) churner {
	st, err := disk.New("net", tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	_, sn, err := net.ParseCIDR(subnet)
	if err != nil {
		tb.Fatal(err)
	}
	rs := allocator.RangeSet{allocator.Range{Subnet: types.IPNet(*sn)}}
	if err := rs.Canonicalize(); err != nil {
		tb.Fatal(err)
	}
	return hostLocal{allocator.NewIPAllocator(&rs, st, 0), st}
}

func (c hostLocal) alloc(owner string) error {
	_, err := c.a.Get(owner, "eth0", nil)
	return err
}

func (c hostLocal) release(owner string) error {
	return c.a.Release(owner, "eth0")
}
