package podnet_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/podnet/podnet"
	"github.com/podnet/podnet/podnettest"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Benchmarks of the core path, each side by side with the raw-netlink floor
// (the same kernel work done with vishvananda/netlink calls and nothing
// else), so that the ratio comes from one run on one machine:
//
//	go test -run '^$' -bench 'Namespace|Attach|Scale' -benchtime 1x .
//
// Scale reports setup-ns/ns and teardown-ns/ns: the cost per namespace.

func BenchmarkNamespaceCreateClose(b *testing.B) {
	ctx := context.Background()
	b.Run("impl=podnet", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			ns, err := podnet.NewAnonymousNamespace().Create(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if err := ns.Close(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("impl=raw", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			h, err := rawNewNS()
			if err != nil {
				b.Fatal(err)
			}
			if err := rawLoUp(h); err != nil {
				b.Fatal(err)
			}
			h.Close()
		}
	})
}

// rawNewNS creates an anonymous namespace the way a hand-written program
// would: on a locked thread, netns.New, then back.
func rawNewNS() (netns.NsHandle, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return 0, err
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		return 0, err
	}
	if err := netns.Set(orig); err != nil {
		return 0, err
	}
	return ns, nil
}

func rawLoUp(ns netns.NsHandle) error {
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return err
	}
	return h.LinkSetUp(lo)
}

// rawAttach is the floor for one attach: namespace with lo up, veth with
// the peer inside and the host end on the bridge, address, both ends up,
// default route. With noV6 it also disables IPv6 on both ends before they
// come up, as podnet does for IPv4-only links.
type rawWorld struct {
	host   netns.NsHandle
	hh     *netlink.Handle
	br     netlink.Link
	noV6   bool
	nss    []netns.NsHandle
	veths  []netlink.Link
	hostFd int
}

func (w *rawWorld) attach(i int) error {
	ns, err := rawNewNS()
	if err != nil {
		return err
	}
	w.nss = append(w.nss, ns)
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer h.Close()
	if err := h.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: 1}}); err != nil {
		return err
	}
	name := fmt.Sprintf("rv%d", i)
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, MasterIndex: w.br.Attrs().Index},
		PeerName: "eth0", PeerNamespace: netlink.NsFd(ns)}
	if err := w.hh.LinkAdd(v); err != nil {
		return err
	}
	w.veths = append(w.veths, v)
	if w.noV6 {
		if err := rawSysctlIn(w.host, "/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6"); err != nil {
			return err
		}
		if err := rawSysctlIn(ns, "/proc/sys/net/ipv6/conf/eth0/disable_ipv6"); err != nil {
			return err
		}
	}
	if err := w.hh.LinkSetUp(v); err != nil {
		return err
	}
	peer, err := h.LinkByName("eth0")
	if err != nil {
		return err
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 90, byte(i/250), byte(2+i%250)), Mask: net.CIDRMask(16, 32)}}
	if err := h.AddrAdd(peer, addr); err != nil {
		return err
	}
	if err := h.LinkSetUp(peer); err != nil {
		return err
	}
	return h.RouteAdd(&netlink.Route{Gw: net.IPv4(10, 90, 255, 254)})
}

// rawSysctlIn writes "1" to a /proc/sys file inside ns on a locked thread.
func rawSysctlIn(ns netns.NsHandle, path string) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		werr := os.WriteFile(path, []byte("1"), 0o644)
		if err := netns.Set(orig); err != nil {
			errc <- err // thread stays locked and is discarded
			return
		}
		runtime.UnlockOSThread()
		errc <- werr
	}()
	return <-errc
}

func (w *rawWorld) teardown() error {
	for _, v := range w.veths {
		if err := w.hh.LinkDel(v); err != nil {
			return err
		}
	}
	for _, ns := range w.nss {
		ns.Close()
	}
	w.veths, w.nss = nil, nil
	return nil
}

