package plugin

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/podnet/podnet"
	"github.com/podnet/podnet/ipam"
)

// Check verifies that the attachment is as prevResult describes it: the
// container's interface (a veth whose peer is the attachment's host end,
// enslaved to the bridge), its addresses and routes, the address
// reservations, the gateway addresses on the bridge and forwarding
// (isGateway) and the masquerade rules (ipMasq). Routes or addresses added since, by a chained
// plugin for example, are allowed. A mismatch is error CodeCheckFailed.
//
// The bridge's MAC address is not compared: other attachments coming and
// going may change it on a bridge podnet-cni did not create.
func (p *Plugin) Check(ctx context.Context, args *skel.CmdArgs) error {
	c, err := ParseConfig(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	if c.PrevResult == nil {
		return invalidConf("CHECK needs prevResult, the result of ADD", "")
	}
	host, release, err := p.host()
	if err != nil {
		return internal("open the host namespace", err)
	}
	defer release()
	cns, err := podnet.OpenNamespace(args.Netns)
	if err != nil {
		return netnsError(args.Netns, err)
	}
	defer cns.Close()
	return check(ctx, host, cns, c, args)
}

func checkFailed(format string, a ...any) error {
	return types.NewError(CodeCheckFailed, fmt.Sprintf(format, a...), "")
}

func check(ctx context.Context, host, cns *podnet.Namespace, c *NetConf, args *skel.CmdArgs) error {
	res := c.PrevResult
	cIdx := slices.IndexFunc(res.Interfaces, func(i *current.Interface) bool {
		return i.Name == args.IfName && i.Sandbox == args.Netns
	})
	if cIdx < 0 {
		return checkFailed("prevResult has no interface %q in %s", args.IfName, args.Netns)
	}

	// The container's interface and the host end of its veth pair.
	cLink, err := cns.Handle().LinkByName(args.IfName)
	if err != nil {
		return checkFailed("interface %q is missing in %s", args.IfName, args.Netns)
	}
	if cLink.Type() != "veth" {
		return checkFailed("interface %q in %s is a %s, not a veth", args.IfName, args.Netns, cLink.Type())
	}
	if want := res.Interfaces[cIdx].Mac; want != "" && want != cLink.Attrs().HardwareAddr.String() {
		return checkFailed("interface %q has MAC %s, not %s", args.IfName, cLink.Attrs().HardwareAddr, want)
	}
	hostName := hostVethName(c.Name, args.ContainerID, args.IfName)
	hLink, err := host.Handle().LinkByName(hostName)
	if err != nil {
		return checkFailed("the host end %s of the veth pair is missing", hostName)
	}
	if cLink.Attrs().ParentIndex != hLink.Attrs().Index {
		return checkFailed("interface %q is not paired with %s", args.IfName, hostName)
	}
	brLink, err := host.Handle().LinkByName(c.Bridge)
	if err != nil || brLink.Type() != "bridge" {
		return checkFailed("bridge %s is missing", c.Bridge)
	}
	if hLink.Attrs().MasterIndex != brLink.Attrs().Index {
		return checkFailed("%s is not a port of bridge %s", hostName, c.Bridge)
	}

	// Addresses, on the interface and in the stores.
	have, err := cns.Addresses(ctx, args.IfName)
	if err != nil {
		return internal("list the container's addresses", err)
	}
	var want []netip.Prefix
	var v4gw, v6gw netip.Addr
	for _, ipc := range res.IPs {
		if ipc.Interface == nil || *ipc.Interface != cIdx {
			continue
		}
		p, ok := prefixOf(ipc.Address)
		if !ok {
			return checkFailed("prevResult address %v is invalid", ipc.Address)
		}
		if !slices.Contains(have, p) {
			return checkFailed("address %s is missing on %q", p, args.IfName)
		}
		want = append(want, p)
		if gw, ok := netip.AddrFromSlice(ipc.Gateway); ok {
			gw = gw.Unmap()
			if gw.Is4() && !v4gw.IsValid() {
				v4gw = gw
			}
			if gw.Is6() && !v6gw.IsValid() {
				v6gw = gw
			}
		}
	}
	if err := checkReservations(c, ownerKey(args.ContainerID, args.IfName), want); err != nil {
		return err
	}
	if c.IsGateway {
		for _, p := range want {
			key := "net.ipv4.ip_forward"
			if p.Addr().Is6() {
				key = "net.ipv6.conf.all.forwarding"
			}
			if v, err := host.Sysctl(key); err != nil || v != "1" {
				return checkFailed("forwarding is off in the host namespace (%s=%s)", key, v)
			}
		}
		brAddrs, err := host.Addresses(ctx, c.Bridge)
		if err != nil {
			return internal("list the bridge's addresses", err)
		}
		for _, p := range want {
			for _, r := range c.rangesOf(p.Addr()) {
				if gw := netip.PrefixFrom(r.Gateway, r.Subnet.Bits()); !slices.Contains(brAddrs, gw) {
					return checkFailed("gateway address %s is missing on bridge %s", gw, c.Bridge)
				}
			}
		}
	}

	// Routes.
	tables := map[int][]podnet.Route{}
	for _, tr := range res.Routes {
		dst, ok := prefixOf(tr.Dst)
		if !ok {
			return checkFailed("prevResult route %v is invalid", tr)
		}
		r := Route{Dst: dst, Priority: tr.Priority}
		if gw, ok := netip.AddrFromSlice(tr.GW); ok {
			r.GW = gw.Unmap()
		}
		if tr.Table != nil {
			r.Table = *tr.Table
		}
		kr := c.kernelRoute(r, args.IfName, v4gw, v6gw)
		routes, ok := tables[kr.Table]
		if !ok {
			if routes, err = cns.Routes(ctx, kr.Table); err != nil {
				return internal("list the container's routes", err)
			}
			tables[kr.Table] = routes
		}
		if !slices.ContainsFunc(routes, func(have podnet.Route) bool { return sameRoute(have, kr) }) {
			return checkFailed("route %v is missing in %s", kr, args.Netns)
		}
	}

	if c.IPMasq {
		return checkMasquerade(ctx, host, c)
	}
	return nil
}

// checkReservations compares the addresses the stores hold for owner with
// those of prevResult.
func checkReservations(c *NetConf, owner string, want []netip.Prefix) error {
	ps, err := openExistingPools(c)
	if err != nil {
		return err
	}
	defer ps.close()
	var held []netip.Addr
	ps.each(c, func(_ Range, p *ipam.Pool) { held = append(held, p.Lookup(owner)...) })
	for _, p := range want {
		if len(c.rangesOf(p.Addr())) > 0 && !slices.Contains(held, p.Addr()) {
			return checkFailed("address %s is not reserved for %s", p.Addr(), owner)
		}
	}
	for _, a := range held {
		if !slices.ContainsFunc(want, func(p netip.Prefix) bool { return p.Addr() == a }) {
			return checkFailed("address %s is reserved for %s but not in prevResult", a, owner)
		}
	}
	return nil
}

// rangesOf returns the configured ranges that contain a.
func (c *NetConf) rangesOf(a netip.Addr) []Range {
	var out []Range
	for _, set := range c.RangeSets {
		for _, r := range set {
			if r.Subnet.Contains(a) && !a.Less(r.Start) && !r.End.Less(a) {
				out = append(out, r)
			}
		}
	}
	return out
}

// sameRoute reports whether the kernel's route have is the route want.
// Podnet lists default routes with a zero destination; a zero metric in
// want matches any (the kernel picks IPv6's).
func sameRoute(have, want podnet.Route) bool {
	if want.Dst.IsValid() && want.Dst.Bits() == 0 {
		want.Dst = netip.Prefix{}
	}
	return have.Dst == want.Dst && have.Gateway == want.Gateway && have.Dev == want.Dev &&
		(want.Metric == 0 || have.Metric == want.Metric)
}

func prefixOf(n net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	if bits == 0 {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a.Unmap(), ones), true
}
