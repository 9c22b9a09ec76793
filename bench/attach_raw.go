package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"

	"github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// rawAttacher is the floor: the same kernel work as podnet done with
// vishvananda/netlink calls and nothing else (no IPAM: addresses are
// computed; no ownership marks, no validation, no rollback). The
// masquerade rule goes in with go-iptables, run on a thread inside the
// sandbox. Without ipv6 it sets addr_gen_mode none on the bridge and on
// both veth ends before they come up, as podnet does for IPv4-only links:
// no link-local address, so no DAD, MLD or router solicitations.
type rawAttacher struct {
	env    *attachEnv
	ipv6   bool
	host   netns.NsHandle // the sandbox; owned by the sandbox
	hh     *netlink.Handle
	br     *netlink.Bridge
	masq   []string // the masquerade rule, once installed
	oldFwd string
	nss    []netns.NsHandle
	veths  []*netlink.Veth
	addrs  []netip.Addr
}

func newRawAttacher(sb *sandbox, env *attachEnv, ipv6 bool) (*rawAttacher, error) {
	return &rawAttacher{env: env, ipv6: ipv6, host: netns.NsHandle(sb.host.Fd())}, nil
}

func (r *rawAttacher) up(ctx context.Context) error {
	hh, err := netlink.NewHandleAt(r.host, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	r.hh = hh
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: r.env.bridge}}
	if err := hh.LinkAdd(br); err != nil {
		return err
	}
	r.br = br
	if !r.ipv6 {
		if err := hh.LinkSetIP6AddrGenMode(br, addrGenModeNone); err != nil {
			return err
		}
	}
	if err := hh.AddrAdd(br, &netlink.Addr{IPNet: ipNet(r.env.gwPrefix())}); err != nil {
		return err
	}
	if err := hh.LinkSetUp(br); err != nil {
		return err
	}
	if !r.env.masq {
		return nil
	}
	rule := []string{"-s", r.env.subnet.String(), "!", "-o", r.env.bridge, "-j", "MASQUERADE"}
	return rawDo(r.host, func() error {
		old, err := os.ReadFile(ipForward)
		if err != nil {
			return err
		}
		r.oldFwd = string(old)
		if err := writeProc(ipForward, "1"); err != nil {
			return err
		}
		ipt, err := iptables.New()
		if err != nil {
			return err
		}
		if err := ipt.Append("nat", "POSTROUTING", rule...); err != nil {
			return err
		}
		r.masq = rule
		return nil
	})
}

func (r *rawAttacher) attach(ctx context.Context, i int) error {
	ns, err := rawNewNS()
	if err != nil {
		return err
	}
	r.nss = append(r.nss, ns)
	r.veths = append(r.veths, nil)
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer h.Close()
	if err := h.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: 1}}); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	name := "rv" + strconv.Itoa(i)
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, MasterIndex: r.br.Index},
		PeerName: "eth0", PeerNamespace: netlink.NsFd(ns)}
	if err := r.hh.LinkAdd(v); err != nil {
		return err
	}
	r.veths[i] = v
	peer, err := h.LinkByName("eth0")
	if err != nil {
		return err
	}
	if !r.ipv6 {
		if err := r.hh.LinkSetIP6AddrGenMode(v, addrGenModeNone); err != nil {
			return err
		}
		if err := h.LinkSetIP6AddrGenMode(peer, addrGenModeNone); err != nil {
			return err
		}
	}
	if err := r.hh.LinkSetUp(v); err != nil {
		return err
	}
	addr := r.env.addr(i)
	if err := h.AddrAdd(peer, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(addr, r.env.subnet.Bits()))}); err != nil {
		return err
	}
	r.addrs = append(r.addrs, addr)
	if err := h.LinkSetUp(peer); err != nil {
		return err
	}
	return h.RouteAdd(&netlink.Route{LinkIndex: peer.Attrs().Index, Gw: r.env.gw.AsSlice()})
}

func (r *rawAttacher) detach(ctx context.Context, i int) error {
	err := r.hh.LinkDel(r.veths[i])
	r.veths[i] = nil
	r.nss[i].Close()
	r.nss[i] = -1
	return err
}

func (r *rawAttacher) down(ctx context.Context) error {
	var errs []error
	if r.masq != nil {
		rule := r.masq
		errs = append(errs, rawDo(r.host, func() error {
			ipt, err := iptables.New()
			if err != nil {
				return err
			}
			return errors.Join(ipt.Delete("nat", "POSTROUTING", rule...), writeProc(ipForward, r.oldFwd))
		}))
		r.masq = nil
	}
	if r.br != nil {
		errs = append(errs, r.hh.LinkDel(r.br))
		r.br = nil
	}
	return errors.Join(errs...)
}

func (r *rawAttacher) pods() []pod { return fdPods(r.addrs, r.nss) }

// fdPods describes pods held by namespace file descriptors, for the
// reachability check.
func fdPods(addrs []netip.Addr, nss []netns.NsHandle) []pod {
	out := make([]pod, len(addrs))
	for i, a := range addrs {
		out[i] = pod{addr: a, path: fdPath(int(nss[i]))}
	}
	return out
}

// closeNamespaces closes the namespace descriptors still open in nss.
func closeNamespaces(nss []netns.NsHandle) {
	for i, ns := range nss {
		if ns >= 0 {
			ns.Close()
			nss[i] = -1
		}
	}
}

func (r *rawAttacher) close() error {
	closeNamespaces(r.nss)
	if r.hh != nil {
		r.hh.Close()
		r.hh = nil
	}
	return nil
}

const ipForward = "/proc/sys/net/ipv4/ip_forward"

// addrGenModeNone is IN6_ADDR_GEN_MODE_NONE: no IPv6 link-local address.
const addrGenModeNone = 1

func writeProc(path, value string) error { return os.WriteFile(path, []byte(value), 0o644) }

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// fdPath names a namespace file descriptor of this process for
// podnet.OpenNamespace.
func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// rawNewNS creates an anonymous namespace the way a hand-written program
// does, with netns.New on a locked thread, then switches the thread back.
// It runs on a fresh goroutine whose thread is discarded (left locked)
// if it cannot switch back, so no caller's thread ever changes namespace.
func rawNewNS() (netns.NsHandle, error) {
	type result struct {
		ns  netns.NsHandle
		err error
	}
	c := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			c <- result{-1, err}
			return
		}
		defer orig.Close()
		ns, err := netns.New()
		if err != nil {
			c <- result{-1, err} // the thread may be in between: discard it
			return
		}
		if err := netns.Set(orig); err != nil {
			ns.Close()
			c <- result{-1, err}
			return
		}
		runtime.UnlockOSThread()
		c <- result{ns, nil}
	}()
	r := <-c
	return r.ns, r.err
}

// rawDo runs fn on a fresh locked thread switched into ns (for /proc/sys
// writes and iptables execs) and switches back; the thread is discarded
// if it cannot.
func rawDo(ns netns.NsHandle, fn func() error) error {
	c := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			c <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			c <- err
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			c <- errors.Join(ferr, err) // thread stays locked: discarded
			return
		}
		runtime.UnlockOSThread()
		c <- ferr
	}()
	return <-c
}