// newRawWorld makes the bridge for the floor inside host.
func newRawWorld(host *podnet.Namespace, noV6 bool) (*rawWorld, error) {
	hns := netns.NsHandle(host.Fd())
	hh, err := netlink.NewHandleAt(hns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "rawbr"}}
	if err := hh.LinkAdd(br); err != nil {
		return nil, err
	}
	if noV6 {
		if err := rawSysctlIn(hns, "/proc/sys/net/ipv6/conf/rawbr/disable_ipv6"); err != nil {
			return nil, err
		}
	}
	if err := hh.AddrAdd(br, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 90, 255, 254), Mask: net.CIDRMask(16, 32)}}); err != nil {
		return nil, err
	}
	if err := hh.LinkSetUp(br); err != nil {
		return nil, err
	}
	return &rawWorld{host: hns, hh: hh, br: br, noV6: noV6}, nil
}

func (w *rawWorld) close() {
	_ = w.teardown()
	_ = w.hh.LinkDel(w.br)
	w.hh.Close()
}

// podnetWorld is the same topology through podnet's Network.
type podnetWorld struct {
	nw   *podnet.Network
	nss  []*podnet.Namespace
	atts []*podnet.Attachment
}

func (w *podnetWorld) attach(ctx context.Context) error {
	ns, err := podnet.NewAnonymousNamespace().Create(ctx)
	if err != nil {
		return err
	}
	w.nss = append(w.nss, ns)
	a, err := w.nw.Attach(ctx, ns)
	if err != nil {
		return err
	}
	w.atts = append(w.atts, a)
	return nil
}

// teardownOne offboards one at a time, as a runtime does on DEL.
func (w *podnetWorld) teardownOne() error {
	for i, a := range w.atts {
		if err := a.Close(); err != nil {
			return err
		}
		if err := w.nss[i].Close(); err != nil {
			return err
		}
	}
	w.atts, w.nss = nil, nil
	return nil
}

// teardownBatch offboards everything at once, as a lab or test does.
func (w *podnetWorld) teardownBatch() error {
	if err := w.nw.DetachAll(); err != nil {
		return err
	}
	for _, ns := range w.nss {
		if err := ns.Close(); err != nil {
			return err
		}
	}
	w.atts, w.nss = nil, nil
	return nil
}

// BenchmarkAttach measures one full attach (namespace, veth on the bridge,
// address, default route) and its teardown, with 10 namespaces already on
// the bridge.
func BenchmarkAttach(b *testing.B) {
	ctx := context.Background()
	host := benchSandbox(b)
	b.Run("impl=podnet", func(b *testing.B) {
		nw, err := podnet.NewNetwork("pnbr", pfx("10.91.0.0/16")).In(host).Create(ctx)
		if err != nil {
			b.Fatal(err)
		}
		defer nw.Close()
		w := &podnetWorld{nw: nw}
		var setup, teardown time.Duration
		for i := 0; i < b.N; i++ {
			t0 := time.Now()
			if err := w.attach(ctx); err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			if err := w.teardownOne(); err != nil {
				b.Fatal(err)
			}
			setup += t1.Sub(t0)
			teardown += time.Since(t1)
		}
		b.ReportMetric(float64(setup.Nanoseconds())/float64(b.N), "setup-ns/op")
		b.ReportMetric(float64(teardown.Nanoseconds())/float64(b.N), "teardown-ns/op")
	})
	for _, noV6 := range []bool{false, true} {
		b.Run(fmt.Sprintf("impl=raw/noipv6=%v", noV6), func(b *testing.B) {
			w, err := newRawWorld(host, noV6)
			if err != nil {
				b.Fatal(err)
			}
			defer w.close()
			var setup, teardown time.Duration
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				if err := w.attach(i % 60000); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if err := w.teardown(); err != nil {
					b.Fatal(err)
				}
				setup += t1.Sub(t0)
				teardown += time.Since(t1)
			}
			b.ReportMetric(float64(setup.Nanoseconds())/float64(b.N), "setup-ns/op")
			b.ReportMetric(float64(teardown.Nanoseconds())/float64(b.N), "teardown-ns/op")
		})
	}
}

// BenchmarkScale attaches N namespaces to one bridge and tears them down,
// for podnet (Network.Attach, then Network.DetachAll) and the two raw
// floors (IPv6 left on, and IPv6 disabled on both ends; one LinkDel per
// veth). Each implementation has its own sandbox; their attaches are
// interleaved one by one so that machine drift hits all alike. Reported:
// setup and teardown cost per namespace for each, and podnet's ratio to the
// better floor.
func BenchmarkScale(b *testing.B) {
	ctx := context.Background()
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			var pSetup, pDown, r6Setup, r6Down, r4Setup, r4Down time.Duration
			for i := 0; i < b.N; i++ {
				nw, err := podnet.NewNetwork("pnbr", pfx("10.91.0.0/16")).In(benchSandbox(b)).Create(ctx)
				if err != nil {
					b.Fatal(err)
				}
				pw := &podnetWorld{nw: nw}
				r6, err := newRawWorld(benchSandbox(b), false)
				if err != nil {
					b.Fatal(err)
				}
				r4, err := newRawWorld(benchSandbox(b), true)
				if err != nil {
					b.Fatal(err)
				}
				for j := 0; j < n; j++ {
					t0 := time.Now()
					if err := pw.attach(ctx); err != nil {
						b.Fatal(err)
					}
					t1 := time.Now()
					if err := r6.attach(j); err != nil {
						b.Fatal(err)
					}
					t2 := time.Now()
					if err := r4.attach(j); err != nil {
						b.Fatal(err)
					}
					pSetup += t1.Sub(t0)
					r6Setup += t2.Sub(t1)
					r4Setup += time.Since(t2)
				}
				t0 := time.Now()
				if err := pw.teardownBatch(); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if err := r6.teardown(); err != nil {
					b.Fatal(err)
				}
				t2 := time.Now()
				if err := r4.teardown(); err != nil {
					b.Fatal(err)
				}
				pDown += t1.Sub(t0)
				r6Down += t2.Sub(t1)
				r4Down += time.Since(t2)
				if err := nw.Close(); err != nil {
					b.Fatal(err)
				}
				r6.close()
				r4.close()
			}
			per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(b.N*n) }
			b.ReportMetric(per(pSetup), "podnet-setup-ns/ns")
			b.ReportMetric(per(r6Setup), "raw-setup-ns/ns")
			b.ReportMetric(per(r4Setup), "raw-noipv6-setup-ns/ns")
			b.ReportMetric(per(pDown), "podnet-teardown-ns/ns")
			b.ReportMetric(per(r6Down), "raw-teardown-ns/ns")
			b.ReportMetric(per(r4Down), "raw-noipv6-teardown-ns/ns")
			b.ReportMetric(per(pSetup)/min(per(r6Setup), per(r4Setup)), "setup-ratio-to-floor")
		})
	}
}

func benchSandbox(b *testing.B) *podnet.Namespace {
	b.Helper()
	podnettest.RequirePrivilege(b)
	ns, err := podnet.NewAnonymousNamespace().Create(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ns.Close() })
	return ns
}

// BenchmarkOwnershipMark measures what the ownership mark adds to creating
// a link: one RTM_SETLINK with IFLA_IFALIAS (the kernel ignores the alias
// in a create request). Compare with BenchmarkAttach's setup-ns/op.
func BenchmarkOwnershipMark(b *testing.B) {
	ctx := context.Background()
	host := benchSandbox(b)
	v, err := podnet.NewVethPair("markbench").In(host).Create(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer v.Close()
	l := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: v.Index()}}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := host.Handle().LinkSetAlias(l, "podnet:12345:67890:bench"); err != nil {
			b.Fatal(err)
		}
	}
}
